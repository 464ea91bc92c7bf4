package device

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeEdge is an edge that answers /healthz after an added delay and
// /v1/edges with whatever list the test sets.
type fakeEdge struct {
	srv    *httptest.Server
	url    string
	delay  time.Duration
	down   atomic.Bool
	probes atomic.Int64
	fleets atomic.Int64
	list   atomic.Pointer[string]
}

func newFakeEdge(t *testing.T, delay time.Duration) *fakeEdge {
	t.Helper()
	e := &fakeEdge{delay: delay}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.down.Load() {
			// Like a dead process: drop the connection.
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
			return
		}
		// The added delay stands in for distance; it is not an assertion.
		time.Sleep(e.delay)
		switch r.URL.Path {
		case "/healthz":
			e.probes.Add(1)
			w.Write([]byte(`{"status":"ok"}`))
		case "/v1/edges":
			e.fleets.Add(1)
			if l := e.list.Load(); l != nil {
				w.Write([]byte(*l))
				return
			}
			http.NotFound(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	e.url = e.srv.URL
	t.Cleanup(e.srv.Close)
	return e
}

// region is one fleet member for fleetJSON.
type region struct {
	e    *fakeEdge
	name string
}

func fleetJSON(rs ...region) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf(`{"url":%q,"region":%q}`, r.e.url, r.name))
	}
	return `{"edges":[` + strings.Join(parts, ",") + `]}`
}

// threeRegions starts a near, a mid and a far edge that all list the
// three of them.
func threeRegions(t *testing.T) (near, mid, far *fakeEdge) {
	near, mid, far = newFakeEdge(t, 0), newFakeEdge(t, 30*time.Millisecond), newFakeEdge(t, 80*time.Millisecond)
	list := fleetJSON(region{far, "ap"}, region{near, "eu"}, region{mid, "us"})
	for _, e := range []*fakeEdge{near, mid, far} {
		e.list.Store(&list)
	}
	return near, mid, far
}

