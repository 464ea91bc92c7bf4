package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
	"github.com/valyala/fasthttp"
)

// maxConnsPerEdge caps the connections the default client opens to one
// edge (the common 1024 file-descriptor limit allows a few edges).
const maxConnsPerEdge = 256

// Bench is one benchmark run. Create it with New and call Run once.
type Bench struct {
	cfg     Config
	shares  []share
	http    *fasthttp.Client
	rec     *Recorder
	recycle bool

	devices  []*simDevice
	fleet    []FleetClass
	baseline *relInfo // what the channel served when the run started

	relMu sync.Mutex // guards rels and noPatches
	rels  map[release.Hash]*relInfo
	// noPatches holds release pairs the edges have no patch for.
	noPatches map[[2]release.Hash]bool

	popMu  sync.Mutex // guards pop, newest, t50 and t99
	pop    map[release.Hash]int
	newest release.Hash // the storm's release, zero before the storm
	// t50 and t99 are when 50 % and 99 % of the devices first ran newest.
	t50, t99 time.Time

	eventsOff  atomic.Bool
	bytes      atomic.Int64
	patchBytes atomic.Int64
	blobBytes  atomic.Int64
	failovers  atomic.Int64
	fallbacks  atomic.Int64
	ran        atomic.Bool
}

// New validates cfg and returns a Bench. It sends no request.
func New(cfg Config) (*Bench, error) {
	cfg, shares, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	b := &Bench{
		cfg:       cfg,
		shares:    shares,
		http:      cfg.HTTP,
		rels:      map[release.Hash]*relInfo{},
		noPatches: map[[2]release.Hash]bool{},
		recycle:   cfg.Recycle && cfg.Scenario != ScenarioStorm,
	}
	if b.http == nil {
		// One connection per download in flight, but not more than a
		// process can usually open: past the cap requests wait for a
		// connection, and in the open loop that wait is latency.
		b.http = newHTTPClient(min(cfg.Concurrency*cfg.Parallel+8, maxConnsPerEdge), cfg.Timeout)
	}
	return b, nil
}

func (b *Bench) knownRelease(id release.Hash) *relInfo {
	b.relMu.Lock()
	defer b.relMu.Unlock()
	return b.rels[id]
}

// addRelease stores ri unless another goroutine stored the same release
// first, and returns the stored one.
func (b *Bench) addRelease(ri *relInfo) *relInfo {
	b.relMu.Lock()
	defer b.relMu.Unlock()
	if old, ok := b.rels[ri.id()]; ok {
		return old
	}
	b.rels[ri.id()] = ri
	return ri
}

func (b *Bench) noPatch(base, target release.Hash) bool {
	b.relMu.Lock()
	defer b.relMu.Unlock()
	return b.noPatches[[2]release.Hash{base, target}]
}

func (b *Bench) markNoPatch(base, target release.Hash) {
	b.relMu.Lock()
	defer b.relMu.Unlock()
	b.noPatches[[2]release.Hash{base, target}] = true
}

// updatedShare is the share of devices on the storm's release.
func (b *Bench) updatedShare() float64 {
	b.popMu.Lock()
	defer b.popMu.Unlock()
	if b.newest.IsZero() {
		return 0
	}
	return float64(b.pop[b.newest]) / float64(len(b.devices))
}

