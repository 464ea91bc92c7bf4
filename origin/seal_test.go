package origin

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/release"
)

func TestEncryptedUploadStoresOnlyCiphertext(t *testing.T) {
	s, _ := newTestServer(t, nil)
	box, _ := release.GenerateBoxKey()
	pem, _ := release.EncodeBoxPublicKey(box.PublicKey())
	p := string(pem)
	if _, err := s.SetApp("app", AppSettings{EncryptKey: &p}); err != nil {
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
	if ch.Release.Key == "" || ch.Release.Sealed.IsZero() {
		t.Fatalf("channel record carries no sealed key: %+v", ch.Release)
	}
	// The app's key opens it; the index names ciphertext blobs that decrypt
	// to the manifest's files.
	sealed, _ := base64.StdEncoding.DecodeString(ch.Release.Key)
	key, err := release.OpenKey(box, rec.ID, sealed)
	if err != nil {
		t.Fatal(err)
	}
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
	m, _ := rec.Envelope.Manifest()
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
	if _, err := s.patch(context.Background(), release.Hash{}, rec.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("patch of an encrypted release: %v", err)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/v1/patches/"+release.Hash{}.String()+"/"+rec.ID.String(), nil))
	if w.Code != 404 {
		t.Fatalf("GET patch: %d", w.Code)
	}
}
