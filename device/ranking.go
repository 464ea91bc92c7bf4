package device

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// RankConfig says how a device finds its nearest edge. Zero values mean
// the documented defaults.
//
// A device starts from the edge URLs the app ships (Config.Edges), asks one
// of them for the fleet (GET /v1/edges), times a cheap request (GET
// /healthz) to a few of the listed edges in parallel, and then tries the
// edges fastest first, the shipped URLs last. The ranking is kept in
// Dir/.capstan/edges.json and redone after Every, after a failure of the
// fastest edge, and sooner (RetryEvery) while an edge that was faster than
// the current best does not answer.
type RankConfig struct {
	// Off disables ranking: the device tries Config.Edges in order, as
	// shipped, and never asks for the fleet.
	Off bool
	// Every is how long a ranking is used before the device ranks again
	// (default 10 minutes).
	Every time.Duration
	// RetryEvery is how long a ranking is used while an edge that was
	// faster than its best stops answering (default 1 minute), so the
	// device returns to that edge soon after it is back.
	RetryEvery time.Duration
	// Candidates caps the edges timed in one ranking (default 8): one per
	// region first, so a large fleet costs a few requests, not one per
	// edge.
	Candidates int
	// Probes is the number of requests timed per candidate (default 3),
	// one after the other on one connection. The smallest round trip
	// counts: the TCP handshake and the time from request to first
	// response byte are both samples, so a one-off stall is left out.
	Probes int
	// SlowFactor bounds the wait for slow candidates (default 4): once the
	// first candidate has finished its probes, after time T, the others
	// get until SlowFactor×T (at least 100 ms). A candidate that has not
	// answered by then is ranked after every measured one. A ranking thus
	// costs a few round trips to the nearest edge, not to the farthest.
	SlowFactor int
	// Timeout bounds a whole ranking, fleet list and probes (default 2 s).
	// Edges that have not answered by then are left out.
	Timeout time.Duration
	// Seed seeds the choice of candidates within a region; 0 means a
	// random seed. Tests set it for repeatable runs.
	Seed uint64
}

// Limits on what a device accepts from GET /v1/edges: edges are untrusted
// mirrors, so the list is bounded like every other answer.
const (
	maxFleetBody  = 64 << 10
	maxFleetPeers = 64
	maxPeerURLLen = 256
	maxRegionLen  = 64
	// maxRankingFile bounds edges.json on read.
	maxRankingFile = 256 << 10
	// lostFor is how long an edge that stopped answering is still timed
	// in every ranking before the device forgets it.
	lostFor = time.Hour
)

// RankedEdge is one timed edge of a Ranking.
type RankedEdge struct {
	// URL is the edge's base URL.
	URL string `json:"url"`
	// Region is the region the fleet list gave for it; may be empty.
	Region string `json:"region,omitempty"`
	// RTTMicros is the smallest round trip of its probes, in microseconds.
	RTTMicros int64 `json:"rtt_us"`
	// Unmeasured is set when the ranking was cut off before the edge
	// answered: RTTMicros is then a lower bound (the time waited).
	Unmeasured bool `json:"unmeasured,omitempty"`
}

// LostEdge is an edge that was faster than the current best and stopped
// answering; it is timed again at every ranking until Since+1h.
type LostEdge struct {
	RankedEdge
	// Since is when it was first found missing.
	Since time.Time `json:"since"`
}

// Ranking is the device's view of the fleet, kept in
// Dir/.capstan/edges.json between runs.
type Ranking struct {
	// Shipped is the Config.Edges the ranking was made with; a different
	// list (a new app build) makes the device rank again.
	Shipped []string `json:"shipped"`
	// At is when the ranking was made (Config.Now).
	At time.Time `json:"at"`
	// Source is the edge that gave the fleet list, "" if none did.
	Source string `json:"source,omitempty"`
	// Edges are the edges that answered, fastest first.
	Edges []RankedEdge `json:"edges"`
	// Lost are edges that were faster than Edges[0] and did not answer.
	Lost []LostEdge `json:"lost,omitempty"`
	// Stale is set when the fastest edge failed a request since: the next
	// run ranks again.
	Stale bool `json:"stale,omitempty"`
}

// ranker holds a device's ranking. The zero value is ready: it loads the
// ranking from disk on first use.
type ranker struct {
	load sync.Once // reads r from disk
	r    *Ranking  // nil: no ranking yet
	rng  *rand.Rand
}

func rankingPath(dir string) string { return filepath.Join(stateDir(dir), "edges.json") }

