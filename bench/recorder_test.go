package bench

import (
	"errors"
	"fmt"
	"math"
	"syscall"
	"testing"
	"time"
)

func TestRecorderPercentiles(t *testing.T) {
	start := time.Unix(1000, 0)
	r := NewRecorder(start, time.Second)
	// 1 ms … 1000 ms, one sample each: p50 is 500 ms, p99 990 ms.
	for i := 1; i <= 1000; i++ {
		r.Record("check", "http://e1", start.Add(time.Duration(i)*time.Millisecond), time.Duration(i)*time.Millisecond, 10)
	}
	r.Record("check", "http://e2", start.Add(1500*time.Millisecond), 2*time.Second, 10)
	r.Error("check", "http://e2", "refused", start.Add(1600*time.Millisecond))
	snap := r.Snapshot(2 * time.Second)

	s := snap.Ops["check"]
	near := func(name string, got, want float64) {
		t.Helper()
		// HDR with 3 significant digits: within 0.1 %, plus one step.
		if math.Abs(got-want) > want*0.002+0.001 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if s.Count != 1001 || s.Errors != 1 || s.Bytes != 10010 {
		t.Fatalf("count/errors/bytes = %d/%d/%d, want 1001/1/10010", s.Count, s.Errors, s.Bytes)
	}
	near("p50", s.P50, 501)
	near("p90", s.P90, 901)
	near("p95", s.P95, 951)
	near("p99", s.P99, 991)
	near("p99.9", s.P999, 1000)
	near("max", s.Max, 2000)
	near("per_s", s.PerSec, 500.5)

	var inBuckets int64
	for i, b := range s.Histogram {
		inBuckets += b.Count
		if i > 0 && b.UpToMS <= s.Histogram[i-1].UpToMS {
			t.Errorf("bucket bounds not increasing at %d: %v", i, s.Histogram)
		}
	}
	if inBuckets != s.Count {
		t.Errorf("histogram buckets hold %d samples, want %d", inBuckets, s.Count)
	}

	if e1 := snap.PerEdge["http://e1"]["check"]; e1.Count != 1000 || e1.Errors != 0 {
		t.Errorf("edge e1 = %+v", e1)
	}
	if e2 := snap.PerEdge["http://e2"]["check"]; e2.Count != 1 || e2.Errors != 1 {
		t.Errorf("edge e2 = %+v", e2)
	}
	if snap.Errors["check:refused"] != 1 {
		t.Errorf("errors = %v", snap.Errors)
	}
	// Samples at 1…999 ms land in window 0, 1000 ms and 1.5 s in window 1.
	if len(snap.Timeline) != 2 {
		t.Fatalf("timeline has %d points, want 2", len(snap.Timeline))
	}
	if n := snap.Timeline[0].Ops["check"].Count; n != 999 {
		t.Errorf("window 0 holds %d checks, want 999", n)
	}
	if p := snap.Timeline[1]; p.Ops["check"].Count != 2 || p.Errors != 1 || p.T != 2 || p.Updated != -1 {
		t.Errorf("window 1 = %+v", p)
	}
}

func TestRecorderClampsOutliers(t *testing.T) {
	start := time.Now()
	r := NewRecorder(start, 0)
	r.Record("update", "", start, -time.Second, 0)
	r.Record("update", "", start, time.Hour, 0)
	s := r.Snapshot(time.Second).Ops["update"]
	if s.Count != 2 {
		t.Fatalf("count = %d, want 2: an out-of-range sample must not be dropped", s.Count)
	}
	if s.Max < float64(5*time.Minute/time.Millisecond)*0.99 {
		t.Errorf("max = %v ms, want the 5 minute ceiling", s.Max)
	}
}

func TestParseFleet(t *testing.T) {
	tests := []struct {
		name, in string
		want     map[string]float64
		wantErr  bool
	}{
		{"default", "prev=70,older=10,current=20", map[string]float64{"prev": 70, "older": 10, "current": 20}, false},
		{"normalised", "prev=1, current=1", map[string]float64{"prev": 50, "current": 50}, false},
		{"percent sign", "none=25%,current=75%", map[string]float64{"none": 25, "current": 75}, false},
		{"unknown class", "beta=10", nil, true},
		{"no number", "prev=x", nil, true},
		{"negative", "prev=-1,current=2", nil, true},
		{"empty", "", nil, true},
		{"all zero", "prev=0", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFleet(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			m := map[string]float64{}
			for _, s := range got {
				m[s.class] = s.pct
			}
			if fmt.Sprint(m) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", m, tt.want)
			}
		})
	}
}

func TestErrKind(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"status", &statusError{code: 503}, "http_503"},
		{"verify", fmt.Errorf("x: %w", ErrVerify), "verify"},
		{"refused", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), "refused"},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), "reset"},
		{"other", errors.New("boom"), "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errKind(tt.err); got != tt.want {
				t.Errorf("errKind(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestMetricValue(t *testing.T) {
	body := []byte(`# HELP capstan_edge_origin_fetches_total HTTP requests sent to origins.
# TYPE capstan_edge_origin_fetches_total counter
capstan_edge_origin_fetches_total_other 7
capstan_edge_origin_fetches_total 42
`)
	if v := metricValue(body, "capstan_edge_origin_fetches_total"); v != 42 {
		t.Errorf("got %v, want 42", v)
	}
	if v := metricValue(body, "missing"); v != -1 {
		t.Errorf("missing metric = %v, want -1", v)
	}
}
