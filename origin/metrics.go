package origin

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	uploads  *prometheus.CounterVec
	requests *prometheus.CounterVec
	patches  *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, s *Server) metrics {
	m := metrics{
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstan_origin_uploads_total", Help: "Release uploads by result.",
		}, []string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstan_origin_http_requests_total", Help: "HTTP requests by status code.",
		}, []string{"code"}),
		patches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstan_origin_patches_total", Help: "Patch builds by result.",
		}, []string{"result"}),
	}
	reg.MustRegister(m.uploads, m.requests, m.patches, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (m metrics) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: 200}
		h.ServeHTTP(sw, r)
		m.requests.WithLabelValues(strconv.Itoa(sw.code)).Inc()
	})
}