// Ranking returns a copy of the device's current edge ranking, or nil if
// it has none.
func (d *Device) Ranking() *Ranking {
	d.loadRanking()
	if d.rank.r == nil {
		return nil
	}
	r := *d.rank.r
	r.Edges = slices.Clone(r.Edges)
	r.Lost = slices.Clone(r.Lost)
	r.Shipped = slices.Clone(r.Shipped)
	return &r
}

// rankCfg returns Config.Ranking with the defaults filled in.
func (d *Device) rankCfg() RankConfig {
	c := d.cfg.Ranking
	if c.Every <= 0 {
		c.Every = 10 * time.Minute
	}
	if c.RetryEvery <= 0 {
		c.RetryEvery = time.Minute
	}
	if c.Candidates <= 0 {
		c.Candidates = 8
	}
	if c.Probes <= 0 {
		c.Probes = 3
	}
	if c.SlowFactor <= 0 {
		c.SlowFactor = 4
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Second
	}
	return c
}

// loadRanking reads edges.json once. A missing, oversized or corrupt file
// is no ranking: the file is a cache of measurements, and the device
// simply ranks again.
func (d *Device) loadRanking() { d.rank.load.Do(d.readRanking) }

func (d *Device) readRanking() {
	f, err := os.Open(rankingPath(d.cfg.Dir))
	if err != nil {
		return
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRankingFile+1))
	if err != nil || len(b) > maxRankingFile {
		return
	}
	var r Ranking
	if json.Unmarshal(b, &r) == nil {
		d.rank.r = &r
	}
}

func (d *Device) saveRanking() error {
	b, err := json.MarshalIndent(d.rank.r, "", "  ")
	if err != nil {
		return fmt.Errorf("device: save ranking: %w", err)
	}
	if err := os.MkdirAll(stateDir(d.cfg.Dir), 0o755); err != nil {
		return fmt.Errorf("device: save ranking: %w", err)
	}
	if err := writeFileSync(rankingPath(d.cfg.Dir), b, 0o644); err != nil {
		return fmt.Errorf("device: save ranking: %w", err)
	}
	return nil
}

// edgeOrder returns the edges to try in this run, ranking them first if
// the ranking is missing or due. The shipped URLs always come last.
func (d *Device) edgeOrder(ctx context.Context) []string {
	if d.cfg.Ranking.Off {
		return d.cfg.Edges
	}
	d.loadRanking()
	if d.rankDue() {
		if r, err := d.rankEdges(ctx); err == nil {
			d.rank.r = r
			// A ranking that cannot be saved still serves this run.
			_ = d.saveRanking()
		}
	}
	return d.order()
}

// order is the ranked edges, then the shipped ones, without repeats. It
// only reads the ranking, so concurrent downloads may call it.
func (d *Device) order() []string {
	d.loadRanking()
	if d.cfg.Ranking.Off || d.rank.r == nil || !slices.Equal(d.rank.r.Shipped, d.cfg.Edges) {
		return d.cfg.Edges
	}
	out := make([]string, 0, len(d.rank.r.Edges)+len(d.cfg.Edges))
	for _, e := range d.rank.r.Edges {
		out = append(out, e.URL)
	}
	return uniq(append(out, d.cfg.Edges...))
}

// rankDue reports whether the device should rank its edges now.
func (d *Device) rankDue() bool {
	r := d.rank.r
	if r == nil || r.Stale || len(r.Edges) == 0 || !slices.Equal(r.Shipped, d.cfg.Edges) {
		return true
	}
	c := d.rankCfg()
	age := d.cfg.Now().Sub(r.At)
	if age < 0 {
		return true // the clock went back: the age means nothing
	}
	if len(r.Lost) > 0 {
		return age >= c.RetryEvery
	}
	return age >= c.Every
}

// served records which edge of order answered the check. If it was not
// the first, the first failed: the ranking is marked stale so that the
// next run ranks again (and leaves the failed edge out, or finds it back).
func (d *Device) served(order []string, i int) {
	r := d.rank.r
	if i == 0 || d.cfg.Ranking.Off || r == nil || r.Stale || len(r.Edges) == 0 || order[0] != r.Edges[0].URL {
		return
	}
	r.Stale = true
	_ = d.saveRanking()
}

// fleetAnswer is the part of GET /v1/edges a device reads.
type fleetAnswer struct {
	Edges []struct {
		URL    string `json:"url"`
		Region string `json:"region"`
	} `json:"edges"`
}

