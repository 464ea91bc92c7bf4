package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// collect runs s with op and returns the latency of every session measured
// the way sessions do: from the intended start to the end.
func collect(s schedule, work func(i int)) []time.Duration {
	var mu sync.Mutex
	var lat []time.Duration
	i := 0
	s.run(context.Background(), func(ctx context.Context, intended time.Time) {
		mu.Lock()
		n := i
		i++
		mu.Unlock()
		work(n)
		mu.Lock()
		lat = append(lat, time.Since(intended))
		mu.Unlock()
	})
	return lat
}

// TestOpenLoopCountsQueueing: with one session in flight allowed and the
// first session stalled for 100 ms, sessions due during the stall are
// measured from when they were due, so their latency holds the wait.
// synctest's fake clock makes the figures exact.
func TestOpenLoopCountsQueueing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lat := collect(schedule{rate: 100, concurrency: 1, duration: 200 * time.Millisecond}, func(i int) {
			if i == 0 {
				time.Sleep(100 * time.Millisecond)
			}
		})
		if len(lat) != 20 {
			t.Fatalf("%d sessions ran, want 20 (the rate holds however slow the server)", len(lat))
		}
		for k, d := range lat {
			// Session k was due at 10k ms; sessions 1–10 ran at 100 ms.
			want := time.Duration(0)
			switch {
			case k == 0:
				want = 100 * time.Millisecond
			case k <= 10:
				want = 100*time.Millisecond - time.Duration(k)*10*time.Millisecond
			}
			if d != want {
				t.Errorf("session %d latency %v, want %v", k, d, want)
			}
		}
	})
}

// TestClosedLoopHidesQueueing shows the contrast: the closed loop sends
// nothing while the server stalls, so only the stalled session is slow.
func TestClosedLoopHidesQueueing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lat := collect(schedule{concurrency: 1, duration: 195 * time.Millisecond}, func(i int) {
			time.Sleep(10 * time.Millisecond)
			if i == 0 {
				time.Sleep(90 * time.Millisecond)
			}
		})
		if len(lat) != 11 {
			t.Fatalf("%d sessions ran, want 11", len(lat))
		}
		for k, d := range lat[1:] {
			if d != 10*time.Millisecond {
				t.Errorf("session %d latency %v, want 10ms", k+1, d)
			}
		}
	})
}

// TestOpenLoopStalledServer runs the open loop against a real HTTP server
// that holds every request for the first 300 ms: each session due in that
// window is recorded with the time it waited, not just the first. Only
// lower bounds are asserted (a stall cannot make anything faster).
func TestOpenLoopStalledServer(t *testing.T) {
	const stall = 300 * time.Millisecond
	var startOnce sync.Once
	var until time.Time
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		startOnce.Do(func() { until = time.Now().Add(stall) })
		wait := time.Until(until)
		mu.Unlock()
		if wait > 0 {
			time.Sleep(wait)
		}
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	c := newHTTPClient(64, 5*time.Second)
	rec := NewRecorder(time.Now(), time.Second)
	s := schedule{rate: 200, concurrency: 4, duration: 600 * time.Millisecond}
	s.run(context.Background(), func(ctx context.Context, intended time.Time) {
		if _, err := get(context.Background(), c, srv.URL+"/", 5*time.Second, nil); err != nil {
			t.Error(err)
		}
		rec.Record("check", "", time.Now(), time.Since(intended), 0)
	})
	snap := rec.Snapshot(time.Second)
	chk := snap.Ops["check"]
	if chk.Count < 100 {
		t.Fatalf("%d sessions, want about 120", chk.Count)
	}
	// About 60 sessions were due during the stall; every one of them
	// waited for at least what was left of it. Half of them waited 150 ms
	// or more, so the median of the stalled part is high and p90 must be.
	if chk.P90 < float64(stall/time.Millisecond)/4 {
		t.Errorf("p90 = %.1f ms: the queueing behind the stalled server is missing", chk.P90)
	}
}
