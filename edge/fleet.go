package edge

import (
	"cmp"
	"encoding/json"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Peer is one edge of the fleet as GET /v1/edges lists it.
type Peer struct {
	// URL is the base URL devices use to reach the edge.
	URL string `json:"url"`
	// Region is the edge's location label ("eu-west"); may be empty.
	Region string `json:"region,omitempty"`
}

// FleetResponse is the body of GET /v1/edges.
type FleetResponse struct {
	// Region is the region of the edge that answered; may be empty.
	Region string `json:"region,omitempty"`
	// Edges are the fleet's alive edges, this one included, at most
	// MaxFleetPeers, the answering edge's region first.
	Edges []Peer `json:"edges"`
}

// Limits of GET /v1/edges. A device reads at most MaxFleetBody bytes of
// it; MaxFleetPeers peers of MaxPeerURLLen-byte URLs and MaxRegionLen-byte
// regions stay well under that.
const (
	MaxFleetPeers = 64
	MaxPeerURLLen = 256
	MaxRegionLen  = 64
	MaxFleetBody  = 64 << 10
)

// fleetReuse is how long an encoded fleet list is reused before
// Config.Fleet is called again. Devices and proxies may cache it for 5 s
// (Cache-Control max-age): membership changes within seconds, and a
// device times what it gets anyway.
const fleetReuse = time.Second

// fleetCache holds the last encoded /v1/edges body.
type fleetCache struct {
	mu   sync.Mutex // guards body and at
	body *answer
	at   time.Time
}

// handleEdges answers GET /v1/edges with the fleet's alive edges, so a
// device that ships one edge URL can find and rank the others.
func (s *Server) handleEdges(ctx *fasthttp.RequestCtx) {
	now := s.cfg.Now()
	s.fleet.mu.Lock()
	if s.fleet.body == nil || now.Sub(s.fleet.at) >= fleetReuse || now.Before(s.fleet.at) {
		s.fleet.body = &answer{body: s.encodeFleet()}
		s.fleet.at = now
	}
	a := s.fleet.body
	s.fleet.mu.Unlock()
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "public, max-age=5")
	writeEncoded(ctx, a)
}

// encodeFleet builds the /v1/edges body from Config.Fleet: valid,
// de-duplicated peers, this edge's region first then by region and URL,
// capped at MaxFleetPeers.
func (s *Server) encodeFleet() []byte {
	var peers []Peer
	if s.cfg.Fleet != nil {
		peers = s.cfg.Fleet()
	}
	self := s.cfg.Region
	out := make([]Peer, 0, min(len(peers), MaxFleetPeers))
	seen := map[string]bool{}
	for _, p := range peers {
		if !validPeer(p) || seen[p.URL] {
			continue
		}
		seen[p.URL] = true
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Peer) int {
		// Own region first: when the list is cut, a device keeps the
		// edges most likely near the one it reached.
		if (a.Region == self) != (b.Region == self) {
			if a.Region == self {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.URL, b.URL))
	})
	if len(out) > MaxFleetPeers {
		out = out[:MaxFleetPeers]
	}
	b, _ := json.Marshal(FleetResponse{Region: self, Edges: out})
	return b
}

// validPeer reports whether p is fit to hand to devices: an http(s) base
// URL and a region within the limits.
func validPeer(p Peer) bool {
	if p.URL == "" || len(p.URL) > MaxPeerURLLen || len(p.Region) > MaxRegionLen {
		return false
	}
	u, err := url.Parse(p.URL)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.RawQuery == "" && u.Fragment == ""
}