type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newRankedDevice(t *testing.T, dir string, clock *fakeClock, shipped ...string) *Device {
	t.Helper()
	d, err := New(Config{Dir: dir, Edges: shipped, App: "com.x", Channel: "production", Now: clock.Now,
		Ranking: RankConfig{Seed: 1}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantOrder(t *testing.T, got []string, want ...*fakeEdge) {
	t.Helper()
	var w []string
	for _, e := range want {
		w = append(w, e.url)
	}
	if !slices.Equal(got, w) {
		t.Fatalf("edge order %v, want %v", got, w)
	}
}

func TestRankingPicksNearestAndSurvivesRestart(t *testing.T) {
	near, mid, far := threeRegions(t)
	clock := newFakeClock()
	dir := t.TempDir()
	// The app ships only the far edge.
	d := newRankedDevice(t, dir, clock, far.url)
	wantOrder(t, d.edgeOrder(context.Background()), near, mid, far)
	if far.fleets.Load() != 1 || near.probes.Load() != 3 {
		t.Fatalf("fleet lists %d (want 1 from the shipped edge), near probes %d (want 3)", far.fleets.Load(), near.probes.Load())
	}
	r := d.Ranking()
	if r.Source != far.url || r.Edges[0].Region != "eu" || r.Edges[0].RTTMicros >= r.Edges[1].RTTMicros {
		t.Fatalf("ranking %+v", r)
	}

	// A restart reads the ranking back and sends no request for it.
	probes := func() int64 { return near.probes.Load() + mid.probes.Load() + far.probes.Load() + far.fleets.Load() }
	before := probes()
	d2 := newRankedDevice(t, dir, clock, far.url)
	wantOrder(t, d2.edgeOrder(context.Background()), near, mid, far)
	if n := probes(); n != before {
		t.Fatalf("%d requests for a ranking after a restart", n-before)
	}

	// Ranked again once Every has passed, and when the shipped list changes.
	clock.Advance(11 * time.Minute)
	d3 := newRankedDevice(t, dir, clock, far.url)
	d3.edgeOrder(context.Background())
	// The fleet list now comes from the nearest known edge.
	if near.fleets.Load() != 1 {
		t.Fatalf("not ranked again after Every: %d fleet lists from the near edge", near.fleets.Load())
	}
	d4 := newRankedDevice(t, dir, clock, mid.url, far.url)
	wantOrder(t, d4.edgeOrder(context.Background()), near, mid, far)
	if mid.fleets.Load() != 1 {
		t.Fatal("a new shipped list did not make the device rank again from it")
	}
}

func TestRankingFailoverAndReturn(t *testing.T) {
	near, mid, far := threeRegions(t)
	clock := newFakeClock()
	d := newRankedDevice(t, t.TempDir(), clock, far.url)
	ctx := context.Background()
	order := d.edgeOrder(ctx)
	wantOrder(t, order, near, mid, far)

	// The nearest dies: the check was answered by the second edge.
	near.down.Store(true)
	d.served(order, 1)
	if !d.Ranking().Stale {
		t.Fatal("failover did not mark the ranking stale")
	}
	wantOrder(t, d.edgeOrder(ctx), mid, far)
	r := d.Ranking()
	if len(r.Lost) != 1 || r.Lost[0].URL != near.url {
		t.Fatalf("lost edges %+v, want the near one", r.Lost)
	}
	// Within RetryEvery the ranking stands; after it, the lost edge is
	// timed again, still down.
	fleets := mid.fleets.Load()
	clock.Advance(30 * time.Second)
	wantOrder(t, d.edgeOrder(ctx), mid, far)
	if mid.fleets.Load() != fleets {
		t.Fatal("ranked again before RetryEvery")
	}
	clock.Advance(time.Minute)
	wantOrder(t, d.edgeOrder(ctx), mid, far)
	if mid.fleets.Load() != fleets+1 || len(d.Ranking().Lost) != 1 {
		t.Fatalf("retry ranking: %d fleet lists, lost %+v", mid.fleets.Load()-fleets, d.Ranking().Lost)
	}
	// Back: the next retry returns to it, and the short interval ends.
	near.down.Store(false)
	clock.Advance(time.Minute + time.Second)
	wantOrder(t, d.edgeOrder(ctx), near, mid, far)
	if r := d.Ranking(); len(r.Lost) != 0 || r.Stale {
		t.Fatalf("ranking after return: %+v", r)
	}
	if d.rankDue() {
		t.Fatal("a full ranking is due at once")
	}
}

func TestRankingEdgeCases(t *testing.T) {
	ctx := context.Background()
	t.Run("off", func(t *testing.T) {
		near, _, far := threeRegions(t)
		d, err := New(Config{Dir: t.TempDir(), Edges: []string{far.url, near.url}, App: "com.x", Channel: "production",
			Ranking: RankConfig{Off: true}})
		if err != nil {
			t.Fatal(err)
		}
		wantOrder(t, d.edgeOrder(ctx), far, near)
		if far.fleets.Load()+far.probes.Load()+near.probes.Load() != 0 {
			t.Fatal("ranking off sent requests")
		}
	})
	t.Run("no fleet list: the shipped edges are ranked", func(t *testing.T) {
		near, far := newFakeEdge(t, 0), newFakeEdge(t, 60*time.Millisecond)
		d := newRankedDevice(t, t.TempDir(), newFakeClock(), far.url, near.url)
		wantOrder(t, d.edgeOrder(ctx), near, far)
	})
	t.Run("nothing answers: shipped order", func(t *testing.T) {
		dead := newFakeEdge(t, 0)
		dead.down.Store(true)
		d := newRankedDevice(t, t.TempDir(), newFakeClock(), dead.url, "http://127.0.0.1:1")
		wantOrder(t, d.edgeOrder(ctx), dead, &fakeEdge{url: "http://127.0.0.1:1"})
		if d.Ranking() != nil {
			t.Fatal("a ranking without any answer was kept")
		}
	})
	t.Run("the ranking does not wait for the farthest edge", func(t *testing.T) {
		near, slow := newFakeEdge(t, 0), newFakeEdge(t, 700*time.Millisecond)
		list := fleetJSON(region{near, "eu"}, region{slow, "ap"})
		near.list.Store(&list)
		d := newRankedDevice(t, t.TempDir(), newFakeClock(), near.url)
		wantOrder(t, d.edgeOrder(ctx), near, slow)
		r := d.Ranking()
		if r.Edges[0].Unmeasured || !r.Edges[1].Unmeasured || r.Edges[1].RTTMicros < minSettle.Microseconds() {
			t.Fatalf("ranking %+v: want the slow edge cut off, ranked last with a lower bound", r.Edges)
		}
	})
	t.Run("corrupt ranking file", func(t *testing.T) {
		near, mid, far := threeRegions(t)
		dir := t.TempDir()
		os.MkdirAll(stateDir(dir), 0o755)
		os.WriteFile(rankingPath(dir), []byte(`{"edges":[{"url":`), 0o644)
		d := newRankedDevice(t, dir, newFakeClock(), far.url)
		wantOrder(t, d.edgeOrder(ctx), near, mid, far)
	})
	t.Run("hostile fleet list", func(t *testing.T) {
		near := newFakeEdge(t, 0)
		var parts []string
		parts = append(parts, fmt.Sprintf(`{"url":%q,"region":"home"}`, near.url))
		for _, bad := range []string{"ftp://x", "http://", "javascript:alert(1)", "http://u:p@x", "http://x/?q=1", "http://" + strings.Repeat("a", 300)} {
			parts = append(parts, fmt.Sprintf(`{"url":%q}`, bad))
		}
		parts = append(parts, fmt.Sprintf(`{"url":"http://127.0.0.1:1","region":%q}`, strings.Repeat("r", 100)))
		// Hundreds of unreachable edges in a few regions.
		for i := 0; i < 500; i++ {
			parts = append(parts, fmt.Sprintf(`{"url":"http://127.0.0.1:%d","region":"r%d"}`, 2+i, i%5))
		}
		list := `{"edges":[` + strings.Join(parts, ",") + `]}`
		near.list.Store(&list)
		d, err := New(Config{Dir: t.TempDir(), Edges: []string{near.url}, App: "com.x", Channel: "production",
			Ranking: RankConfig{Seed: 7, Timeout: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		peers, err := d.fetchFleet(ctx, near.url)
		if err != nil {
			t.Fatal(err)
		}
		if len(peers) != maxFleetPeers || peers[0].URL != near.url {
			t.Fatalf("kept %d peers (want %d), first %v", len(peers), maxFleetPeers, peers[0])
		}
		cands := d.candidates(peers, nil, nil, 8)
		seen := map[string]int{}
		for _, c := range cands {
			seen[c.Region]++
		}
		if len(cands) != 8 || len(seen) != 6 || seen["home"] != 1 {
			t.Fatalf("candidates by region %v, want every region before a second of any", seen)
		}
		// A body over the limit is refused.
		huge := `{"edges":[` + strings.Repeat(`{"url":"http://a:1"},`, 5000) + `{"url":"http://a:1"}]}`
		near.list.Store(&huge)
		if _, err := d.fetchFleet(ctx, near.url); err == nil {
			t.Fatal("an oversized fleet list was read")
		}
	})
}

func TestRankingFileIsJSON(t *testing.T) {
	_, _, far := threeRegions(t)
	dir := t.TempDir()
	newRankedDevice(t, dir, newFakeClock(), far.url).edgeOrder(context.Background())
	b, err := os.ReadFile(rankingPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	var r Ranking
	if err := json.Unmarshal(b, &r); err != nil || len(r.Edges) != 3 {
		t.Fatalf("edges.json: %v %s", err, b)
	}
}
