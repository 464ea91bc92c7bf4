package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/stats"
	"github.com/prometheus/client_golang/prometheus"
	// The Prometheus data model (already linked by client_golang) reads a
	// counter's value without a second set of counters on the hot paths.
	dto "github.com/prometheus/client_model/go"
)

// defaultReportEvery is how often an edge tells the origins how it is
// doing (for the console's fleet view): often enough that a dead edge
// shows within half a minute, rarely enough to cost nothing.
const defaultReportEvery = 10 * time.Second

// Report returns what the edge would tell the origins about itself now.
func (s *Server) Report() stats.EdgeReport {
	r := stats.EdgeReport{
		Name: s.cfg.URL, URL: s.cfg.URL, Region: s.cfg.Region,
		StateAgeSeconds: -1, Started: s.started,
		CacheHits: counterValue(s.m.cacheHits), CacheMisses: counterValue(s.m.cacheMisses),
		BytesServed: counterValue(s.m.bytesServed), EventsQueued: s.events.len(), RSSBytes: residentBytes(),
	}
	for _, cs := range s.state.all() {
		r.Channels++
		r.MaxSeq = max(r.MaxSeq, cs.ch.Seq)
	}
	if t := s.state.lastUpdate(); !t.IsZero() {
		r.StateAgeSeconds = s.cfg.Now().Sub(t).Seconds()
	}
	r.CacheBytes, _ = s.cache.used()
	switch {
	case !s.isSynced():
		r.Status = "waiting for state"
	case s.expiredChannels() > 0:
		r.Status = "stale"
	default:
		r.Status = "ok"
	}
	return r
}

// reportLoop sends Report to every origin every cfg.ReportEvery. Every
// origin gets it (unlike events, which must be counted once), so the
// console of any origin shows the whole fleet. Failures only cost the
// console a fresh figure: they are logged at debug level.
func (s *Server) reportLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReportEvery)
	defer t.Stop()
	for {
		s.sendReport(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) sendReport(ctx context.Context) {
	body, err := json.Marshal(s.Report())
	if err != nil {
		return
	}
	for _, o := range s.cfg.Origins() {
		if err := s.postReport(ctx, o, body); err != nil {
			s.log.Debug("edge report", "origin", o, "err", err)
		}
	}
}

func (s *Server) postReport(ctx context.Context, origin string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(origin, "/")+"/v1/edges/report", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok := s.eventsToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", origin, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// counterValue reads a Prometheus counter (the edge's metrics are the one
// place these figures are counted; reading them keeps the hot paths as
// they are).
func counterValue(c prometheus.Counter) uint64 {
	var m dto.Metric
	if c.Write(&m) != nil || m.Counter == nil {
		return 0
	}
	return uint64(m.Counter.GetValue())
}

// residentBytes is the process's resident memory from /proc (Linux); 0
// where that is not available.
func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}
