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

	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/release"
	"github.com/valyala/fasthttp"
)

func signedRecord(t *testing.T, key ed25519.PrivateKey, seq uint64) *release.Envelope {
	t.Helper()
	return signedRecordAt(t, key, seq, time.Now())
}

func signedRecordAt(t *testing.T, key ed25519.PrivateKey, seq uint64, now time.Time) *release.Envelope {
	t.Helper()
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
	var state []*release.Envelope
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case "/v1/keys/rotations":
			json.NewEncoder(w).Encode(map[string]any{"rotations": rots})
		case "/v1/state":
			json.NewEncoder(w).Encode(map[string]any{"channels": state})
		default:
			http.NotFound(w, r)
		}
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
	running := true
	defer func() {
		if running {
			e.Shutdown(t.Context())
		}
	}()
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
	rotated := signedRecord(t, next, 12)
	mu.Lock()
	rots = []*release.Envelope{stmt}
	state = []*release.Envelope{rotated}
	mu.Unlock()
	clk.Advance(time.Minute)
	// The gossip path never blocks: the unknown key is refused at once, and
	// the edge follows the rotation and pulls the state in the background.
	if e.Apply(rotated) {
		t.Fatal("record under an unknown key stored before the rotation was fetched")
	}
	testutil.Eventually(t, 10*time.Second, "the edge to follow the rotation", func() bool {
		for _, r := range e.Records() {
			if ch, _ := r.Channel(); ch != nil && ch.Seq == 12 {
				return true
			}
		}
		return false
	})
	if e.Apply(signedRecord(t, old, 13)) {
		t.Fatal("the retired key still signs records the edge takes")
	}

	// Restarted with every origin away, the edge still trusts the key it
	// moved on to: the records it holds verify and are served.
	running = false
	if err := e.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	origin.Close()
	e2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Shutdown(t.Context())
	if recs := e2.Records(); len(recs) != 1 || seqOf(t, recs[0]) != 12 {
		t.Fatalf("after a restart the edge holds %d records, want the rotated key's seq 12", len(recs))
	}
	if e2.Apply(signedRecord(t, old, 14)) {
		t.Fatal("after a restart the retired key signs records the edge takes")
	}
}

// TestGossipRecordsMustBeFresh: the edge's gossip hook (VerifyRecord)
// refuses an expired record even when the origin key signed it, so it is
// neither stored nor relayed; a fresh one passes.
func TestGossipRecordsMustBeFresh(t *testing.T) {
	key, _ := release.GenerateKey()
	cfg := DefaultConfig(filepath.Join(t.TempDir(), "edge"))
	cfg.OriginKeys = []release.PublicKey{{Key: key.Public().(ed25519.PublicKey), Role: release.RoleOrigin}}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(t.Context())
	for _, tc := range []struct {
		name   string
		issued time.Time
		ok     bool
	}{
		{"fresh", time.Now(), true},
		{"expired an hour ago", time.Now().Add(-2 * time.Hour), false},
	} {
		env := signedRecordAt(t, key, 5, tc.issued)
		ch, _ := env.Channel()
		if err := e.VerifyRecord(env, ch); (err == nil) != tc.ok {
			t.Errorf("%s: VerifyRecord = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func seqOf(t *testing.T, env *release.Envelope) uint64 {
	t.Helper()
	ch, err := env.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch.Seq
}

// #6 Freeze via gossip: an edge cut off from fresh records marks itself
// unhealthy once a record it holds has expired.
func TestEdgeReportsStaleRecords(t *testing.T) {
	clk := &testClock{now: time.Now()}
	key, _ := release.GenerateKey()
	cfg := DefaultConfig(filepath.Join(t.TempDir(), "edge"))
	cfg.Now = clk.Now
	cfg.OriginKeys = []release.PublicKey{{Key: key.Public().(ed25519.PublicKey), Role: release.RoleOrigin}}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(t.Context())
	e.Apply(signedRecordAt(t, key, 1, clk.Now()))
	e.MarkSynced()
	health := func() (int, string) {
		ctx := &fasthttp.RequestCtx{}
		e.handleHealth(ctx)
		var b struct {
			Status string `json:"status"`
		}
		json.Unmarshal(ctx.Response.Body(), &b)
		return ctx.Response.StatusCode(), b.Status
	}
	if code, st := health(); code != 200 || st != "ok" {
		t.Fatalf("fresh: %d %s", code, st)
	}
	// Issue 16, finding 2: one forged, already expired record for a
	// made-up app with seq = max made every edge report stale for good.
	forger, _ := release.GenerateKey()
	past := clk.Now().Add(-48 * time.Hour)
	c := &release.Channel{Type: release.TypeChannel, App: "made.up", Channel: "x", Seq: math.MaxUint64, RolloutBPS: release.FullRollout, Issued: past, Expires: past.Add(time.Hour)}
	b, _ := c.Encode()
	if e.Apply(release.Seal(b, forger)) {
		t.Fatal("the edge stored a forged record")
	}
	if code, st := health(); code != 200 || st != "ok" {
		t.Fatalf("after a forged expired record: %d %s", code, st)
	}
	clk.Advance(2 * time.Hour) // signedRecord expires after 1 h
	if code, st := health(); code != 503 || st != "stale" {
		t.Fatalf("expired: %d %s", code, st)
	}
	e.Apply(signedRecordAt(t, key, 2, clk.Now()))
	if code, st := health(); code != 200 || st != "ok" {
		t.Fatalf("fresh record again: %d %s", code, st)
	}
}
