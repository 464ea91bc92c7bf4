package origin

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/internal/lifetime"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/wire"

	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/stats"
)

// The timeline answers "how many devices run each release, over time" and
// "what happened in each interval" for the console. Devices are counted
// from an adaptive sample (see docs/decisions/121-adoption-timeline.md):
// exact while a channel has at most timelineSample devices, then a
// 1-in-2^level sample of device ids, so memory stays bounded whatever the
// fleet size.
const (
	// timelineSample bounds the devices remembered per channel.
	timelineSample = 4096
	// timelineActive: a device not heard from for this long no longer
	// counts as running its release.
	timelineActive = 7 * 24 * time.Hour
	// timelineMaxReleases bounds the releases of one interval; more are
	// summed under "other".
	timelineMaxReleases = 12
	// timelineMaxChannels bounds the channels followed (events only count
	// for channels the origin knows, so this is a safety net).
	timelineMaxChannels = 4096
)

// timelineTiers are the interval widths and how many of each are kept:
// minutes for three hours (a rollout being watched), hours for thirty days.
var timelineTiers = [...]struct {
	width time.Duration
	n     int
}{{time.Minute, 180}, {time.Hour, 720}}

// otherRelease collects the releases of an interval past
// timelineMaxReleases.
var otherRelease = release.Hash{0: 0xff, 31: 0xff}

type sampleEntry struct {
	rel  release.Hash
	seen int64 // Unix ms of the latest event that named it
}

type tlRelease struct {
	version string
	devices uint64
	c       wire.Counters // event counts of the interval (device fields unused)
	rate    *tlRate
}

// tlRate is a release's totals on its channel as auto-pause saw them.
type tlRate struct {
	Rate    float64 `json:"rate"`
	Devices uint64  `json:"devices"`
	Failed  uint64  `json:"failed"`
}

type tlBucket struct {
	start int64 // Unix seconds; 0: never used
	rels  map[release.Hash]*tlRelease
	dirty bool // changed since the last save
}

type chanTimeline struct {
	level uint8
	devs  map[uint64]sampleEntry
	tiers [len(timelineTiers)][]tlBucket
	first int64 // Unix seconds of the first event
	dirty bool  // the sample changed since the last save
	// gone are the stored intervals whose ring slot was reused.
	gone []string
}

// timeline holds every channel's history, in memory.
type timeline struct {
	mu    sync.Mutex // guards chans
	chans map[string]*chanTimeline
}

func newTimeline() *timeline { return &timeline{chans: map[string]*chanTimeline{}} }

func (t *timeline) channel(key string, now time.Time) *chanTimeline {
	ct := t.chans[key]
	if ct == nil {
		if len(t.chans) >= timelineMaxChannels {
			return nil
		}
		ct = &chanTimeline{devs: map[uint64]sampleEntry{}, first: now.Unix()}
		for i, tier := range timelineTiers {
			ct.tiers[i] = make([]tlBucket, tier.n)
		}
		t.chans[key] = ct
	}
	return ct
}

// bucket returns the interval of tier that holds now, marked as changed.
func (ct *chanTimeline) bucket(tier int, now time.Time) *tlBucket {
	w := int64(timelineTiers[tier].width / time.Second)
	start := now.Unix() / w * w
	b := &ct.tiers[tier][(start/w)%int64(len(ct.tiers[tier]))]
	if b.start != start {
		if b.start != 0 {
			ct.gone = append(ct.gone, strconv.Itoa(tier)+"/"+strconv.FormatInt(b.start, 10))
		}
		*b = tlBucket{start: start, rels: map[release.Hash]*tlRelease{}}
	}
	b.dirty = true
	ct.dirty = true
	return b
}

func (b *tlBucket) rel(id release.Hash, version string) *tlRelease {
	r := b.rels[id]
	if r == nil {
		if len(b.rels) >= timelineMaxReleases {
			id, version = otherRelease, "other"
			if r = b.rels[id]; r != nil {
				return r
			}
		}
		r = &tlRelease{version: version}
		b.rels[id] = r
	}
	return r
}

