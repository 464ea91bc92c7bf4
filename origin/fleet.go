package origin

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/stats"
	"github.com/capstan-ota/capstan/wire"
)

// Bounds of the fleet view: an origin remembers at most maxFleetEdges
// edge reports and forgets an edge silent for fleetForget.
const (
	maxFleetEdges = 1024
	fleetForget   = 10 * time.Minute
	// fleetSilent is how long without a report makes an edge "silent"
	// (three missed reports at the default 10 s).
	fleetSilent = 30 * time.Second
	// fleetBehindGrace lets a record reach the fleet before an edge that
	// lacks it counts as behind.
	fleetBehindGrace = 15 * time.Second
)

// Member is a node of the cluster as the origin's gossip node sees it.
type Member struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	URL    string `json:"url,omitempty"`
	Region string `json:"region,omitempty"`
	// Self marks the member that is this origin.
	Self bool `json:"self,omitempty"`
}

// fleet holds the latest report of each edge, in memory: a restarted
// origin has a full view again one report interval later.
type fleet struct {
	mu    sync.Mutex // guards edges
	edges map[string]*edgeEntry
}

type edgeEntry struct {
	rep  stats.EdgeReport
	seen time.Time
}

func (f *fleet) put(r *stats.EdgeReport, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.edges == nil {
		f.edges = map[string]*edgeEntry{}
	}
	for name, e := range f.edges {
		if now.Sub(e.seen) > fleetForget {
			delete(f.edges, name)
		}
	}
	if _, ok := f.edges[r.Name]; !ok && len(f.edges) >= maxFleetEdges {
		// Full: the edge heard from longest ago makes room.
		oldest := ""
		for name, e := range f.edges {
			if oldest == "" || e.seen.Before(f.edges[oldest].seen) {
				oldest = name
			}
		}
		delete(f.edges, oldest)
	}
	f.edges[r.Name] = &edgeEntry{rep: *r, seen: now}
}

func (f *fleet) list() []edgeEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]edgeEntry, 0, len(f.edges))
	for _, e := range f.edges {
		out = append(out, *e)
	}
	return out
}

// handleEdgeReport takes POST /v1/edges/report from an edge. Like device
// events it is authenticated by the cluster's events token (open when
// none is set: a report only changes what the console shows, and is
// bounded).
func (s *Server) handleEdgeReport(w http.ResponseWriter, r *http.Request) {
	if fromEdge, required := s.eventsAuth(r); required && !fromEdge {
		s.fail(w, fmt.Errorf("%w: edge reports need the cluster events token", errUnauthenticated))
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, stats.MaxReportBody+1))
	if err != nil {
		s.fail(w, badRequest("read edge report: %v", err))
		return
	}
	rep, err := stats.DecodeEdgeReport(b)
	if err != nil {
		s.fail(w, badRequest("%v", err))
		return
	}
	s.fleet.put(rep, s.cfg.Now())
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// EdgeView is one edge in GET /v1/fleet.
type EdgeView struct {
	stats.EdgeReport
	// Health sums up the edge for an operator: "ok", "behind" (it lacks
	// channel records the origin signed a while ago), "silent" (no report
	// lately), "no reports" (known from gossip only), or the edge's own
	// status when that is not ok.
	Health string `json:"health"`
	// LastReport is when the origin last heard from it (zero: never).
	LastReport time.Time `json:"last_report,omitzero"`
	// CacheHitRatio is hits/(hits+misses), -1 before any blob request.
	CacheHitRatio float64 `json:"cache_hit_ratio"`
}

// OriginView is one origin in GET /v1/fleet.
type OriginView struct {
	Name   string `json:"name"`
	URL    string `json:"url,omitempty"`
	Region string `json:"region,omitempty"`
	// Self marks the origin that answered; only its own figures are known.
	Self     bool   `json:"self"`
	RSSBytes uint64 `json:"rss_bytes,omitempty"`
	// Started is when this origin process started (Self only).
	Started time.Time `json:"started,omitzero"`
}

// FleetView is the answer of GET /v1/fleet.
type FleetView struct {
	// MaxSeq is the largest Seq of the channel records this origin holds:
	// an edge with a smaller one (for longer than a few seconds) lags.
	MaxSeq  uint64       `json:"max_seq"`
	Edges   []EdgeView   `json:"edges"`
	Origins []OriginView `json:"origins"`
	// ReportEvery is how often edges report, in seconds (for the UI to
	// judge freshness).
	SilentAfter float64 `json:"silent_after_seconds"`
}

// Fleet returns the fleet as this origin knows it: edge reports, gossip
// members and itself.
func (s *Server) Fleet() (*FleetView, error) {
	envs, err := s.st.channels("")
	if err != nil {
		return nil, fmt.Errorf("origin: fleet: %w", err)
	}
	now := s.cfg.Now()
	var maxSeq, settled uint64
	for _, env := range envs {
		c, err := env.Channel()
		if err != nil {
			continue
		}
		maxSeq = max(maxSeq, c.Seq)
		if now.Sub(c.Issued) > fleetBehindGrace {
			settled = max(settled, c.Seq)
		}
	}
	v := &FleetView{MaxSeq: maxSeq, Edges: []EdgeView{}, Origins: []OriginView{}, SilentAfter: fleetSilent.Seconds()}
	reported := map[string]bool{}
	for _, e := range s.fleet.list() {
		ev := EdgeView{EdgeReport: e.rep, LastReport: e.seen, CacheHitRatio: -1}
		if n := e.rep.CacheHits + e.rep.CacheMisses; n > 0 {
			ev.CacheHitRatio = float64(e.rep.CacheHits) / float64(n)
		}
		switch {
		case now.Sub(e.seen) > fleetSilent:
			ev.Health = "silent"
		case e.rep.Status != "ok":
			ev.Health = e.rep.Status
		case e.rep.MaxSeq < settled:
			ev.Health = "behind"
		default:
			ev.Health = "ok"
		}
		reported[e.rep.URL] = true
		reported[e.rep.Name] = true
		v.Edges = append(v.Edges, ev)
	}
	self := OriginView{Name: "this origin", Self: true, RSSBytes: residentBytes(), Started: s.started}
	if s.cfg.Members != nil {
		for _, m := range s.cfg.Members() {
			switch m.Role {
			case "edge":
				if !reported[m.URL] && !reported[m.Name] {
					v.Edges = append(v.Edges, EdgeView{EdgeReport: stats.EdgeReport{Name: m.Name, URL: m.URL, Region: m.Region}, Health: "no reports", CacheHitRatio: -1})
				}
			case "origin":
				if m.Self {
					self.Name, self.URL, self.Region = m.Name, m.URL, m.Region
					continue
				}
				v.Origins = append(v.Origins, OriginView{Name: m.Name, URL: m.URL, Region: m.Region})
			}
		}
	}
	v.Origins = append([]OriginView{self}, v.Origins...)
	sort.Slice(v.Edges, func(i, j int) bool {
		a, b := v.Edges[i], v.Edges[j]
		if a.Region != b.Region {
			return a.Region < b.Region
		}
		return a.Name < b.Name
	})
	return v, nil
}

func (s *Server) handleFleet(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authorize(r, wire.RoleReader, ""); err != nil {
		s.fail(w, err)
		return
	}
	v, err := s.Fleet()
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
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