// Result is everything a run measured. Latencies are in milliseconds.
type Result struct {
	Scenario string `json:"scenario"`
	// Mode is "open" (fixed arrival rate) or "closed" (fixed concurrency).
	Mode        string   `json:"mode"`
	Rate        float64  `json:"rate,omitempty"`
	Concurrency int      `json:"concurrency"`
	Devices     int      `json:"devices"`
	Edges       []string `json:"edges"`
	App         string   `json:"app"`
	Channel     string   `json:"channel"`
	// Release is the version the channel served when the run started.
	Release  string       `json:"release"`
	Fleet    []FleetClass `json:"fleet"`
	Duration float64      `json:"duration_s"`
	// Elapsed includes finishing the sessions in flight at the end.
	Elapsed float64   `json:"elapsed_s"`
	Started time.Time `json:"started"`

	Sessions int64 `json:"sessions"`
	// Unstarted counts open-loop sessions that were due before the end
	// but never got a slot: the generator (or the server) fell behind.
	Unstarted     int64 `json:"unstarted"`
	Updates       int64 `json:"updates"`
	UpToDate      int64 `json:"up_to_date"`
	Blocked       int64 `json:"blocked"`
	FailedChecks  int64 `json:"failed_checks"`
	FailedUpdates int64 `json:"failed_updates"`
	Failovers     int64 `json:"failovers"`
	// PatchFallbacks counts updates that fell back to files after a patch
	// failed (not a 404, which means the edge has no patch for the pair).
	PatchFallbacks int64   `json:"patch_fallbacks"`
	SessionsPerSec float64 `json:"sessions_per_s"`
	UpdatesPerSec  float64 `json:"updates_per_s"`

	Bytes       int64   `json:"bytes"`
	PatchBytes  int64   `json:"patch_bytes"`
	BlobBytes   int64   `json:"blob_bytes"`
	BytesPerSec float64 `json:"bytes_per_s"`
	// EventsSupported is false when the edges had no /v1/events.
	EventsSupported bool `json:"events_supported"`

	// Ops holds check, download, update, update_patch, update_files,
	// event and start_lag (how late sessions started against the
	// schedule); check and update are measured from the intended start.
	Ops     map[string]OpSummary            `json:"ops"`
	PerEdge map[string]map[string]OpSummary `json:"per_edge"`
	// Errors counts failures as "op:kind", e.g. "check:refused".
	Errors map[string]int64 `json:"errors"`
	// Throttled counts 429 answers by op (events beyond the edge's
	// per-address limit: the whole simulated fleet shares one address).
	// They are not errors.
	Throttled map[string]int64 `json:"throttled,omitempty"`
	Timeline  []Point          `json:"timeline"`
	// OriginFetches is capstan_edge_origin_fetches_total per edge at the
	// start and the end of the run (-1 when /metrics did not answer).
	OriginFetches map[string][2]float64 `json:"origin_fetches"`
	// OriginFetchesDelta is the sum over the edges of end minus start.
	OriginFetchesDelta float64 `json:"origin_fetches_delta"`

	Storm *StormResult `json:"storm,omitempty"`
	Kill  *KillResult  `json:"kill,omitempty"`
}

// StormResult is the release-storm measurement.
type StormResult struct {
	Version string `json:"version"`
	// At is when the channel was pointed at Version, seconds into the run.
	At float64 `json:"at_s"`
	// T50 and T99 are seconds from At until 50 % and 99 % of the devices
	// ran Version; -1 when it did not happen before the end.
	T50 float64 `json:"t50_s"`
	T99 float64 `json:"t99_s"`
	// Updated is the share of devices on Version at the end (0–1).
	Updated float64 `json:"updated"`
	// OriginFetches is the number of origin fetches all edges sent from
	// At to the end: with one pull per object per edge it stays near
	// edges × objects, whatever the fleet size.
	OriginFetches float64 `json:"origin_fetches"`
	// Propagation is, per edge, the seconds from At until the edge's
	// check answer named Version (polled every 10 ms); -1 when it never
	// did. PropagationMax is the slowest edge.
	Propagation    map[string]float64 `json:"propagation_s"`
	PropagationMax float64            `json:"propagation_max_s"`
	Error          string             `json:"error,omitempty"`
}

// KillResult is the edge-kill measurement.
type KillResult struct {
	At    float64 `json:"at_s"`
	Error string  `json:"error,omitempty"`
	// FailedAfter counts failed checks and updates after the kill;
	// the goal is zero (devices fail over).
	FailedAfter int64 `json:"failed_after"`
}