// runsRelease reports whether an event says which release the device runs
// from now on: a check names the running release, an install the one just
// swapped in, a confirm the one found healthy.
func runsRelease(action string) bool {
	return action == stats.ActionCheck || action == stats.ActionInstall || action == stats.ActionConfirm
}

// observe adds ingested events (all for known channels) to the timeline.
// rates returns a release's durable stats on a channel, for the failure
// rate auto-pause compares with its threshold.
func (t *timeline) observe(now time.Time, events []stats.Event, rates func(app, ch string, id release.Hash) (wire.ReleaseStats, bool)) {
	type touchedKey struct {
		app, ch string
		id      release.Hash
		version string
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	byChan := map[string]*chanTimeline{}
	touched := map[touchedKey]bool{}
	nowMS := now.UnixMilli()
	for i := range events {
		e := &events[i]
		key := e.App + "/" + e.Channel
		ct := byChan[key]
		if ct == nil {
			if ct = t.channel(key, now); ct == nil {
				continue
			}
			byChan[key] = ct
		}
		version := e.Version
		if e.Release.IsZero() {
			version = wire.Builtin
		}
		touched[touchedKey{e.App, e.Channel, e.Release, version}] = true
		if runsRelease(e.Action) {
			at := e.Time
			if at <= 0 || at > nowMS+60_000 {
				at = nowMS // no clock, or a clock from the future
			}
			h := deviceHash(e.Device)
			if bits.LeadingZeros64(h) >= int(ct.level) {
				if cur, ok := ct.devs[h]; !ok || at >= cur.seen {
					ct.devs[h] = sampleEntry{rel: e.Release, seen: at}
				}
			}
		}
		for tier := range timelineTiers {
			r := ct.bucket(tier, now).rel(e.Release, version)
			switch e.Action {
			case stats.ActionCheck:
				r.c.Checks++
			case stats.ActionDownload:
				r.c.Downloads++
				r.c.Bytes += uint64(e.Bytes)
			case stats.ActionInstall:
				r.c.Installs++
			case stats.ActionConfirm:
				r.c.Confirms++
			case stats.ActionFail:
				r.c.Failures++
			case stats.ActionRevert:
				r.c.Reverts++
			}
		}
	}
	for tk := range touched {
		rs, ok := rates(tk.app, tk.ch, tk.id)
		if !ok {
			continue
		}
		ct := byChan[tk.app+"/"+tk.ch]
		for tier := range timelineTiers {
			ct.bucket(tier, now).rel(tk.id, tk.version).rate = &tlRate{Rate: rs.FailureRate, Devices: rs.Devices, Failed: rs.FailedDevices}
		}
	}
	for _, ct := range byChan {
		ct.settle(now)
	}
}

// settle drops devices gone quiet, thins the sample while it is over its
// bound, and writes the device counts into the current intervals.
func (ct *chanTimeline) settle(now time.Time) {
	cut := now.Add(-timelineActive).UnixMilli()
	for h, e := range ct.devs {
		if e.seen < cut {
			delete(ct.devs, h)
		}
	}
	for len(ct.devs) > timelineSample && ct.level < 63 {
		ct.level++
		for h := range ct.devs {
			if bits.LeadingZeros64(h) < int(ct.level) {
				delete(ct.devs, h)
			}
		}
	}
	counts := map[release.Hash]uint64{}
	for _, e := range ct.devs {
		counts[e.rel]++
	}
	for tier := range timelineTiers {
		b := ct.bucket(tier, now)
		for id, r := range b.rels {
			if _, ok := counts[id]; !ok {
				r.devices = 0
			}
		}
		for id, n := range counts {
			if r := b.rels[id]; r != nil {
				r.devices = n << ct.level
			} else if len(b.rels) < timelineMaxReleases {
				// Running but silent this interval: keep its count, its
				// version comes from an earlier interval.
				b.rels[id] = &tlRelease{devices: n << ct.level, version: ct.version(id)}
			}
		}
	}
}

// version finds a release's version in the intervals kept.
func (ct *chanTimeline) version(id release.Hash) string {
	if id.IsZero() {
		return wire.Builtin
	}
	for tier := range ct.tiers {
		for i := range ct.tiers[tier] {
			if r := ct.tiers[tier][i].rels[id]; r != nil && r.version != "" {
				return r.version
			}
		}
	}
	return ""
}

// TimelineRelease is one release in one interval of a timeline.
type TimelineRelease struct {
	Release release.Hash `json:"release"`
	Version string       `json:"version"`
	// Devices is the estimated number of devices running the release at
	// the end of the interval (each device counts once, under the release
	// its latest check, install or confirm named).
	Devices uint64 `json:"devices"`
	// Checks … Bytes count the events the origin received in the interval.
	Checks    uint64 `json:"checks"`
	Downloads uint64 `json:"downloads"`
	Installs  uint64 `json:"installs"`
	Confirms  uint64 `json:"confirms"`
	Failures  uint64 `json:"failures"`
	Reverts   uint64 `json:"reverts"`
	Bytes     uint64 `json:"bytes"`
	// FullBytes is what the interval's downloads would have cost had each
	// been the release's full bundle.
	FullBytes uint64 `json:"full_bytes"`
	// FailureRate, ReportedDevices and FailedDevices are the release's
	// totals on the channel as of the interval (what auto-pause compares
	// with its threshold); absent before the release had any report.
	FailureRate     *float64 `json:"failure_rate,omitempty"`
	ReportedDevices uint64   `json:"reported_devices,omitempty"`
	FailedDevices   uint64   `json:"failed_devices,omitempty"`
}

// TimelinePoint is one interval of a timeline.
type TimelinePoint struct {
	Start    time.Time         `json:"start"`
	Releases []TimelineRelease `json:"releases"`
}

// series returns the kept intervals of a channel's tier, oldest first,
// from its first event on. Intervals without events carry the device
// counts and rates of the one before.
func (t *timeline) series(app, ch string, tier int, now time.Time) (points []TimelinePoint, level uint8) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ct := t.chans[app+"/"+ch]
	points = []TimelinePoint{}
	if ct == nil {
		return points, 0
	}
	w := int64(timelineTiers[tier].width / time.Second)
	n := int64(timelineTiers[tier].n)
	last := now.Unix() / w
	var prev map[release.Hash]TimelineRelease
	for k := last - n + 1; k <= last; k++ {
		start := k * w
		if start+w <= ct.first {
			continue
		}
		b := ct.tiers[tier][k%n]
		cur := map[release.Hash]TimelineRelease{}
		if b.start == start {
			for id, r := range b.rels {
				tr := TimelineRelease{Release: id, Version: r.version, Devices: r.devices,
					Checks: r.c.Checks, Downloads: r.c.Downloads, Installs: r.c.Installs, Confirms: r.c.Confirms,
					Failures: r.c.Failures, Reverts: r.c.Reverts, Bytes: r.c.Bytes}
				if r.rate != nil {
					fr := r.rate.Rate
					tr.FailureRate, tr.ReportedDevices, tr.FailedDevices = &fr, r.rate.Devices, r.rate.Failed
				} else if p, ok := prev[id]; ok {
					tr.FailureRate, tr.ReportedDevices, tr.FailedDevices = p.FailureRate, p.ReportedDevices, p.FailedDevices
				}
				cur[id] = tr
			}
		} else {
			for id, p := range prev {
				if p.Devices > 0 || p.FailureRate != nil {
					cur[id] = TimelineRelease{Release: id, Version: p.Version, Devices: p.Devices,
						FailureRate: p.FailureRate, ReportedDevices: p.ReportedDevices, FailedDevices: p.FailedDevices}
				}
			}
		}
		pt := TimelinePoint{Start: time.Unix(start, 0).UTC(), Releases: make([]TimelineRelease, 0, len(cur))}
		for _, r := range cur {
			pt.Releases = append(pt.Releases, r)
		}
		sortTimelineReleases(pt.Releases)
		points = append(points, pt)
		prev = cur
	}
	return points, ct.level
}

