package origin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/stats"
	"github.com/capstan-ota/capstan/wire"
)

// Stats live under their own key prefix:
//
//	s/<app>/<channel>/<release id> → statsRecord
//	o/<app>/<channel>              → ChannelPolicy (auto-pause overrides)
const (
	pfxStats  = "s/"
	pfxPolicy = "o/"
)

func statsKey(app, ch string, id release.Hash) string {
	return pfxStats + app + "/" + ch + "/" + id.String()
}

// addCounters adds the exact counts of o to c (device estimates are
// merged from sketches instead).
func addCounters(c *wire.Counters, o wire.Counters) {
	c.Checks += o.Checks
	c.Downloads += o.Downloads
	c.Installs += o.Installs
	c.Confirms += o.Confirms
	c.Failures += o.Failures
	c.Reverts += o.Reverts
	c.Bytes += o.Bytes
}

// statsRecord is the stored form of one release's stats on one channel.
type statsRecord struct {
	App     string       `json:"app"`
	Channel string       `json:"channel"`
	Release release.Hash `json:"release"`
	Version string       `json:"version"`
	wire.Counters
	DevSketch  []byte `json:"dev_sketch,omitempty"`
	FailSketch []byte `json:"fail_sketch,omitempty"`
	// AddrSketch counts the distinct addresses failures came from.
	AddrSketch []byte          `json:"addr_sketch,omitempty"`
	AutoPaused *wire.AutoPause `json:"auto_paused,omitempty"`
}

func (r *statsRecord) sketches() (dev, fail stats.Sketch) {
	dev.UnmarshalBinary(r.DevSketch)
	fail.UnmarshalBinary(r.FailSketch)
	return dev, fail
}

func (r *statsRecord) addrSketch() (addr stats.Sketch) {
	addr.UnmarshalBinary(r.AddrSketch)
	return addr
}

// view fills the estimated fields.
func (r *statsRecord) view() wire.ReleaseStats {
	dev, fail := r.sketches()
	c := r.Counters
	c.Devices, c.FailedDevices = dev.Estimate(), fail.Estimate()
	c.FailureRate = rate(c.FailedDevices, c.Devices)
	addr := r.addrSketch()
	c.FailedAddresses = addr.Estimate()
	return wire.ReleaseStats{Version: r.Version, Release: r.Release, Counters: c, AutoPaused: r.AutoPaused}
}

func rate(failed, devices uint64) float64 {
	if devices == 0 {
		return 0
	}
	if failed > devices {
		return 1
	}
	return float64(failed) / float64(devices)
}

