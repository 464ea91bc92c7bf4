package edge

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestShardedRequestMetrics: requests counted on many cores at once add up
// exactly in one scrape, routes and codes outside the fixed lists included,
// and the latency histogram counts every request.
func TestShardedRequestMetrics(t *testing.T) {
	r := newRequestMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(r)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				r.observe("check", 200, time.Duration(i)*time.Microsecond)
				if g == 0 {
					r.observe("check", 418, time.Millisecond)
					r.observe("made_up", 200, time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			key := mf.GetName()
			for _, lp := range m.Label {
				key += "," + lp.GetName() + "=" + lp.GetValue()
			}
			switch {
			case m.Counter != nil:
				got[key] = m.Counter.GetValue()
			case m.Histogram != nil:
				got[key+",count"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	for k, want := range map[string]float64{
		"capstan_edge_requests_total,code=200,route=check":   8000,
		"capstan_edge_requests_total,code=418,route=check":   1000,
		"capstan_edge_requests_total,code=200,route=made_up": 1000,
		"capstan_edge_request_seconds,route=check,count":     9000,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], want, got)
		}
	}
	if n := testing.AllocsPerRun(1000, func() { r.observe("patch", 206, time.Millisecond) }); n != 0 {
		t.Errorf("%.1f allocations per request", n)
	}
}
