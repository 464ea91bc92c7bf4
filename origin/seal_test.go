package origin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/gossip"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

func TestEncryptedUploadStoresOnlyCiphertext(t *testing.T) {
	s, _ := newTestServer(t, nil)
	box, _ := release.GenerateBoxKey()
	pem, _ := release.EncodeBoxPublicKey(box.PublicKey())
	p := string(pem)
	if _, err := s.SetApp("app", wire.AppSettings{EncryptKey: &p}); err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("CONFIDENTIAL-", 10000)
	z := testZip(t, map[string]string{"index.html": secret, "empty.txt": ""})
	rec, err := s.Upload(context.Background(), &UploadRequest{App: "app", Version: "1.0.0", Channel: "production", RolloutBPS: release.FullRollout}, bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(s.cfg.DataDir, func(path string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			if b, _ := os.ReadFile(path); bytes.Contains(b, []byte("CONFIDENTIAL-")) {
				t.Errorf("%s holds plaintext", path)
			}
		}
		return nil
	})
	_, ch, err := s.st.channel("app", "production")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Release.Sealed.IsZero() {
		t.Fatalf("channel record names no sealed index: %+v", ch.Release)
	}
	// The app's key opens the release key in the index; the index names
	// ciphertext blobs that decrypt to the manifest's files.
	f, err := s.blobs.open(ch.Release.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	ib, _ := io.ReadAll(f)
	f.Close()
	idx, err := release.DecodeSealedIndex(ib)
	if err != nil {
		t.Fatal(err)
	}
	key, err := release.OpenKey(box, rec.ID, idx.Key)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := s.manifestOf(rec)
	for i, mf := range m.Files {
		cf, err := s.blobs.open(idx.Files[i].Blob)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(release.DecryptReader(key, cf))
		cf.Close()
		if err != nil || release.Sum(plain) != mf.SHA256 {
			t.Fatalf("%s does not decrypt to the manifest's file: %v", mf.Path, err)
		}
	}
	// No patches for an encrypted release.
	if _, err := s.patch(context.Background(), release.Hash{}, rec.ID, codecsAll); !errors.Is(err, ErrNotFound) {
		t.Fatalf("patch of an encrypted release: %v", err)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/v1/patches/"+release.Hash{}.String()+"/"+rec.ID.String(), nil))
	if w.Code != 404 {
		t.Fatalf("GET patch: %d", w.Code)
	}
}

// An encrypted channel record in a rollout (two sealed releases) still
// fits one gossip message.
func TestEncryptedRecordFitsGossip(t *testing.T) {
	s, _ := newTestServer(t, nil)
	box, _ := release.GenerateBoxKey()
	pem, _ := release.EncodeBoxPublicKey(box.PublicKey())
	p := string(pem)
	app := "com.example.encrypted-application"
	if _, err := s.SetApp(app, wire.AppSettings{EncryptKey: &p}); err != nil {
		t.Fatal(err)
	}
	for i, v := range []string{"10.20.30-beta.1", "10.20.31-beta.2"} {
		z := testZip(t, map[string]string{"index.html": v})
		bps := release.FullRollout
		if i == 1 {
			bps = 3000
		}
		if _, err := s.Upload(context.Background(), &UploadRequest{App: app, Version: v, Channel: "production-eu", RolloutBPS: bps}, bytes.NewReader(z)); err != nil {
			t.Fatal(err)
		}
	}
	env, ch, err := s.st.channel(app, "production-eu")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Stable == nil || ch.Stable.Sealed.IsZero() || ch.Release.Sealed.IsZero() {
		t.Fatalf("want two sealed releases: %+v", ch)
	}
	b, _ := json.Marshal(env)
	if 1+len(b) > gossip.MaxRecordBytes {
		t.Fatalf("record message of %d bytes is over gossip's %d", 1+len(b), gossip.MaxRecordBytes)
	}
	t.Logf("encrypted rollout record: %d bytes", 1+len(b))
}
