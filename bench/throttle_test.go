package bench

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/release"
	"github.com/valyala/fasthttp"
)

// TestThrottledEventsAreNotErrors: an edge's per-address event limit
// (every simulated device shares one address) answers 429. The run had no
// failure, so the report must not draw those as errors (issue 17): they
// are counted apart, and said to be throttling.
func TestThrottledEventsAreNotErrors(t *testing.T) {
	var n int
	edge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		if n%2 == 0 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"error":"too many event requests from this address; retry later"}`, http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{"status":"ok","accepted":2,"dropped":0}`))
	}))
	defer edge.Close()
	start := time.Now()
	b := &Bench{cfg: Config{Edges: []string{edge.URL}, App: "com.x", Channel: "production", Events: true, Timeout: 5 * time.Second},
		http: &fasthttp.Client{}, rec: NewRecorder(start, time.Second)}
	d := &simDevice{id: "d1", order: []int{0}}
	to := &relInfo{ref: release.Ref{Version: "1.0.0", ID: release.Sum([]byte("r"))}}
	for range 10 {
		b.report(context.Background(), d, to, 100, nil)
	}
	snap := b.rec.Snapshot(time.Since(start))
	if len(snap.Errors) != 0 || snap.Throttled["event"] != 5 || snap.Ops["event"].Count != 5 {
		t.Fatalf("errors %v, throttled %v, events %d; want no error, 5 throttled, 5 recorded", snap.Errors, snap.Throttled, snap.Ops["event"].Count)
	}
	var errs, throttled int64
	for _, p := range snap.Timeline {
		errs, throttled = errs+p.Errors, throttled+p.Throttled
	}
	if errs != 0 || throttled != 5 {
		t.Fatalf("timeline: %d errors, %d throttled", errs, throttled)
	}
	res := &Result{Ops: snap.Ops, Errors: snap.Errors, Throttled: snap.Throttled, Timeline: snap.Timeline, Elapsed: 1}
	var text, page bytes.Buffer
	if err := res.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text.String(), "errors:") || !strings.Contains(text.String(), "throttled, not errors") {
		t.Fatalf("text report:\n%s", text.String())
	}
	if err := res.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "throttled (429, not errors)") {
		t.Fatal("the HTML report does not draw throttling apart from errors")
	}
}
