package edge

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	cacheHits     prometheus.Counter
	cacheMisses   prometheus.Counter
	originFetches prometheus.Counter
	originBytes   prometheus.Counter
	refusedPulls  prometheus.Counter
	acceptErrors  prometheus.Counter
	connsRefused  prometheus.Counter
	bytesServed   prometheus.Counter
	eventsIn      prometheus.Counter
	eventsOut     prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, s *Server) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstan_edge_requests_total", Help: "Requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "capstan_edge_request_seconds", Help: "Time to handle a request (until the body starts streaming).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1},
		}, []string{"route"}),
		cacheHits:     prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_cache_hits_total", Help: "Blob requests served from the cache."}),
		cacheMisses:   prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_cache_misses_total", Help: "Blob requests that needed an origin pull."}),
		originFetches: prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_origin_fetches_total", Help: "HTTP requests sent to origins."}),
		originBytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_origin_bytes_total", Help: "Bytes pulled from origins."}),
		acceptErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_accept_errors_total", Help: "Failed accepts (out of file descriptors, buffers), each retried after a backoff."}),
		connsRefused:  prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_conns_refused_total", Help: "Connections closed at once because their client address held its cap of open connections."}),
		refusedPulls:  prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_refused_pulls_total", Help: "Objects from origins refused because no valid origin-signed statement named their content."}),
		bytesServed:   prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_bytes_served_total", Help: "Blob and patch bytes served to devices."}),
	}
	m.eventsIn = prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_events_received_total", Help: "Device events accepted from devices."})
	m.eventsOut = prometheus.NewCounter(prometheus.CounterOpts{Name: "capstan_edge_events_forwarded_total", Help: "Device events forwarded to an origin."})
	reg.MustRegister(m.eventsIn, m.eventsOut,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "capstan_edge_events_queued", Help: "Device events waiting to be forwarded."},
			func() float64 { return float64(s.events.len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "capstan_edge_events_dropped_total", Help: "Device events dropped because the queue was full."},
			func() float64 { return float64(s.events.droppedTotal()) }))
	reg.MustRegister(m.requests, m.latency, m.cacheHits, m.cacheMisses, m.originFetches, m.originBytes, m.refusedPulls, m.acceptErrors, m.connsRefused, m.bytesServed,
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
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