func sortTimelineReleases(rs []TimelineRelease) {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && versionLess(rs[j].Version, rs[j-1].Version); j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

// The timeline is kept in the records store so that a restarted origin
// keeps its charts: only what changed is written, every
// timelineSaveEvery, and once more on Close.
//
//	t/<app>/<channel>/s              → timelineSample (the device sample)
//	t/<app>/<channel>/<tier>/<start> → timelineInterval
const (
	pfxTimeline       = "t/"
	timelineSaveEvery = 30 * time.Second
)

// timelineSampleRec is the stored device sample: devices as fixed-size
// records (hash, last seen in Unix ms, index into Releases).
type timelineSampleRec struct {
	Level    uint8          `json:"level"`
	First    int64          `json:"first"`
	Releases []release.Hash `json:"releases"`
	Devices  []byte         `json:"devices"`
}

const sampleRecLen = 8 + 8 + 2

// timelineIntervalRec is one stored interval.
type timelineIntervalRec struct {
	Releases []timelineRelRec `json:"releases"`
}

type timelineRelRec struct {
	ID      release.Hash `json:"id"`
	Version string       `json:"v,omitempty"`
	Devices uint64       `json:"d,omitempty"`
	// Counts are checks, downloads, installs, confirms, failures,
	// reverts and bytes.
	Counts [7]uint64 `json:"c"`
	Rate   *tlRate   `json:"r,omitempty"`
}

// changes returns what to write and delete to store every change since
// the last call, per channel, and marks it saved. If storing fails the
// caller gives the batch back with unsave.
func (t *timeline) changes() map[string]*timelineBatch {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]*timelineBatch{}
	for key, ct := range t.chans {
		if !ct.dirty {
			continue
		}
		b := &timelineBatch{set: map[string][]byte{}}
		base := pfxTimeline + key + "/"
		idx := map[release.Hash]uint16{}
		rec := timelineSampleRec{Level: ct.level, First: ct.first, Devices: make([]byte, 0, len(ct.devs)*sampleRecLen)}
		for h, e := range ct.devs {
			i, ok := idx[e.rel]
			if !ok {
				i = uint16(len(rec.Releases))
				idx[e.rel] = i
				rec.Releases = append(rec.Releases, e.rel)
			}
			rec.Devices = binary.BigEndian.AppendUint64(rec.Devices, h)
			rec.Devices = binary.BigEndian.AppendUint64(rec.Devices, uint64(e.seen))
			rec.Devices = binary.BigEndian.AppendUint16(rec.Devices, i)
		}
		b.set[base+"s"], _ = json.Marshal(rec)
		for tier := range ct.tiers {
			for i := range ct.tiers[tier] {
				bk := &ct.tiers[tier][i]
				if !bk.dirty {
					continue
				}
				bk.dirty = false
				var ir timelineIntervalRec
				for id, r := range bk.rels {
					c := r.c
					ir.Releases = append(ir.Releases, timelineRelRec{ID: id, Version: r.version, Devices: r.devices, Rate: r.rate,
						Counts: [7]uint64{c.Checks, c.Downloads, c.Installs, c.Confirms, c.Failures, c.Reverts, c.Bytes}})
				}
				b.set[base+strconv.Itoa(tier)+"/"+strconv.FormatInt(bk.start, 10)], _ = json.Marshal(ir)
			}
		}
		for _, g := range ct.gone {
			b.del = append(b.del, base+g)
		}
		ct.gone, ct.dirty = nil, false
		out[key] = b
	}
	return out
}