// eventsAuth says whether r carries an events token of the cluster
// (Config.EventsToken, or one derived from a cluster key:
// Config.EventsTokens), so comes from an edge; and whether one is required
// (some token is configured).
func (s *Server) eventsAuth(r *http.Request) (fromEdge, required bool) {
	var toks []string
	if s.cfg.EventsToken != "" {
		toks = append(toks, s.cfg.EventsToken)
	}
	if s.cfg.EventsTokens != nil {
		toks = append(toks, s.cfg.EventsTokens()...)
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	for _, tok := range toks {
		if tok != "" && ok && subtle.ConstantTimeCompare([]byte(got), []byte(tok)) == 1 {
			return true, true
		}
	}
	return false, len(toks) > 0
}

// IngestResult says what happened to a batch of events.
type IngestResult struct {
	Accepted int `json:"accepted"`
	// Dropped counts events for apps, channels or releases the origin does
	// not know (they would otherwise let anyone create keys without end).
	Dropped int `json:"dropped"`
}

// IngestEvents adds device events to the durable counters, then pauses any
// rollout whose failure rate crossed its threshold. Events must be
// validated (stats.DecodeBatch does).
func (s *Server) IngestEvents(ctx context.Context, events []stats.Event) (IngestResult, error) {
	var res IngestResult
	if err := ctx.Err(); err != nil {
		return res, err
	}
	touched := map[string]bool{}
	var accepted []stats.Event
	s.statsMu.Lock()
	err := s.db.Update(func(txn store.Txn) error {
		// The transaction may run more than once: count from zero.
		res, touched, accepted = IngestResult{}, map[string]bool{}, accepted[:0]
		// Sketches stay decoded while the batch is applied and are encoded
		// once per record: a batch is up to 2,000 events, a sketch 16 KiB.
		recs := map[string]*batchRecord{}
		known := map[string]bool{}
		for i := range events {
			e := &events[i]
			if err := e.Validate(); err != nil {
				res.Dropped++
				continue
			}
			key := statsKey(e.App, e.Channel, e.Release)
			br := recs[key]
			if br == nil {
				if known[key] {
					// Seen in this batch and unknown to the origin.
					res.Dropped++
					continue
				}
				known[key] = true
				rec, err := loadStatsRecord(txn, e)
				if err != nil {
					return err
				}
				if rec == nil {
					res.Dropped++
					continue
				}
				br = &batchRecord{rec: rec}
				br.dev, br.fail = rec.sketches()
				br.addr = rec.addrSketch()
				recs[key] = br
			}
			applyEvent(br, e)
			res.Accepted++
			accepted = append(accepted, *e)
		}
		for key, br := range recs {
			br.rec.DevSketch, _ = br.dev.MarshalBinary()
			br.rec.FailSketch, _ = br.fail.MarshalBinary()
			br.rec.AddrSketch, _ = br.addr.MarshalBinary()
			if err := setJSON(txn, key, br.rec); err != nil {
				return err
			}
			touched[key] = true
		}
		return countNatives(txn, events)
	})
	s.statsMu.Unlock()
	if err != nil {
		return IngestResult{}, fmt.Errorf("origin: store events: %w", err)
	}
	s.timeline.observe(s.cfg.Now(), accepted, s.releaseStats)
	for key := range touched {
		s.maybeAutoPause(key)
	}
	return res, nil
}

// loadStatsRecord returns the stored record for e's key, a new one when e
// names a known app, channel and release, or nil when it does not.
func loadStatsRecord(txn store.Txn, e *stats.Event) (*statsRecord, error) {
	var rec statsRecord
	switch err := getJSON(txn, statsKey(e.App, e.Channel, e.Release), &rec); {
	case err == nil:
		return &rec, nil
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}
	if _, err := txn.Get(channelKey(e.App, e.Channel)); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	rec = statsRecord{App: e.App, Channel: e.Channel, Release: e.Release, Version: wire.Builtin}
	if !e.Release.IsZero() {
		name, err := txn.Get(pfxReleaseID + e.Release.String())
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		app, version, ok := strings.Cut(string(name), "/")
		if !ok || app != e.App {
			return nil, nil
		}
		rec.Version = version
	}
	return &rec, nil
}

// batchRecord is a stats record being updated by a batch of events, its
// sketches decoded.
type batchRecord struct {
	rec             *statsRecord
	dev, fail, addr stats.Sketch
}

func applyEvent(br *batchRecord, e *stats.Event) {
	rec, dev, fail := br.rec, &br.dev, &br.fail
	// A failure counts once per device (the sketch) and once per address;
	// an event without one (an in-process caller) counts as one unknown
	// address.
	failedFrom := func() {
		fail.Add(e.Device)
		br.addr.Add("addr:" + e.Addr)
	}
	dev.Add(e.Device)
	switch e.Action {
	case stats.ActionCheck:
		rec.Checks += e.N()
	case stats.ActionDownload:
		rec.Downloads++
		rec.Bytes += uint64(e.Bytes)
	case stats.ActionInstall:
		rec.Installs++
	case stats.ActionConfirm:
		rec.Confirms++
	case stats.ActionFail:
		rec.Failures++
		if e.Cause != stats.CauseDownload {
			failedFrom()
		}
	case stats.ActionRevert:
		rec.Reverts++
		failedFrom()
	}
}

// Stats reports an app's counters, for one channel or all ("").
func (s *Server) Stats(app, channel string) (*wire.StatsReport, error) {
	if _, err := s.st.app(app); err != nil {
		return nil, fmt.Errorf("origin: stats: %w", err)
	}
	prefix := pfxStats + app + "/"
	if channel != "" {
		if _, _, err := s.st.channel(app, channel); err != nil {
			return nil, fmt.Errorf("origin: stats: %w", err)
		}
		prefix += channel + "/"
	}
	var recs []statsRecord
	err := s.db.View(func(txn store.Txn) error {
		return iterate(txn, prefix, func(_ string, b []byte) error {
			var r statsRecord
			if err := json.Unmarshal(b, &r); err != nil {
				return err
			}
			recs = append(recs, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("origin: stats: %w", err)
	}
	envs, err := s.st.channels(app)
	if err != nil {
		return nil, fmt.Errorf("origin: stats: %w", err)
	}
	rep := &wire.StatsReport{App: app, Channels: []wire.ChannelStats{}}
	byName := map[string]*wire.ChannelStats{}
	var appDev, appFail stats.Sketch
	chDev, chFail := map[string]*stats.Sketch{}, map[string]*stats.Sketch{}
	for _, env := range envs {
		c, err := env.Channel()
		if err != nil || (channel != "" && c.Channel != channel) {
			continue
		}
		rep.Channels = append(rep.Channels, wire.ChannelStats{Channel: c.Channel, Serving: c.Release.Version, RolloutBPS: c.RolloutBPS, Paused: c.Paused, Releases: []wire.ReleaseStats{}})
		chDev[c.Channel], chFail[c.Channel] = &stats.Sketch{}, &stats.Sketch{}
	}
	for i := range rep.Channels {
		byName[rep.Channels[i].Channel] = &rep.Channels[i]
		if rep.Channels[i].Serving == "" {
			rep.Channels[i].Serving = wire.Builtin
		}
	}
	for i := range recs {
		r := &recs[i]
		cs := byName[r.Channel]
		if cs == nil {
			continue
		}
		cs.Releases = append(cs.Releases, r.view())
		addCounters(&cs.Totals, r.Counters)
		addCounters(&rep.Totals, r.Counters)
		dev, fail := r.sketches()
		chDev[r.Channel].Merge(&dev)
		chFail[r.Channel].Merge(&fail)
		appDev.Merge(&dev)
		appFail.Merge(&fail)
	}
	for i := range rep.Channels {
		cs := &rep.Channels[i]
		cs.Totals.Devices, cs.Totals.FailedDevices = chDev[cs.Channel].Estimate(), chFail[cs.Channel].Estimate()
		cs.Totals.FailureRate = rate(cs.Totals.FailedDevices, cs.Totals.Devices)
		sort.Slice(cs.Releases, func(a, b int) bool { return versionLess(cs.Releases[b].Version, cs.Releases[a].Version) })
	}
	rep.Totals.Devices, rep.Totals.FailedDevices = appDev.Estimate(), appFail.Estimate()
	rep.Totals.FailureRate = rate(rep.Totals.FailedDevices, rep.Totals.Devices)
	return rep, nil
}

// versionLess orders semver versions, with "builtin" first.
func versionLess(a, b string) bool {
	va, errA := release.ParseVersion(a)
	vb, errB := release.ParseVersion(b)
	switch {
	case errA != nil && errB != nil:
		return a < b
	case errA != nil:
		return true
	case errB != nil:
		return false
	}
	return va.LessThan(vb)
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	fromEdge, required := s.eventsAuth(r)
	if required && !fromEdge {
		s.fail(w, fmt.Errorf("%w: events need the cluster events token", errUnauthenticated))
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, stats.MaxEdgeBody+1))
	if err != nil {
		s.fail(w, badRequest("read events: %v", err))
		return
	}
	if len(b) > stats.MaxEdgeBody {
		s.fail(w, badRequest("events body is over %d bytes", stats.MaxEdgeBody))
		return
	}
	events, dropped, err := stats.DecodeBatch(b, stats.MaxEdgeBatch)
	if err != nil {
		s.fail(w, badRequest("%v", err))
		return
	}
	if !fromEdge {
		// Not an edge of the cluster: the addresses it names are made
		// up; the events come from where the request came from.
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		a, _ := netip.ParseAddr(host)
		for i := range events {
			events[i].Addr = stats.AddrOf(a)
		}
	}
	res, err := s.IngestEvents(r.Context(), events)
	if err != nil {
		s.fail(w, err)
		return
	}
	res.Dropped += dropped
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	if _, err := s.authorize(r, wire.RoleReader, app); err != nil {
		s.fail(w, err)
		return
	}
	rep, err := s.Stats(app, r.URL.Query().Get("channel"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
