package bench

import (
	"math"
	"sort"
	"sync"
	"time"

	// hdrhistogram-go is the Go port of Gil Tene's HdrHistogram, the format
	// wrk2, Gatling and most latency tools use: fixed memory for any number
	// of samples, a bounded relative error (0.1 % with 3 significant digits)
	// at every magnitude from microseconds to a minute, and exact merging
	// of per-interval histograms. Sorting raw samples would cost memory
	// proportional to the run; fixed buckets would blur the tail.
	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds, in microseconds: 1 µs to 5 minutes with 3 significant
// digits (0.1 % relative error) for the run totals, 2 digits for the
// per-second windows of the timeline, which only feed a chart.
const (
	histMin         = 1
	histMax         = int64(5 * time.Minute / time.Microsecond)
	histDigits      = 3
	histDigitsTimed = 2
)

func newHist(digits int) *hdrhistogram.Histogram {
	return hdrhistogram.New(histMin, histMax, digits)
}

// recordInto records d in h, clamping to the trackable range so an outlier
// is never dropped silently (a dropped sample would hide the tail).
func recordInto(h *hdrhistogram.Histogram, d time.Duration) {
	us := d.Microseconds()
	if us < histMin {
		us = histMin
	}
	if us > histMax {
		us = histMax
	}
	_ = h.RecordValue(us)
}

// Recorder collects latencies per operation, per edge and per one-second
// window of the run. It is safe for concurrent use.
type Recorder struct {
	start  time.Time
	window time.Duration

	mu      sync.Mutex // guards the fields below
	ops     map[string]*opStats
	edges   map[string]map[string]*opStats
	windows []*window
	errs    map[string]int64
	// throttled counts 429 answers by op: the edge limiting this machine's
	// one address, not a failure of the system under test.
	throttled map[string]int64
}

type opStats struct {
	h      *hdrhistogram.Histogram
	errors int64
	bytes  int64
}

// window is one slice of the timeline.
type window struct {
	ops       map[string]*hdrhistogram.Histogram
	errs      int64
	throttled int64
	bytes     int64
	// updated is the share of devices on the newest release at the end of
	// the window (storm scenario), -1 when unknown.
	updated float64
}

// NewRecorder returns a recorder whose timeline starts at start and has one
// point per window (zero means one second).
func NewRecorder(start time.Time, win time.Duration) *Recorder {
	if win <= 0 {
		win = time.Second
	}
	return &Recorder{
		start:     start,
		window:    win,
		ops:       map[string]*opStats{},
		edges:     map[string]map[string]*opStats{},
		errs:      map[string]int64{},
		throttled: map[string]int64{},
	}
}

func (r *Recorder) windowLocked(at time.Time) *window {
	i := int(at.Sub(r.start) / r.window)
	if i < 0 {
		i = 0
	}
	for len(r.windows) <= i {
		r.windows = append(r.windows, &window{ops: map[string]*hdrhistogram.Histogram{}, updated: -1})
	}
	return r.windows[i]
}

func (r *Recorder) opLocked(edge, op string) (*opStats, *opStats) {
	s, ok := r.ops[op]
	if !ok {
		s = &opStats{h: newHist(histDigits)}
		r.ops[op] = s
	}
	if edge == "" {
		return s, nil
	}
	m, ok := r.edges[edge]
	if !ok {
		m = map[string]*opStats{}
		r.edges[edge] = m
	}
	e, ok := m[op]
	if !ok {
		e = &opStats{h: newHist(histDigits)}
		m[op] = e
	}
	return s, e
}

// Record adds one successful operation op that took d, finished at end,
// was served by edge ("" for none) and moved n bytes.
func (r *Recorder) Record(op, edge string, end time.Time, d time.Duration, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, e := r.opLocked(edge, op)
	recordInto(s.h, d)
	s.bytes += n
	if e != nil {
		recordInto(e.h, d)
		e.bytes += n
	}
	w := r.windowLocked(end)
	h, ok := w.ops[op]
	if !ok {
		h = newHist(histDigitsTimed)
		w.ops[op] = h
	}
	recordInto(h, d)
	w.bytes += n
}

// Error counts one failed operation op at edge ("" for none) with an error
// of the given kind at time at.
func (r *Recorder) Error(op, edge, kind string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, e := r.opLocked(edge, op)
	s.errors++
	if e != nil {
		e.errors++
	}
	r.errs[op+":"+kind]++
	r.windowLocked(at).errs++
}

// Throttle counts one operation op the edge refused with 429 at time at.
// It is kept apart from errors: every simulated device shares this
// machine's address, so an edge's per-address limit (events: 200/s) is a
// property of the benchmark, not a failure to report.
func (r *Recorder) Throttle(op string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.throttled[op]++
	r.windowLocked(at).throttled++
}

// Mark sets the share of updated devices for the window holding at.
func (r *Recorder) Mark(at time.Time, updated float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.windowLocked(at).updated = updated
}

// OpSummary is the latency distribution and counts of one operation.
// Latencies are in milliseconds.
type OpSummary struct {
	Count  int64   `json:"count"`
	Errors int64   `json:"errors"`
	Bytes  int64   `json:"bytes"`
	PerSec float64 `json:"per_s"`
	Mean   float64 `json:"mean_ms"`
	P50    float64 `json:"p50_ms"`
	P90    float64 `json:"p90_ms"`
	P95    float64 `json:"p95_ms"`
	P99    float64 `json:"p99_ms"`
	P999   float64 `json:"p99_9_ms"`
	Max    float64 `json:"max_ms"`
	// Histogram is the distribution in log-spaced buckets, for charts.
	Histogram []Bucket `json:"histogram,omitempty"`
}

// Bucket is one bar of a latency histogram: Count samples at most UpToMS
// and above the previous bucket's bound.
type Bucket struct {
	UpToMS float64 `json:"le_ms"`
	Count  int64   `json:"count"`
}

func ms(us int64) float64 { return float64(us) / 1000 }

// summarize turns a histogram into an OpSummary over elapsed.
func summarize(s *opStats, elapsed time.Duration, buckets bool) OpSummary {
	h := s.h
	out := OpSummary{Count: h.TotalCount(), Errors: s.errors, Bytes: s.bytes}
	if elapsed > 0 {
		out.PerSec = float64(out.Count) / elapsed.Seconds()
	}
	if out.Count == 0 {
		return out
	}
	out.Mean = h.Mean() / 1000
	out.P50 = ms(h.ValueAtQuantile(50))
	out.P90 = ms(h.ValueAtQuantile(90))
	out.P95 = ms(h.ValueAtQuantile(95))
	out.P99 = ms(h.ValueAtQuantile(99))
	out.P999 = ms(h.ValueAtQuantile(99.9))
	out.Max = ms(h.Max())
	if buckets {
		out.Histogram = logBuckets(h)
	}
	return out
}

// logBuckets regroups an HDR histogram into 6 buckets per power of ten:
// fine enough to see modes, coarse enough to draw.
func logBuckets(h *hdrhistogram.Histogram) []Bucket {
	const perDecade = 6
	idx := func(us int64) int {
		if us < 1 {
			us = 1
		}
		return int(math.Ceil(math.Log10(float64(us)) * perDecade))
	}
	counts := map[int]int64{}
	lo, hi := math.MaxInt, math.MinInt
	for _, b := range h.Distribution() {
		if b.Count == 0 {
			continue
		}
		i := idx(b.To)
		counts[i] += b.Count
		lo, hi = min(lo, i), max(hi, i)
	}
	if lo > hi {
		return nil
	}
	out := make([]Bucket, 0, hi-lo+1)
	for i := lo; i <= hi; i++ {
		up := math.Pow(10, float64(i)/perDecade) / 1000
		out = append(out, Bucket{UpToMS: math.Round(up*1000) / 1000, Count: counts[i]})
	}
	return out
}

// Point is one window of the timeline.
type Point struct {
	// T is the end of the window in seconds since the start of the run.
	T      float64               `json:"t_s"`
	Ops    map[string]PointStats `json:"ops"`
	Errors int64                 `json:"errors"`
	// Throttled counts 429 answers (see Recorder.Throttle).
	Throttled int64 `json:"throttled"`
	Bytes     int64 `json:"bytes"`
	// Updated is the share (0–1) of devices on the newest release, or -1
	// when the scenario does not track it.
	Updated float64 `json:"updated"`
}

// PointStats is one operation in one window; latencies in milliseconds.
type PointStats struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// Snapshot is everything a Recorder holds, summarized.
type Snapshot struct {
	Ops     map[string]OpSummary            `json:"ops"`
	PerEdge map[string]map[string]OpSummary `json:"per_edge"`
	Errors  map[string]int64                `json:"errors"`
	// Throttled counts 429 answers by op, apart from Errors.
	Throttled map[string]int64 `json:"throttled"`
	Timeline  []Point          `json:"timeline"`
}

// Snapshot summarizes what was recorded, with rates over elapsed.
func (r *Recorder) Snapshot(elapsed time.Duration) Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := Snapshot{
		Ops:       map[string]OpSummary{},
		PerEdge:   map[string]map[string]OpSummary{},
		Errors:    map[string]int64{},
		Throttled: map[string]int64{},
	}
	for k, v := range r.throttled {
		out.Throttled[k] = v
	}
	for op, s := range r.ops {
		out.Ops[op] = summarize(s, elapsed, true)
	}
	for edge, m := range r.edges {
		em := map[string]OpSummary{}
		for op, s := range m {
			em[op] = summarize(s, elapsed, false)
		}
		out.PerEdge[edge] = em
	}
	for k, v := range r.errs {
		out.Errors[k] = v
	}
	for i, w := range r.windows {
		p := Point{T: (time.Duration(i+1) * r.window).Seconds(), Ops: map[string]PointStats{}, Errors: w.errs, Throttled: w.throttled, Bytes: w.bytes, Updated: w.updated}
		for op, h := range w.ops {
			p.Ops[op] = PointStats{Count: h.TotalCount(), P50: ms(h.ValueAtQuantile(50)), P99: ms(h.ValueAtQuantile(99)), Max: ms(h.Max())}
		}
		out.Timeline = append(out.Timeline, p)
	}
	return out
}

// quick returns the count and p99 of op so far, for the progress line.
func (r *Recorder) quick(op string) (int64, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.ops[op]
	if !ok {
		return 0, 0
	}
	return s.h.TotalCount(), time.Duration(s.h.ValueAtQuantile(99)) * time.Microsecond
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
