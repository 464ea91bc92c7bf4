package edge

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// metricShards is the number of copies of each hot counter. Every request
// adds to a random copy (math/rand/v2's per-thread generator, no lock), so
// cores rarely write the same cache line; a scrape sums the copies.
// Prometheus's own counters are one atomic word that every core would
// write on every request, and its vectors hash their labels each time.
const metricShards = 32

// shardedCounter is a Prometheus counter of whole numbers, split into
// metricShards copies padded apart. It implements prometheus.Counter.
type shardedCounter struct {
	desc   *prometheus.Desc
	labels []string // constant label values, matching desc
	shards [metricShards]struct {
		v atomic.Uint64
		_ [56]byte
	}
}

func newShardedCounter(name, help string) *shardedCounter {
	return &shardedCounter{desc: prometheus.NewDesc(name, help, nil, nil)}
}

// Inc adds one.
func (c *shardedCounter) Inc() { c.shards[rand.Uint32()%metricShards].v.Add(1) }

// Add adds v, which must be a whole number (bytes, events).
func (c *shardedCounter) Add(v float64) { c.shards[rand.Uint32()%metricShards].v.Add(uint64(v)) }

func (c *shardedCounter) value() uint64 {
	var n uint64
	for i := range c.shards {
		n += c.shards[i].v.Load()
	}
	return n
}

// Desc implements prometheus.Metric.
func (c *shardedCounter) Desc() *prometheus.Desc { return c.desc }

// Write implements prometheus.Metric.
func (c *shardedCounter) Write(m *dto.Metric) error {
	v := float64(c.value())
	m.Counter = &dto.Counter{Value: &v}
	return nil
}

// Describe implements prometheus.Collector.
func (c *shardedCounter) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *shardedCounter) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(c.value()), c.labels...)
}

// labeledCounters is a counter vector of one label whose values are few
// and looked up once (a Capgo decision keeps its result's counter), each
// a shardedCounter.
type labeledCounters struct {
	desc *prometheus.Desc
	mu   sync.Mutex // guards m
	m    map[string]*shardedCounter
}

func newLabeledCounters(name, help, label string) *labeledCounters {
	return &labeledCounters{desc: prometheus.NewDesc(name, help, []string{label}, nil), m: map[string]*shardedCounter{}}
}

// with returns the counter of a label value.
func (l *labeledCounters) with(value string) *shardedCounter {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.m[value]
	if !ok {
		c = &shardedCounter{desc: l.desc, labels: []string{value}}
		l.m[value] = c
	}
	return c
}

// Describe implements prometheus.Collector.
func (l *labeledCounters) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

// Collect implements prometheus.Collector.
func (l *labeledCounters) Collect(ch chan<- prometheus.Metric) {
	l.mu.Lock()
	cs := make([]*shardedCounter, 0, len(l.m))
	for _, c := range l.m {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	for _, c := range cs {
		c.Collect(ch)
	}
}

// Request routes and status codes counted without a label lookup. A route
// or code outside these lists is counted through a Prometheus vector (an
// unusual request pays for its label).
var (
	metricRoutes = [...]string{"check", "blob", "patch", "release", "edges", "rotations", "events", "healthz", "metrics",
		"unknown", "limited", "preflight", "capgo_updates", "capgo_stats", "capgo_channel", "capgo_br"}
	metricCodes = [...]int{200, 204, 206, 304, 400, 403, 404, 405, 413, 416, 429, 500, 502, 503}
	// latencyBuckets are capstan_edge_request_seconds's upper bounds.
	latencyBuckets = [...]float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1}
)

func routeIndex(route string) int {
	for i, r := range metricRoutes {
		if r == route {
			return i
		}
	}
	return -1
}

func codeIndex(code int) int {
	for i, c := range metricCodes {
		if c == code {
			return i
		}
	}
	return -1
}

// requestShard is one copy of the request counts and latency histograms.
type requestShard struct {
	counts  [len(metricRoutes)][len(metricCodes)]atomic.Uint64
	buckets [len(metricRoutes)][len(latencyBuckets) + 1]atomic.Uint64
	sumNS   [len(metricRoutes)]atomic.Int64
	_       [64]byte
}

// requestMetrics are capstan_edge_requests_total{route,code} and
// capstan_edge_request_seconds{route}, kept in metricShards copies.
type requestMetrics struct {
	countDesc, latencyDesc *prometheus.Desc
	shards                 [metricShards]requestShard
	// other counts the routes and codes outside the lists.
	other *prometheus.CounterVec
}

func newRequestMetrics() *requestMetrics {
	return &requestMetrics{
		countDesc:   prometheus.NewDesc("capstan_edge_requests_total", "Requests by route and status code.", []string{"route", "code"}, nil),
		latencyDesc: prometheus.NewDesc("capstan_edge_request_seconds", "Time to handle a request (until the body starts streaming).", []string{"route"}, nil),
		other: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstan_edge_requests_total", Help: "Requests by route and status code.",
		}, []string{"route", "code"}),
	}
}

