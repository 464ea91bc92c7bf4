package origin

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/bundle"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

func signedUpload(t *testing.T, app, version string, key ed25519.PrivateKey) (*UploadRequest, []byte) {
	t.Helper()
	z := testZip(t, map[string]string{"index.html": version})
	req := &UploadRequest{App: app, Version: version, RolloutBPS: release.FullRollout}
	if key != nil {
		entries, err := bundle.Read(bytes.NewReader(z), int64(len(z)), bundle.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		m, err := bundle.Manifest(context.Background(), entries, app, version, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := m.EncodeDoc()
		if err != nil {
			t.Fatal(err)
		}
		req.Envelope = release.Seal(b, key)
	}
	return req, z
}

func TestUploadSigningPolicy(t *testing.T) {
	s, logs := newTestServer(t, nil)
	ci, _ := release.GenerateKey()
	other, _ := release.GenerateKey()
	pem, _ := release.EncodePublicKey(ci.Public().(ed25519.PublicKey), release.RoleRelease)
	yes := true
	if _, err := s.SetApp("app", wire.AppSettings{RequireSigning: &yes}); err == nil {
		t.Fatal("signing required with no key registered")
	}
	if _, err := s.SetApp("app", wire.AppSettings{AddReleaseKeys: []string{string(pem)}, RequireSigning: &yes}); err != nil {
		t.Fatal(err)
	}
	forged := func() *release.Envelope {
		req, _ := signedUpload(t, "app", "1.0.3", ci)
		req.Envelope.Signatures[0].Sig = ed25519.Sign(other, req.Envelope.Signed)
		return req.Envelope
	}
	for _, tc := range []struct {
		name    string
		version string
		key     ed25519.PrivateKey
		env     func() *release.Envelope
		wantErr bool
	}{
		{"unsigned", "1.0.0", nil, nil, true},
		{"signed by an unregistered key", "1.0.1", other, nil, true},
		{"signed by the registered key", "1.0.2", ci, nil, false},
		{"forged signature under the registered key id", "1.0.3", nil, forged, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, z := signedUpload(t, "app", tc.version, tc.key)
			if tc.env != nil {
				req.Envelope = tc.env()
			}
			_, err := s.Upload(context.Background(), req, bytes.NewReader(z))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, errForbidden) {
				t.Fatalf("err = %v, want forbidden", err)
			}
		})
	}
	if !bytes.Contains([]byte(logs.String()), []byte("upload refused")) {
		t.Fatal("refused uploads were not logged")
	}
	// Without RequireSigning, unsigned uploads pass but a wrong signature
	// is still refused.
	no := false
	if _, err := s.SetApp("app", wire.AppSettings{RequireSigning: &no}); err != nil {
		t.Fatal(err)
	}
	req, z := signedUpload(t, "app", "1.1.0", nil)
	if _, err := s.Upload(context.Background(), req, bytes.NewReader(z)); err != nil {
		t.Fatal(err)
	}
	req, z = signedUpload(t, "app", "1.1.1", other)
	if _, err := s.Upload(context.Background(), req, bytes.NewReader(z)); !errors.Is(err, errForbidden) {
		t.Fatalf("wrongly signed upload: %v", err)
	}
}

func TestReleaseKeyRotationAtOrigin(t *testing.T) {
	s, _ := newTestServer(t, nil)
	old, _ := release.GenerateKey()
	next, _ := release.GenerateKey()
	pem, _ := release.EncodePublicKey(old.Public().(ed25519.PublicKey), release.RoleRelease)
	yes := true
	if _, err := s.SetApp("app", wire.AppSettings{AddReleaseKeys: []string{string(pem)}, RequireSigning: &yes}); err != nil {
		t.Fatal(err)
	}
	// A statement signed by a key the app does not trust is refused.
	stranger, _ := release.GenerateKey()
	bad, _ := release.NewRotation(release.RoleRelease, "app", stranger, next.Public().(ed25519.PublicKey), time.Now())
	if _, err := s.AddReleaseRotation(bad); err == nil {
		t.Fatal("rotation signed by an unknown key accepted")
	}
	env, _ := release.NewRotation(release.RoleRelease, "app", old, next.Public().(ed25519.PublicKey), time.Now())
	if _, err := s.AddReleaseRotation(env); err != nil {
		t.Fatal(err)
	}
	req, z := signedUpload(t, "app", "1.0.0", old)
	if _, err := s.Upload(context.Background(), req, bytes.NewReader(z)); err == nil {
		t.Fatal("upload signed by the retired key accepted")
	}
	req, z = signedUpload(t, "app", "1.0.1", next)
	if _, err := s.Upload(context.Background(), req, bytes.NewReader(z)); err != nil {
		t.Fatal(err)
	}
	rots, _ := s.Rotations()
	if len(rots) != 1 {
		t.Fatalf("%d rotations stored", len(rots))
	}
}

