package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sort"

	"github.com/Masterminds/semver/v3"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// FleetClass is one class of the fleet as built: which releases its
// devices started on, and how many there were.
type FleetClass struct {
	Class    string   `json:"class"`
	Devices  int      `json:"devices"`
	Versions []string `json:"versions"`
}

// probe asks the first edge that answers what the channel serves now.
func (b *Bench) probe(ctx context.Context) (*relInfo, error) {
	q := url.Values{}
	q.Set("app", b.cfg.App)
	q.Set("channel", b.cfg.Channel)
	q.Set("device", b.cfg.DevicePrefix+"probe")
	if b.cfg.NativeVersion != "" {
		q.Set("native", b.cfg.NativeVersion)
	}
	var errs []error
	for _, edge := range b.cfg.Edges {
		var ans wire.CheckAnswer
		_, err := get(ctx, b.http, edge+"/v1/check?"+q.Encode(), b.cfg.Timeout, func(r *response) error {
			return json.Unmarshal(r.Body, &ans)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", edge, err))
			continue
		}
		if ans.Channel == nil {
			return nil, fmt.Errorf("bench: %s answered a check without a channel record", edge)
		}
		ch, err := ans.Channel.Channel()
		if err != nil {
			return nil, fmt.Errorf("bench: channel record from %s: %w", edge, err)
		}
		if ch.Release.ID.IsZero() {
			return nil, fmt.Errorf("bench: channel %s serves the builtin bundle; upload a release first", ch.Key())
		}
		if ans.Release != nil && ans.Release.ID() == ch.Release.ID {
			return b.releaseFromEnvelope(ctx, ans.Release, ch.Release)
		}
		return b.fetchRelease(ctx, ch.Release.ID)
	}
	return nil, fmt.Errorf("bench: no edge answered the first check: %w", errors.Join(errs...))
}

// fetchRelease gets a release manifest from the edges by ID.
func (b *Bench) fetchRelease(ctx context.Context, id release.Hash) (*relInfo, error) {
	if ri := b.knownRelease(id); ri != nil {
		return ri, nil
	}
	var errs []error
	for _, edge := range b.cfg.Edges {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var env *release.Envelope
		_, err := get(ctx, b.http, edge+"/v1/releases/"+id.String(), b.cfg.Timeout, func(r *response) error {
			var err error
			env, err = release.DecodeEnvelope(r.Body)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", edge, err))
			continue
		}
		doc, _, err := env.Release()
		if err != nil {
			return nil, fmt.Errorf("bench: release %s: %w", id, err)
		}
		return b.releaseFromEnvelope(ctx, env, release.Ref{ID: id, Version: doc.Version})
	}
	return nil, fmt.Errorf("bench: release %s: %w", id, errors.Join(errs...))
}

// olderReleases resolves the releases the fleet may start on that are older
// than cur, oldest first.
func (b *Bench) olderReleases(ctx context.Context, cur *relInfo) ([]*relInfo, error) {
	var ids []release.Hash
	var records []release.Record
	needOrigin := len(b.cfg.Releases) == 0
	for _, r := range b.cfg.Releases {
		if _, err := release.ParseHash(r); err != nil {
			needOrigin = true
		}
	}
	if needOrigin && b.cfg.Origin != nil {
		var err error
		records, err = b.cfg.Origin.Releases(ctx, b.cfg.App)
		if err != nil {
			return nil, fmt.Errorf("bench: list releases on the origin: %w", err)
		}
	}
	if len(b.cfg.Releases) == 0 {
		for _, r := range records {
			ids = append(ids, r.ID)
		}
	}
	for _, r := range b.cfg.Releases {
		if h, err := release.ParseHash(r); err == nil {
			ids = append(ids, h)
			continue
		}
		found := false
		for _, rec := range records {
			if rec.Version == r {
				ids, found = append(ids, rec.ID), true
			}
		}
		if !found {
			if b.cfg.Origin == nil {
				return nil, fmt.Errorf("bench: release %q: versions need the origin API (CAPSTAN_SERVER, CAPSTAN_API_KEY); pass release IDs otherwise", r)
			}
			return nil, fmt.Errorf("bench: the origin has no release %q of %s", r, b.cfg.App)
		}
	}
	curV, err := semver.NewVersion(cur.ref.Version)
	if err != nil {
		return nil, fmt.Errorf("bench: current release: %w", err)
	}
	var out []*relInfo
	seen := map[release.Hash]bool{}
	for _, id := range ids {
		if seen[id] || id == cur.id() {
			continue
		}
		seen[id] = true
		ri, err := b.fetchRelease(ctx, id)
		if err != nil {
			return nil, err
		}
		v, err := semver.NewVersion(ri.ref.Version)
		if err != nil || !v.LessThan(curV) {
			continue // newer than what the channel serves: no device runs it yet
		}
		out = append(out, ri)
	}
	sort.Slice(out, func(i, j int) bool {
		return semver.MustParse(out[i].ref.Version).LessThan(semver.MustParse(out[j].ref.Version))
	})
	return out, nil
}

// buildFleet creates the devices and spreads them over releases.
func (b *Bench) buildFleet(ctx context.Context, shares []share) error {
	cur, err := b.probe(ctx)
	if err != nil {
		return err
	}
	b.baseline = cur
	older, err := b.olderReleases(ctx, cur)
	if err != nil {
		return err
	}
	var prev *relInfo
	if len(older) > 0 {
		prev, older = older[len(older)-1], older[:len(older)-1]
	}
	// What each class runs; a class without a release moves to the next
	// newer class that has one.
	classes := map[string][]*relInfo{classCurrent: {cur}, classNone: {nil}}
	switch {
	case prev != nil:
		classes[classPrev] = []*relInfo{prev}
	default:
		classes[classPrev] = []*relInfo{nil}
	}
	switch {
	case len(older) > 0:
		classes[classOlder] = older
	default:
		classes[classOlder] = classes[classPrev]
	}
	// Counts by largest remainder, so they add up to Devices exactly.
	n := b.cfg.Devices
	counts := make([]int, len(shares))
	rem := make([]float64, len(shares))
	left := n
	for i, s := range shares {
		exact := s.pct * float64(n) / 100
		counts[i] = int(exact)
		rem[i] = exact - float64(counts[i])
		left -= counts[i]
	}
	for ; left > 0; left-- {
		best := 0
		for i := range rem {
			if rem[i] > rem[best] {
				best = i
			}
		}
		counts[best]++
		rem[best] = -1
	}
	starts := make([]*relInfo, 0, n)
	b.fleet = nil
	for i, s := range shares {
		rels := classes[s.class]
		fc := FleetClass{Class: s.class, Devices: counts[i]}
		for _, r := range rels {
			fc.Versions = append(fc.Versions, r.version())
		}
		b.fleet = append(b.fleet, fc)
		for j := range counts[i] {
			starts = append(starts, rels[j%len(rels)])
		}
	}
	// Shuffle so classes interleave in the round-robin of sessions.
	rng := rand.New(rand.NewPCG(uint64(b.cfg.Seed), 0x9e3779b97f4a7c15))
	rng.Shuffle(len(starts), func(i, j int) { starts[i], starts[j] = starts[j], starts[i] })
	b.devices = make([]*simDevice, n)
	b.pop = map[release.Hash]int{}
	ne := len(b.cfg.Edges)
	for i := range n {
		order := make([]int, ne)
		for k := range ne {
			order[k] = (i + k) % ne
		}
		b.devices[i] = &simDevice{
			id:    fmt.Sprintf("%s%06d", b.cfg.DevicePrefix, i),
			order: order,
			cur:   starts[i],
			start: starts[i],
		}
		b.pop[starts[i].id()]++
	}
	return nil
}
