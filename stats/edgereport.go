package stats

import (
	"encoding/json"
	"fmt"
	"net/url"
	"time"
)

// Limits of an edge report (POST /v1/edges/report on an origin).
const (
	// MaxReportBody bounds the body of one report in bytes.
	MaxReportBody = 4 << 10
	// MaxReportNameLen bounds the edge name and URL.
	MaxReportNameLen = 256
	// MaxReportRegionLen bounds the region label, as gossip does.
	MaxReportRegionLen = 64
	// MaxReportStatusLen bounds the edge's status word.
	MaxReportStatusLen = 64
)

// EdgeReport is what an edge tells the origins about itself every few
// seconds, for the operator console's fleet view. Every figure is the
// edge's own, since it started; the origin keeps only the latest report
// of each edge, in memory (see docs/decisions/122-fleet-reports.md).
type EdgeReport struct {
	// Name identifies the edge (its URL unless it has a gossip name).
	Name string `json:"name"`
	// URL is the base URL devices use to reach it; may be empty.
	URL string `json:"url,omitempty"`
	// Region is the edge's region label; may be empty.
	Region string `json:"region,omitempty"`
	// Status is what the edge's /healthz says: "ok", "stale" (it holds an
	// expired channel record) or "waiting for state".
	Status string `json:"status"`
	// Channels is how many channel records it holds; MaxSeq is the largest
	// Seq among them (records are numbered by the origin's clock, so a
	// lagging edge has a smaller one than the origin's newest).
	Channels int    `json:"channels"`
	MaxSeq   uint64 `json:"max_seq"`
	// StateAgeSeconds is how long ago its newest record arrived (-1: none).
	StateAgeSeconds float64 `json:"state_age_seconds"`
	// CacheHits and CacheMisses count blob requests served from its cache
	// and those that needed an origin pull; CacheBytes is the cache's size.
	CacheHits   uint64 `json:"cache_hits"`
	CacheMisses uint64 `json:"cache_misses"`
	CacheBytes  int64  `json:"cache_bytes"`
	// BytesServed counts blob and patch bytes sent to devices.
	BytesServed uint64 `json:"bytes_served"`
	// EventsQueued is how many device events wait to be forwarded.
	EventsQueued int `json:"events_queued"`
	// RSSBytes is the resident memory of the edge's process (0: unknown).
	// In `capstan dev` the origin shares that process.
	RSSBytes uint64 `json:"rss_bytes"`
	// Started is when the edge process started.
	Started time.Time `json:"started"`
}

// DecodeEdgeReport parses and validates a report body.
func DecodeEdgeReport(b []byte) (*EdgeReport, error) {
	if len(b) > MaxReportBody {
		return nil, fmt.Errorf("%w: edge report of %d bytes is over %d", ErrBadEvent, len(b), MaxReportBody)
	}
	var r EdgeReport
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: edge report: %v", ErrBadEvent, err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Validate checks the lengths, the URL and that counts are not negative.
func (r *EdgeReport) Validate() error {
	if r.Name == "" || len(r.Name) > MaxReportNameLen {
		return fmt.Errorf("%w: edge report: name must be 1 to %d bytes", ErrBadEvent, MaxReportNameLen)
	}
	if len(r.URL) > MaxReportNameLen || len(r.Region) > MaxReportRegionLen || len(r.Status) > MaxReportStatusLen {
		return fmt.Errorf("%w: edge report: url, region or status too long", ErrBadEvent)
	}
	if r.URL != "" {
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: edge report: url %q is not an http(s) base URL", ErrBadEvent, r.URL)
		}
	}
	if r.Channels < 0 || r.CacheBytes < 0 || r.EventsQueued < 0 {
		return fmt.Errorf("%w: edge report: negative count", ErrBadEvent)
	}
	return nil
}