// timelineBatch is one channel's writes.
type timelineBatch struct {
	set map[string][]byte
	del []string
}

// unsave marks a channel changed again after its batch failed to store,
// so the next save writes it whole.
func (t *timeline) unsave(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ct := t.chans[key]; ct != nil {
		ct.dirty = true
		for tier := range ct.tiers {
			for i := range ct.tiers[tier] {
				if ct.tiers[tier][i].start != 0 {
					ct.tiers[tier][i].dirty = true
				}
			}
		}
	}
}

// saveTimeline stores what changed, one transaction per channel, through
// db (the server's records, or at Shutdown a handle that outlives its
// lifetime).
func (s *Server) saveTimeline(db *records) {
	for key, b := range s.timeline.changes() {
		err := db.Update(func(txn store.Txn) error {
			for k, v := range b.set {
				if err := txn.Set(k, v); err != nil {
					return err
				}
			}
			for _, k := range b.del {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			s.timeline.unsave(key)
			s.log.Warn("store the console timeline", "channel", key, "err", err)
		}
	}
}

// timelineLoop saves the timeline now and then; Shutdown saves it once
// more.
func (s *Server) timelineLoop(ctx context.Context) {
	lifetime.Every(ctx, timelineSaveEvery, func(context.Context) { s.saveTimeline(s.db) })
}

// loadTimeline reads the stored timeline at start.
func (s *Server) loadTimeline() error {
	return s.db.View(func(txn store.Txn) error {
		return txn.Scan(pfxTimeline, func(key string, val []byte) error {
			if err := s.timeline.load(strings.TrimPrefix(key, pfxTimeline), val); err != nil {
				s.log.Warn("console timeline: skip a stored entry", "key", key, "err", err)
			}
			return nil
		})
	})
}

// load restores one stored entry; rest is the key after pfxTimeline.
func (t *timeline) load(rest string, val []byte) error {
	parts := strings.Split(rest, "/")
	if len(parts) != 3 && len(parts) != 4 {
		return fmt.Errorf("unexpected key")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ct := t.channel(parts[0]+"/"+parts[1], time.Now())
	if ct == nil {
		return fmt.Errorf("too many channels")
	}
	if len(parts) == 3 {
		var rec timelineSampleRec
		if err := json.Unmarshal(val, &rec); err != nil || len(rec.Devices)%sampleRecLen != 0 {
			return fmt.Errorf("bad sample: %v", err)
		}
		ct.level, ct.first = rec.Level, rec.First
		for b := rec.Devices; len(b) > 0; b = b[sampleRecLen:] {
			i := int(binary.BigEndian.Uint16(b[16:]))
			if i >= len(rec.Releases) {
				return fmt.Errorf("bad sample release index")
			}
			ct.devs[binary.BigEndian.Uint64(b)] = sampleEntry{seen: int64(binary.BigEndian.Uint64(b[8:])), rel: rec.Releases[i]}
		}
		return nil
	}
	tier, err := strconv.Atoi(parts[2])
	start, err2 := strconv.ParseInt(parts[3], 10, 64)
	if err != nil || err2 != nil || tier < 0 || tier >= len(timelineTiers) {
		return fmt.Errorf("bad interval key")
	}
	w := int64(timelineTiers[tier].width / time.Second)
	if start <= 0 || start%w != 0 {
		return fmt.Errorf("bad interval start")
	}
	var ir timelineIntervalRec
	if err := json.Unmarshal(val, &ir); err != nil {
		return err
	}
	b := &ct.tiers[tier][(start/w)%int64(len(ct.tiers[tier]))]
	if b.start > start {
		return nil // a newer interval holds the slot
	}
	*b = tlBucket{start: start, rels: map[release.Hash]*tlRelease{}}
	for _, r := range ir.Releases {
		if len(b.rels) >= timelineMaxReleases {
			break
		}
		c := r.Counts
		b.rels[r.ID] = &tlRelease{version: r.Version, devices: r.Devices, rate: r.Rate,
			c: wire.Counters{Checks: c[0], Downloads: c[1], Installs: c[2], Confirms: c[3], Failures: c[4], Reverts: c[5], Bytes: c[6]}}
	}
	return nil
}

// deviceHash is FNV-1a with the splitmix64 finaliser, as stats' sketches
// use: stable across processes, well mixed in the high bits the sample
// level looks at.
func deviceHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
