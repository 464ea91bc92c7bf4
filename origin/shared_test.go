package origin

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/capstan-ota/capstan/origin/store/badgerstore"
	"github.com/capstan-ota/capstan/origin/store/fileblobs"
	"github.com/capstan-ota/capstan/release"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// sharedPair is two origins in one process on one records store, one blob
// store and one key: the shape of several origins on PostgreSQL and S3,
// with the embedded implementations (the real servers are exercised by
// cmd/capstan's TestShared* and the store packages' tests).
func sharedPair(t *testing.T) (*Server, *Server) {
	t.Helper()
	dir := t.TempDir()
	recs, err := badgerstore.Open(filepath.Join(dir, "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recs.Close() })
	blobs, err := fileblobs.New(filepath.Join(dir, "blobs"), filepath.Join(dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := release.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var out [2]*Server
	for i := range out {
		cfg := DefaultConfig(filepath.Join(dir, "node", string(rune('a'+i))))
		cfg.Records, cfg.Blobs, cfg.SigningKey, cfg.AdminKey = recs, blobs, key, "admin-key"
		cfg.PrecomputeBases = -1
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out[i] = s
	}
	return out[0], out[1]
}

// TestSharedBuildOnce asks two origins on one store for the same patch at
// the same moment, many times over: it is built once, under a lease.
func TestSharedBuildOnce(t *testing.T) {
	a, b := sharedPair(t)
	ctx := context.Background()
	var ids []release.Hash
	for i, body := range [][]byte{bytes.Repeat([]byte("one two three "), 4000), bytes.Repeat([]byte("one two four "), 4000)} {
		rec, err := a.Upload(ctx, &UploadRequest{App: "com.example.lease", Version: "1.0." + string(rune('0'+i)), RolloutBPS: release.FullRollout},
			bytes.NewReader(makeZip(t, zipEntry{name: "main.js", body: body})))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	var wg sync.WaitGroup
	got := make([]release.Hash, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := []*Server{a, b}[i%2]
			h, err := s.patch(ctx, ids[0], ids[1], codecsAll)
			if err != nil {
				t.Error(err)
			}
			got[i] = h
		}()
	}
	wg.Wait()
	for _, h := range got {
		if h != got[0] {
			t.Fatalf("origins returned different patches: %v", got)
		}
	}
	built := counter(a.m.patches.WithLabelValues("built")) + counter(b.m.patches.WithLabelValues("built"))
	if built != 1 {
		t.Fatalf("patch built %v times by two origins sharing a store, want once", built)
	}
}

// TestSharedUploadReplay retries an upload on the other origin with the
// same idempotency key (its first answer lost): the stored release comes
// back; another upload of that version gets a conflict.
func TestSharedUploadReplay(t *testing.T) {
	a, b := sharedPair(t)
	ctx := context.Background()
	zip1 := makeZip(t, zipEntry{name: "index.html", body: []byte("<html>1")})
	req := func(key string) *UploadRequest {
		return &UploadRequest{App: "com.example.replay", Version: "2.0.0", Channel: "production", RolloutBPS: release.FullRollout, UploadKey: key}
	}
	rec, err := a.Upload(ctx, req("ci-run-1"), bytes.NewReader(zip1))
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.Upload(ctx, req("ci-run-1"), bytes.NewReader(zip1))
	if err != nil || again.ID != rec.ID {
		t.Fatalf("retry with the same key on the other origin: %v, %v; want the stored release %s", again, err, rec.ID)
	}
	if _, err := b.Upload(ctx, req("ci-run-2"), bytes.NewReader(zip1)); !errors.Is(err, ErrConflict) {
		t.Fatalf("another upload of the version: %v, want a conflict", err)
	}
	if _, err := a.Upload(ctx, req(""), bytes.NewReader(zip1)); !errors.Is(err, ErrConflict) {
		t.Fatalf("an upload without a key: %v, want a conflict", err)
	}
	// One channel record, not two: the replay changed nothing.
	hist, err := b.st.history("com.example.replay", "production")
	if err != nil || len(hist) != 1 {
		t.Fatalf("channel history after a replay: %d records, %v; want 1", len(hist), err)
	}
}

func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// TestSharedAuditTrail makes writes through two origins of one store and
// reads one trail from either: who, what, where, in order.
func TestSharedAuditTrail(t *testing.T) {
	a, b := sharedPair(t)
	ta, tb := httptest.NewServer(a.Handler()), httptest.NewServer(b.Handler())
	defer ta.Close()
	defer tb.Close()
	zipBody := makeZip(t, zipEntry{name: "index.html", body: []byte("<html>")})
	if code, msg := upload(t, ta, "admin-key", "com.example.audit", "1.0.0", zipBody); code != 201 {
		t.Fatalf("upload through a: %d %s", code, msg)
	}
	if code, msg := upload(t, tb, "admin-key", "com.example.audit", "1.0.1", zipBody); code != 201 {
		t.Fatalf("upload through b: %d %s", code, msg)
	}
	req, _ := http.NewRequest("GET", ta.URL+"/v1/audit?limit=10", nil)
	req.Header.Set("Authorization", "Bearer admin-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Entries []AuditEntry `json:"entries"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if len(out.Entries) != 2 || out.Entries[0].Origin != a.node || out.Entries[1].Origin != b.node ||
		out.Entries[0].Key != "admin" || !strings.HasSuffix(out.Entries[1].Path, "/releases") || out.Entries[1].Method != "POST" {
		t.Fatalf("audit trail = %+v; want the two uploads, through a then b, by key admin", out.Entries)
	}
	if got, _ := a.Audit(1); len(got) != 1 || got[0].Origin != b.node {
		t.Fatalf("Audit(1) = %+v, want the newest entry only", got)
	}
}

// TestSharedKeyRotation restarts the origins of a shared store with a new
// key and the key it replaces: the statement the old key signs is stored
// once, whichever origin comes first, and every channel record is signed
// by the new key afterwards.
func TestSharedKeyRotation(t *testing.T) {
	dir := t.TempDir()
	recs, err := badgerstore.Open(filepath.Join(dir, "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer recs.Close()
	blobs, _ := fileblobs.New(filepath.Join(dir, "blobs"), filepath.Join(dir, "tmp"))
	oldKey, _ := release.GenerateKey()
	newKey, _ := release.GenerateKey()
	start := func(name string, key, prev ed25519.PrivateKey) *Server {
		cfg := DefaultConfig(filepath.Join(dir, name))
		cfg.Records, cfg.Blobs, cfg.SigningKey, cfg.PreviousSigningKey = recs, blobs, key, prev
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := start("a", oldKey, nil)
	if _, err := a.Upload(context.Background(), &UploadRequest{App: "com.example.rot", Version: "1.0.0", Channel: "production", RolloutBPS: release.FullRollout},
		bytes.NewReader(makeZip(t, zipEntry{name: "index.html", body: []byte("<html>")}))); err != nil {
		t.Fatal(err)
	}
	a.Close()
	b := start("b", newKey, oldKey)
	defer b.Close()
	c := start("c", newKey, oldKey)
	defer c.Close()
	rots, err := c.Rotations()
	if err != nil || len(rots) != 1 {
		t.Fatalf("rotation statements after two origins adopted the key: %d, %v; want 1", len(rots), err)
	}
	oldPub := oldKey.Public().(ed25519.PublicKey)
	trusted, _, applied, err := release.ApplyRotation([]release.PublicKey{{Key: oldPub, Role: release.RoleOrigin}}, rots[0])
	if err != nil || !applied {
		t.Fatalf("a device trusting the old key cannot follow the statement: %v", err)
	}
	envs, err := c.Records()
	if err != nil || len(envs) != 1 {
		t.Fatalf("records: %d, %v", len(envs), err)
	}
	if err := envs[0].Verify(release.KeysFor(trusted, release.RoleOrigin)); err != nil || envs[0].Signatures[0].KeyID != release.KeyID(newKey.Public().(ed25519.PublicKey)) {
		t.Fatalf("the channel record is not signed by the new key: %v", err)
	}
	if _, err := c.RotateKey(context.Background()); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("RotateKey on an origin given its key: %v, want a refusal that explains the shared rotation", err)
	}
}