func (r *requestMetrics) observe(route string, code int, d time.Duration) {
	ri, ci := routeIndex(route), codeIndex(code)
	if ri < 0 {
		r.other.WithLabelValues(route, strconv.Itoa(code)).Inc()
		return
	}
	sh := &r.shards[rand.Uint32()%metricShards]
	if ci < 0 {
		r.other.WithLabelValues(route, strconv.Itoa(code)).Inc()
	} else {
		sh.counts[ri][ci].Add(1)
	}
	secs := d.Seconds()
	b := len(latencyBuckets)
	for i, ub := range latencyBuckets {
		if secs <= ub {
			b = i
			break
		}
	}
	sh.buckets[ri][b].Add(1)
	sh.sumNS[ri].Add(int64(d))
}

// Describe implements prometheus.Collector.
func (r *requestMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- r.countDesc
	ch <- r.latencyDesc
}

// Collect implements prometheus.Collector.
func (r *requestMetrics) Collect(ch chan<- prometheus.Metric) {
	// The counts of the listed routes and codes, and the series of the
	// others, are one metric family: merge them by label pair.
	type key struct{ route, code string }
	counts := map[key]uint64{}
	for ri := range metricRoutes {
		var buckets [len(latencyBuckets) + 1]uint64
		var sum int64
		for si := range r.shards {
			sh := &r.shards[si]
			for ci := range metricCodes {
				if n := sh.counts[ri][ci].Load(); n > 0 {
					counts[key{metricRoutes[ri], strconv.Itoa(metricCodes[ci])}] += n
				}
			}
			for b := range buckets {
				buckets[b] += sh.buckets[ri][b].Load()
			}
			sum += sh.sumNS[ri].Load()
		}
		var total uint64
		cum := make(map[float64]uint64, len(latencyBuckets))
		for b, ub := range latencyBuckets {
			total += buckets[b]
			cum[ub] = total
		}
		total += buckets[len(latencyBuckets)]
		if total > 0 {
			ch <- prometheus.MustNewConstHistogram(r.latencyDesc, total, float64(sum)/1e9, cum, metricRoutes[ri])
		}
	}
	others := make(chan prometheus.Metric, 64)
	go func() { r.other.Collect(others); close(others) }()
	for m := range others {
		var d dto.Metric
		if m.Write(&d) != nil || d.Counter == nil {
			continue
		}
		var k key
		for _, lp := range d.Label {
			switch lp.GetName() {
			case "route":
				k.route = lp.GetValue()
			case "code":
				k.code = lp.GetValue()
			}
		}
		counts[k] += uint64(d.Counter.GetValue())
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(r.countDesc, prometheus.CounterValue, float64(n), k.route, k.code)
	}
}

type metrics struct {
	requests      *requestMetrics
	cacheHits     *shardedCounter
	cacheMisses   *shardedCounter
	originFetches prometheus.Counter
	originBytes   prometheus.Counter
	refusedPulls  prometheus.Counter
	acceptErrors  prometheus.Counter
	connsRefused  prometheus.Counter
	bytesServed   *shardedCounter
	eventsIn      *shardedCounter
	eventsOut     prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, s *Server) *metrics {
	m := &metrics{
		requests:      newRequestMetrics(),
		cacheHits:     newShardedCounter("capstan_edge_cache_hits_total", "Blob requests served from the cache."),
		cacheMisses:   newShardedCounter("capstan_edge_cache_misses_total", "Blob requests that needed an origin pull."),
		originFetches: prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_origin_fetches_total", Help: "HTTP requests sent to origins."}),
		originBytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_origin_bytes_total", Help: "Bytes pulled from origins."}),
		acceptErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_accept_errors_total", Help: "Failed accepts (out of file descriptors, buffers), each retried after a backoff."}),
		connsRefused:  prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_conns_refused_total", Help: "Connections closed at once because their client address held its cap of open connections."}),
		refusedPulls:  prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_refused_pulls_total", Help: "Objects from origins refused because no valid origin-signed statement named their content."}),
		bytesServed:   newShardedCounter("capstan_edge_bytes_served_total", "Blob and patch bytes served to devices."),
		eventsIn:      newShardedCounter("capstan_edge_events_received_total", "Device events accepted from devices."),
		eventsOut:     prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_events_forwarded_total", Help: "Device events forwarded to an origin."}),
	}
	reg.MustRegister(m.eventsIn, m.eventsOut,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "capstan_edge_events_queued", Help: "Device events waiting to be forwarded."},
			func() float64 { return float64(s.events.len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "capstan_edge_events_dropped_total", Help: "Device events dropped because the queue was full."},
			func() float64 { return float64(s.events.droppedTotal()) }))
	reg.MustRegister(m.requests, m.cacheHits, m.cacheMisses, m.originFetches, m.originBytes, m.refusedPulls, m.acceptErrors, m.connsRefused, m.bytesServed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "capstan_edge_cache_bytes", Help: "Bytes of blobs in the disk cache."},
			func() float64 { b, _ := s.cache.used(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "capstan_edge_channels", Help: "Channels the edge holds a record for."},
			func() float64 { return float64(len(s.state.all())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "capstan_edge_state_age_seconds", Help: "Seconds since the newest channel record arrived."},
			func() float64 {
				t := s.state.lastUpdate()
				if t.IsZero() {
					return -1
				}
				return time.Since(t).Seconds()
			}),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(route string, code int, d time.Duration, _ int) {
	m.requests.observe(route, code, d)
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