// Run builds the fleet, runs the scenario and returns what it measured.
// It returns an error only when the run could not start; failures during
// the run are counted in the result.
func (b *Bench) Run(ctx context.Context) (*Result, error) {
	if b.ran.Swap(true) {
		return nil, errors.New("bench: Run called twice; make a new Bench")
	}
	if err := b.buildFleet(ctx, b.shares); err != nil {
		return nil, err
	}
	res := &Result{
		Scenario: b.cfg.Scenario, Mode: "closed", Concurrency: b.cfg.Concurrency, Devices: len(b.devices),
		Edges: b.cfg.Edges, App: b.cfg.App, Channel: b.cfg.Channel, Release: b.baseline.ref.Version,
		Fleet: b.fleet, Duration: b.cfg.Duration.Seconds(), OriginFetches: map[string][2]float64{},
	}
	if b.cfg.Rate > 0 {
		res.Mode, res.Rate = "open", b.cfg.Rate
	}
	before := b.scrapeFetches(ctx)
	start := time.Now()
	res.Started = start
	b.rec = NewRecorder(start, b.cfg.Window)

	var counts [5]atomic.Int64
	var failedAfterKill atomic.Int64
	var killed atomic.Bool
	var next atomic.Uint64
	op := func(ctx context.Context, intended time.Time) {
		d := b.devices[(next.Add(1)-1)%uint64(len(b.devices))]
		o := b.session(ctx, d, intended)
		counts[o].Add(1)
		if (o == outCheckFailed || o == outUpdateFailed) && killed.Load() {
			failedAfterKill.Add(1)
		}
	}

	bg, stopBg := context.WithCancel(ctx)
	var bgWG sync.WaitGroup
	if b.cfg.Scenario == ScenarioStorm {
		res.Storm = &StormResult{Version: b.cfg.StormVersion, T50: -1, T99: -1}
		bgWG.Add(1)
		go func() {
			defer bgWG.Done()
			b.storm(bg, start, res.Storm)
		}()
	}
	if b.cfg.Scenario == ScenarioEdgeKill {
		res.Kill = &KillResult{}
		bgWG.Add(1)
		go func() {
			defer bgWG.Done()
			if !sleepCtx(bg, time.Until(start.Add(b.cfg.KillAfter))) {
				return
			}
			res.Kill.At = time.Since(start).Seconds()
			killed.Store(true)
			if err := b.cfg.Kill(bg); err != nil {
				res.Kill.Error = err.Error()
			}
			b.cfg.Logger.Info("edge kill done", "at_s", res.Kill.At, "err", res.Kill.Error)
		}()
	}
	if b.cfg.Progress != nil {
		bgWG.Add(1)
		go func() {
			defer bgWG.Done()
			b.progress(bg, start, &counts)
		}()
	}

	sched := schedule{rate: b.cfg.Rate, concurrency: b.cfg.Concurrency, duration: b.cfg.Duration}
	res.Sessions = sched.run(ctx, op)
	elapsed := time.Since(start)
	stopBg()
	bgWG.Wait()
	if b.cfg.Progress != nil {
		fmt.Fprint(b.cfg.Progress, "\r\033[K")
	}
	if b.cfg.Rate > 0 {
		due := int64(math.Ceil(b.cfg.Duration.Seconds() * b.cfg.Rate))
		res.Unstarted = max(due-res.Sessions, 0)
	}

	after := b.scrapeFetches(context.WithoutCancel(ctx))
	for _, e := range b.cfg.Edges {
		res.OriginFetches[e] = [2]float64{before[e], after[e]}
		if before[e] >= 0 && after[e] >= 0 {
			res.OriginFetchesDelta += after[e] - before[e]
		}
	}
	if res.Storm != nil && res.Storm.Error == "" {
		res.Storm.Updated = b.updatedShare()
	}
	if res.Kill != nil {
		res.Kill.FailedAfter = failedAfterKill.Load()
	}
	res.Elapsed = elapsed.Seconds()
	res.UpToDate = counts[outUpToDate].Load()
	res.Blocked = counts[outBlocked].Load()
	res.Updates = counts[outUpdated].Load()
	res.FailedChecks = counts[outCheckFailed].Load()
	res.FailedUpdates = counts[outUpdateFailed].Load()
	res.Failovers = b.failovers.Load()
	res.PatchFallbacks = b.fallbacks.Load()
	res.SessionsPerSec = float64(res.Sessions) / elapsed.Seconds()
	res.UpdatesPerSec = float64(res.Updates) / elapsed.Seconds()
	res.Bytes, res.PatchBytes, res.BlobBytes = b.bytes.Load(), b.patchBytes.Load(), b.blobBytes.Load()
	res.BytesPerSec = float64(res.Bytes) / elapsed.Seconds()
	res.EventsSupported = b.cfg.Events && !b.eventsOff.Load()
	snap := b.rec.Snapshot(elapsed)
	res.Ops, res.PerEdge, res.Errors, res.Throttled, res.Timeline = snap.Ops, snap.PerEdge, snap.Errors, snap.Throttled, snap.Timeline
	return res, nil
}