// TestResignPublishesFreshSignedRecord drives the re-signing with an injected clock: a
// record is re-signed once half its lifetime has passed, with a larger Seq
// and a later expiry, and not before.
func TestResignPublishesFreshSignedRecord(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var published []*release.Envelope
	var pmu sync.Mutex
	cfg := DefaultConfig(t.TempDir())
	cfg.AdminKey = trustAdminKey
	cfg.Now = clock
	cfg.ChannelTTL = 24 * time.Hour
	cfg.Publisher = PublisherFunc(func(env *release.Envelope) error {
		pmu.Lock()
		published = append(published, env)
		pmu.Unlock()
		return nil
	})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustUpload(t, s, "app", "1.0.0")
	_, first, err := s.st.channel("app", "production")
	if err != nil {
		t.Fatal(err)
	}
	advance(11 * time.Hour)
	s.resignDue()
	_, c, _ := s.st.channel("app", "production")
	if c.Seq != first.Seq {
		t.Fatal("re-signed before half the lifetime passed")
	}
	advance(2 * time.Hour)
	s.resignDue()
	env, c, _ := s.st.channel("app", "production")
	if c.Seq <= first.Seq || !c.Expires.After(first.Expires) || c.Release != first.Release {
		t.Fatalf("after re-sign: seq %d→%d, expires %s→%s", first.Seq, c.Seq, first.Expires, c.Expires)
	}
	if err := env.Verify([]ed25519.PublicKey{s.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	pmu.Lock()
	n := len(published)
	pmu.Unlock()
	if n != 2 {
		t.Fatalf("%d records published, want 2 (upload and re-sign)", n)
	}
}

func TestOriginKeyRotation(t *testing.T) {
	s, _ := newTestServer(t, nil)
	mustUpload(t, s, "app", "1.0.0")
	old := s.PublicKey()
	env, err := s.RotateKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.PublicKey().Equal(old) {
		t.Fatal("key unchanged")
	}
	trusted := []release.PublicKey{{Key: old, Role: release.RoleOrigin}}
	next, _, applied, err := release.ApplyRotation(trusted, env)
	if err != nil || !applied {
		t.Fatalf("device cannot follow: %v", err)
	}
	cenv, _, _ := s.st.channel("app", "production")
	if err := cenv.Verify(release.KeysFor(next, release.RoleOrigin)); err != nil {
		t.Fatalf("channel record not re-signed with the new key: %v", err)
	}
	// The key survives a restart.
	dir := s.cfg.DataDir
	s.Close()
	cfg := DefaultConfig(dir)
	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if !s2.PublicKey().Equal(release.KeysFor(next, release.RoleOrigin)[0]) {
		t.Fatal("restart lost the rotated key")
	}
}

// A CI pipeline pinned to a CLI from before format 2 signs the full
// manifest; the upload is still accepted, its release is served as it was
// signed, and patches to and from it build like any other.
func TestUploadAcceptsFormat1SignedManifest(t *testing.T) {
	s, _ := newTestServer(t, nil)
	ci, _ := release.GenerateKey()
	old := mustUpload(t, s, "app", "1.0.0")
	z := testZip(t, map[string]string{"index.html": "legacy", "a.js": "console.log(1)"})
	entries, err := bundle.Read(bytes.NewReader(z), int64(len(z)), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.Manifest(context.Background(), entries, "app", "1.1.0", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	req := &UploadRequest{App: "app", Version: "1.1.0", Channel: "production", RolloutBPS: release.FullRollout, Envelope: release.Seal(b, ci)}
	rec, err := s.Upload(context.Background(), req, bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	if _, full, err := rec.Envelope.Release(); err != nil || full == nil {
		t.Fatalf("the stored release is not the format 1 manifest CI signed: %v", err)
	}
	if rec.ID != release.Sum(b) {
		t.Fatal("the release ID is not the hash of what CI signed")
	}
	for _, pair := range [][2]release.Hash{{old.ID, rec.ID}, {release.ZeroHash, rec.ID}} {
		if _, err := s.patch(context.Background(), pair[0], pair[1], codecsAll); err != nil {
			t.Fatalf("patch %s → %s: %v", pair[0], pair[1], err)
		}
	}
}

// TestRegisteredKeyRequiresSignature: an app that registered a release key
// (without --require-signing) refused no unsigned upload, which reached the
// channel and failed on every device ("not signed by a trusted key").
// Registering a key now requires signatures; an admin may allow unsigned
// uploads explicitly, and registering another key requires them again.
func TestRegisteredKeyRequiresSignature(t *testing.T) {
	s, _ := newTestServer(t, nil)
	ci, _ := release.GenerateKey()
	pem, _ := release.EncodePublicKey(ci.Public().(ed25519.PublicKey), release.RoleRelease)
	if _, err := s.SetApp("app", wire.AppSettings{AddReleaseKeys: []string{string(pem)}}); err != nil {
		t.Fatal(err)
	}
	upload := func(version string, key ed25519.PrivateKey) error {
		req, z := signedUpload(t, "app", version, key)
		req.Channel = "production"
		_, err := s.Upload(context.Background(), req, bytes.NewReader(z))
		return err
	}
	err := upload("1.0.0", nil)
	if !errors.Is(err, errForbidden) || !strings.Contains(err.Error(), release.KeyID(ci.Public().(ed25519.PublicKey))) || !strings.Contains(err.Error(), "--sign-key") {
		t.Fatalf("unsigned upload to an app with a release key: %v, want a refusal naming the key and --sign-key", err)
	}
	if _, _, err := s.st.channel("app", "production"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused upload reached the channel: %v", err)
	}
	if err := upload("1.0.1", ci); err != nil {
		t.Fatalf("signed upload: %v", err)
	}
	no := false
	a, err := s.SetApp("app", wire.AppSettings{RequireSigning: &no})
	if err != nil || a.SigningRequired() {
		t.Fatalf("--no-require-signing: %v, required %v", err, a.SigningRequired())
	}
	if err := upload("1.0.2", nil); err != nil {
		t.Fatalf("unsigned upload allowed explicitly: %v", err)
	}
	other, _ := release.GenerateKey()
	pem2, _ := release.EncodePublicKey(other.Public().(ed25519.PublicKey), release.RoleRelease)
	if _, err := s.SetApp("app", wire.AppSettings{AddReleaseKeys: []string{string(pem2)}}); err != nil {
		t.Fatal(err)
	}
	if err := upload("1.0.3", nil); !errors.Is(err, errForbidden) {
		t.Fatalf("unsigned upload after registering another key: %v", err)
	}
}

// TestUnsignedUploadWarns: an unsigned upload that is accepted says, in
// the upload's warnings, that devices which verify will refuse it.
func TestUnsignedUploadWarns(t *testing.T) {
	_, ts := newTestOrigin(t)
	z := testZip(t, map[string]string{"index.html": "x"})
	req, _ := http.NewRequest("POST", ts.URL+"/v1/apps/com.x/releases?version=1.0.0", bytes.NewReader(z))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out wire.UploadAnswer
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %d %v", resp.StatusCode, err)
	}
	if len(out.Warnings) != 1 || !strings.Contains(out.Warnings[0], "not signed") {
		t.Fatalf("warnings %q, want one saying the release is not signed", out.Warnings)
	}
}
