package edge

import (
	"crypto/ed25519"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/release"
)

func signedRecord(t *testing.T, key ed25519.PrivateKey, seq uint64) *release.Envelope {
	t.Helper()
	now := time.Now()
	c := &release.Channel{Type: release.TypeChannel, App: "app", Channel: "production", Seq: seq, RolloutBPS: release.FullRollout, Issued: now, Expires: now.Add(time.Hour)}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return release.Seal(b, key)
}

// TestEdgeChecksOriginSignatures: an edge given the origin key stores only
// records that key signed, so a rogue gossip member cannot wedge a channel
// with a huge Seq; after the origin rotates its key, the edge follows the
// statement and takes the new key's records.
func TestEdgeChecksOriginSignatures(t *testing.T) {
	old, _ := release.GenerateKey()
	next, _ := release.GenerateKey()
	rogue, _ := release.GenerateKey()
	var mu sync.Mutex
	var rots []*release.Envelope
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/keys/rotations" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"rotations": rots})
	}))
	defer origin.Close()
	clk := &testClock{now: time.Now()}
	cfg := DefaultConfig(filepath.Join(t.TempDir(), "edge"))
	cfg.OriginKeys = []release.PublicKey{{Key: old.Public().(ed25519.PublicKey), Role: release.RoleOrigin}}
	cfg.Origins = func() []string { return []string{origin.URL} }
	cfg.Now = clk.Now
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(t.Context())
	if !e.Apply(signedRecord(t, old, 10)) {
		t.Fatal("record signed by the origin key refused")
	}
	if e.Apply(signedRecord(t, rogue, math.MaxUint64)) {
		t.Fatal("forged record with a huge Seq stored")
	}
	unsigned := signedRecord(t, old, 11)
	unsigned.Signatures = nil
	if e.Apply(unsigned) {
		t.Fatal("unsigned record stored")
	}
	stmt, _ := release.NewRotation(release.RoleOrigin, "", old, next.Public().(ed25519.PublicKey), time.Now())
	mu.Lock()
	rots = []*release.Envelope{stmt}
	mu.Unlock()
	clk.Advance(time.Minute)
	if !e.Apply(signedRecord(t, next, 12)) {
		t.Fatal("record signed by the rotated key refused")
	}
	if e.Apply(signedRecord(t, old, 13)) {
		t.Fatal("the retired key still signs records the edge takes")
	}
}