// storm points the channel at the storm version at StormAfter and tracks
// the share of devices on it every 50 ms until ctx ends.
func (b *Bench) storm(ctx context.Context, start time.Time, sr *StormResult) {
	if !sleepCtx(ctx, time.Until(start.Add(b.cfg.StormAfter))) {
		sr.Error = "the run ended before the storm"
		return
	}
	fetches := b.scrapeFetches(ctx)
	at := time.Now()
	sr.At = at.Sub(start).Seconds()
	view, err := b.cfg.Origin.SetChannel(ctx, b.cfg.App, b.cfg.Channel, b.cfg.StormVersion, nil, nil)
	if err != nil {
		sr.Error = fmt.Sprintf("bench: point %s at %s: %v", b.cfg.Channel, b.cfg.StormVersion, err)
		b.cfg.Logger.Warn("storm", "err", sr.Error)
		return
	}
	b.cfg.Logger.Info("storm: channel now serves the new release", "version", b.cfg.StormVersion, "at_s", sr.At)
	b.popMu.Lock()
	b.newest = view.Release.ID
	b.popMu.Unlock()
	var pwg sync.WaitGroup
	var pmu sync.Mutex
	sr.Propagation = map[string]float64{}
	for _, e := range b.cfg.Edges {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			d := b.propagation(ctx, e, at, view.Release.ID)
			pmu.Lock()
			sr.Propagation[e] = d
			if d < 0 || sr.PropagationMax >= 0 && d > sr.PropagationMax {
				sr.PropagationMax = d
			}
			pmu.Unlock()
		}()
	}
	defer pwg.Wait()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	defer func() {
		after := b.scrapeFetches(context.WithoutCancel(ctx))
		for e, v := range after {
			if v >= 0 && fetches[e] >= 0 {
				sr.OriginFetches += v - fetches[e]
			}
		}
		b.popMu.Lock()
		defer b.popMu.Unlock()
		if !b.t50.IsZero() {
			sr.T50 = b.t50.Sub(at).Seconds()
		}
		if !b.t99.IsZero() {
			sr.T99 = b.t99.Sub(at).Seconds()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			b.rec.Mark(time.Now(), b.updatedShare())
			return
		case now := <-t.C:
			b.rec.Mark(now, b.updatedShare())
		}
	}
}

// propagation polls edge's check answer every 10 ms until its channel
// record names id, and returns the seconds since at, or -1 if ctx ended
// first.
func (b *Bench) propagation(ctx context.Context, edge string, at time.Time, id release.Hash) float64 {
	q := url.Values{}
	q.Set("app", b.cfg.App)
	q.Set("channel", b.cfg.Channel)
	q.Set("device", b.cfg.DevicePrefix+"propagation")
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		var got release.Hash
		_, err := get(ctx, b.http, edge+"/v1/check?"+q.Encode(), b.cfg.Timeout, func(r *response) error {
			var ans wire.CheckAnswer
			if err := json.Unmarshal(r.Body, &ans); err != nil || ans.Channel == nil {
				return fmt.Errorf("bench: decode check answer: %v", err)
			}
			ch, err := ans.Channel.Channel()
			if err != nil {
				return err
			}
			got = ch.Release.ID
			return nil
		})
		if err == nil && got == id {
			return time.Since(at).Seconds()
		}
		select {
		case <-ctx.Done():
			return -1
		case <-t.C:
		}
	}
}

// scrapeFetches reads capstan_edge_origin_fetches_total from every edge's
// /metrics; an edge that does not answer gets -1.
func (b *Bench) scrapeFetches(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	for _, e := range b.cfg.Edges {
		out[e] = -1
		if ctx.Err() != nil {
			continue
		}
		_, _ = get(ctx, b.http, e+"/metrics", 2*time.Second, func(r *response) error {
			out[e] = metricValue(r.Body, "capstan_edge_origin_fetches_total")
			return nil
		})
	}
	return out
}

// metricValue returns the value of an unlabelled metric in a Prometheus
// text exposition, or -1.
func metricValue(body []byte, name string) float64 {
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (len(rest) > 0 && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil {
			return v
		}
	}
	return -1
}

// sleepCtx waits for d or until ctx ends, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// progress writes a one-line status every second until ctx ends.
func (b *Bench) progress(ctx context.Context, start time.Time, counts *[5]atomic.Int64) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		el := time.Since(start)
		checks, p99 := b.rec.quick("check")
		upd := counts[outUpdated].Load()
		failed := counts[outCheckFailed].Load() + counts[outUpdateFailed].Load()
		line := fmt.Sprintf("\r\033[K%5.1fs/%s  checks %d (%.0f/s, p99 %s)  updates %d  failed %d  %.1f MB/s",
			el.Seconds(), b.cfg.Duration, checks, float64(checks)/el.Seconds(), p99.Round(10*time.Microsecond),
			upd, failed, float64(b.bytes.Load())/el.Seconds()/1e6)
		if b.cfg.Scenario == ScenarioStorm {
			line += fmt.Sprintf("  on new release %.1f%%", 100*b.updatedShare())
		}
		fmt.Fprint(b.cfg.Progress, line)
	}
}