// rankEdges asks for the fleet and times the candidates. It fails only if
// no edge gave a usable list and no candidate answered a probe.
func (d *Device) rankEdges(ctx context.Context) (*Ranking, error) {
	c := d.rankCfg()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	now := d.cfg.Now()
	prev := d.rank.r
	r := &Ranking{Shipped: slices.Clone(d.cfg.Edges), At: now}

	// The fleet list from the first edge that gives one, in the current
	// order (the nearest known edge first).
	var peers []RankedEdge
	for _, e := range d.order() {
		p, err := d.fetchFleet(ctx, e)
		if err == nil && len(p) > 0 {
			peers, r.Source = p, e
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(peers) == 0 {
		// No fleet (an edge without gossip, or none reachable): rank the
		// shipped URLs themselves.
		for _, e := range d.cfg.Edges {
			peers = append(peers, RankedEdge{URL: e})
		}
	}
	var lost []LostEdge
	if prev != nil && slices.Equal(prev.Shipped, d.cfg.Edges) {
		for _, l := range prev.Lost {
			if now.Sub(l.Since) < lostFor {
				lost = append(lost, l)
			}
		}
	}
	cands := d.candidates(peers, prev, lost, c.Candidates)
	results := d.probeAll(ctx, cands, c)
	for i, cand := range cands {
		if pr := results[i]; pr.measured || pr.cut {
			cand.RTTMicros = pr.best.Microseconds()
			cand.Unmeasured = pr.cut
			r.Edges = append(r.Edges, cand)
		}
	}
	slices.SortStableFunc(r.Edges, func(a, b RankedEdge) int { return cmp.Compare(a.RTTMicros, b.RTTMicros) })
	if len(r.Edges) == 0 || r.Edges[0].Unmeasured {
		return nil, fmt.Errorf("%w: no edge answered a probe", ErrNoEdge)
	}
	best := r.Edges[0].RTTMicros
	// Edges that were faster than the new best and did not answer: keep
	// timing them, and rank again sooner, so the device returns to them.
	answered := func(u string) bool {
		return slices.ContainsFunc(r.Edges, func(e RankedEdge) bool { return e.URL == u && !e.Unmeasured })
	}
	for _, l := range lost {
		if !answered(l.URL) {
			r.Lost = append(r.Lost, l)
		}
	}
	if prev != nil {
		for _, e := range prev.Edges {
			if e.RTTMicros < best && !answered(e.URL) && !slices.ContainsFunc(r.Lost, func(l LostEdge) bool { return l.URL == e.URL }) {
				r.Lost = append(r.Lost, LostEdge{RankedEdge: e, Since: now})
			}
		}
	}
	return r, nil
}

// candidates picks at most n edges to time: the lost ones and the previous
// best first (to find them back), then one edge per region in turn, in a
// random order within each region, so that every region is measured
// before any gets a second candidate.
func (d *Device) candidates(peers []RankedEdge, prev *Ranking, lost []LostEdge, n int) []RankedEdge {
	if d.rank.rng == nil {
		seed := d.cfg.Ranking.Seed
		if seed == 0 {
			seed = rand.Uint64()
		}
		d.rank.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	}
	var out []RankedEdge
	add := func(e RankedEdge) {
		if len(out) < n && !slices.ContainsFunc(out, func(o RankedEdge) bool { return o.URL == e.URL }) {
			out = append(out, RankedEdge{URL: e.URL, Region: e.Region})
		}
	}
	for _, l := range lost {
		add(l.RankedEdge)
	}
	if prev != nil && len(prev.Edges) > 0 && slices.ContainsFunc(peers, func(p RankedEdge) bool { return p.URL == prev.Edges[0].URL }) {
		add(prev.Edges[0])
	}
	byRegion := map[string][]RankedEdge{}
	var regions []string
	for _, p := range peers {
		if _, ok := byRegion[p.Region]; !ok {
			regions = append(regions, p.Region)
		}
		byRegion[p.Region] = append(byRegion[p.Region], p)
	}
	d.rank.rng.Shuffle(len(regions), func(i, j int) { regions[i], regions[j] = regions[j], regions[i] })
	for _, g := range regions {
		es := byRegion[g]
		d.rank.rng.Shuffle(len(es), func(i, j int) { es[i], es[j] = es[j], es[i] })
	}
	for round := 0; len(out) < n; round++ {
		more := false
		for _, g := range regions {
			if es := byRegion[g]; round < len(es) {
				add(es[round])
				more = true
			}
		}
		if !more {
			break
		}
	}
	return out
}

// fetchFleet reads GET /v1/edges from edge, keeping only well-formed
// entries.
func (d *Device) fetchFleet(ctx context.Context, edge string) ([]RankedEdge, error) {
	var fa fleetAnswer
	if err := d.getJSON(ctx, edge, "/v1/edges", maxFleetBody, &fa); err != nil {
		return nil, fmt.Errorf("device: fleet list: %w", err)
	}
	var out []RankedEdge
	for _, e := range fa.Edges {
		if len(out) == maxFleetPeers {
			break
		}
		if !validEdgeURL(e.URL) || len(e.Region) > maxRegionLen {
			continue
		}
		u := strings.TrimRight(e.URL, "/")
		if !slices.ContainsFunc(out, func(o RankedEdge) bool { return o.URL == u }) {
			out = append(out, RankedEdge{URL: u, Region: e.Region})
		}
	}
	return out, nil
}

// validEdgeURL accepts an http(s) base URL with a host and nothing after
// the path.
func validEdgeURL(s string) bool {
	if s == "" || len(s) > maxPeerURLLen {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.User == nil && u.RawQuery == "" && u.Fragment == ""
}

// probeResult is what the probes of one candidate found.
type probeResult struct {
	best     time.Duration // smallest round-trip sample; the cut-off time if cut
	measured bool          // a probe was answered 200
	done     bool          // the probes ended (all sent, or one failed)
	cut      bool          // no answer yet when the ranking was cut off
}

// probeAll times every candidate in parallel. Once the first candidate
// has finished its probes, the others get until SlowFactor times that
// (at least minSettle); the ranking never waits for the farthest edge's
// round trips. A candidate still unanswered then gets the elapsed time as
// a lower bound of its round trip and is marked unmeasured.
func (d *Device) probeAll(ctx context.Context, cands []RankedEdge, c RankConfig) []probeResult {
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	res := make([]probeResult, len(cands))
	var mu sync.Mutex // guards res and over
	over := false     // the ranking is cut off: later samples are ignored
	finished := make(chan int, len(cands))
	var wg sync.WaitGroup
	for i, cand := range cands {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.probe(pctx, cand.URL, c.Probes, func(rtt time.Duration) {
				mu.Lock()
				defer mu.Unlock()
				if over {
					return
				}
				if !res[i].measured || rtt < res[i].best {
					res[i].best = rtt
				}
				res[i].measured = true
			})
			mu.Lock()
			res[i].done = true
			mu.Unlock()
			finished <- i
		}()
	}
	var settle <-chan time.Time
	for left := len(cands); left > 0; {
		select {
		case i := <-finished:
			left--
			mu.Lock()
			first := settle == nil && res[i].measured
			mu.Unlock()
			if first {
				wait := max(time.Duration(c.SlowFactor)*time.Since(start), minSettle)
				settle = time.After(wait - time.Since(start))
			}
		case <-settle:
			left = 0
		case <-ctx.Done():
			left = 0
		}
	}
	mu.Lock()
	over = true
	elapsed := time.Since(start)
	for i := range res {
		if !res[i].done && !res[i].measured {
			// Cut off before any answer: slower than everything measured.
			res[i].best, res[i].cut = elapsed, true
		}
	}
	mu.Unlock()
	cancel()
	wg.Wait()
	return res
}

// minSettle is the least time candidates get after the first finished.
const minSettle = 100 * time.Millisecond

// probe sends up to probes GET /healthz to edge one after the other, on
// one kept-alive connection, and reports each round-trip sample to report:
// the time from the request written to the first response byte, which
// leaves out the connection setup of the first. (The TCP handshake alone
// is no sample: a proxy or load balancer in front of the edge completes
// it without the edge.) It stops at the first failure. Round
// trips use the real monotonic clock, not Config.Now, which may be a
// test's fake calendar.
func (d *Device) probe(ctx context.Context, edge string, probes int, report func(time.Duration)) {
	for i := 0; i < probes && ctx.Err() == nil; i++ {
		if err := d.probeOnce(ctx, edge, report); err != nil {
			return
		}
	}
}

var errNotReady = errors.New("device: edge not ready")

func (d *Device) probeOnce(ctx context.Context, edge string, report func(time.Duration)) error {
	var wrote time.Time
	var rtt time.Duration
	trace := &httptrace.ClientTrace{
		WroteRequest:         func(httptrace.WroteRequestInfo) { wrote = time.Now() },
		GotFirstResponseByte: func() { rtt = time.Since(wrote) },
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, strings.TrimRight(edge, "/")+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := d.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	// Drain a bounded body so that the connection is reused by the next
	// probe (and by the check that follows on the winner).
	n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	d.bytes.Add(n)
	if resp.StatusCode != http.StatusOK {
		return errNotReady
	}
	if !wrote.IsZero() {
		report(max(rtt, time.Microsecond))
	}
	return nil
}
