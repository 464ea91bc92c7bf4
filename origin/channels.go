package origin

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/capstan-ota/capstan/internal/lifetime"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// nextChannelRecord builds, signs and stores the next record of a channel
// inside txn. mutate receives a copy of the previous record (or a fresh one)
// and the previous record itself (nil for a new channel). Callers hold
// chanMu, so Seq only grows.
func (s *Server) nextChannelRecord(txn store.Txn, app, ch string, mutate func(c, prev *release.Channel) error) (*release.Envelope, error) {
	var prevEnv release.Envelope
	var prev *release.Channel
	switch err := getJSON(txn, channelKey(app, ch), &prevEnv); {
	case err == nil:
		p, err := prevEnv.Channel()
		if err != nil {
			return nil, fmt.Errorf("stored channel record: %w", err)
		}
		prev = p
	case errors.Is(err, ErrNotFound):
	default:
		return nil, err
	}
	now := s.cfg.Now().UTC()
	c := &release.Channel{Type: release.TypeChannel, App: app, Channel: ch, RolloutBPS: release.FullRollout}
	if prev != nil {
		cp := *prev
		c = &cp
	} else {
		// Every gossip node refuses more channels per app than this, so
		// the origin must not sign them.
		n := 0
		if err := iterate(txn, pfxChannel+app+"/", func(string, []byte) error { n++; return nil }); err != nil {
			return nil, err
		}
		if n >= release.MaxChannelsPerApp {
			return nil, badRequest("app %s already has %d channels, the most an app may have", app, n)
		}
		// The first channel of an app becomes its default channel.
		has, err := appHasDefault(txn, app)
		if err != nil {
			return nil, err
		}
		c.Default = !has
	}
	if err := mutate(c, prev); err != nil {
		return nil, err
	}
	if err := keepStable(txn, c, prev); err != nil {
		return nil, err
	}
	if err := s.sealRefs(txn, c); err != nil {
		return nil, err
	}
	// Seq is at least the clock in milliseconds, so it keeps growing even
	// after the database is restored from an older backup.
	c.Seq = uint64(now.UnixMilli())
	if prev != nil && c.Seq <= prev.Seq {
		c.Seq = prev.Seq + 1
	}
	// Whole seconds: a record rides in every update answer, and
	// nanoseconds cost 20 bytes there for nothing (expiry is coarse).
	c.Issued = now.UTC().Truncate(time.Second)
	c.Expires = c.Issued.Add(s.cfg.ChannelTTL)
	b, err := c.Encode()
	if err != nil {
		return nil, badRequest("%v", err)
	}
	env := release.Seal(b, s.signingKey())
	if err := putChannel(txn, c, env); err != nil {
		return nil, err
	}
	return env, nil
}

// keepStable gives a record that serves its release to only part of the
// fleet (a partial or paused rollout) without a Stable release the one the
// channel served to everyone before, from the channel's history: devices
// outside a rollout keep getting what they were served, whichever way the
// record got there (channel set --rollout after a promote at 100 %, a
// pause at 100 %, a record signed before this rule). See decision 102.
func keepStable(txn store.Txn, c, prev *release.Channel) error {
	if c.RolloutBPS >= release.FullRollout && !c.Paused {
		c.Stable = nil // everyone gets Release; nothing falls back
		return nil
	}
	if prev == nil || c.Stable != nil || c.Release.ID.IsZero() {
		return nil
	}
	hist, err := historyIn(txn, c.App, c.Channel)
	if err != nil {
		return err
	}
	if ref, ok := servedBefore(hist, c.Release.ID); ok {
		c.Stable = &ref
	}
	return nil
}

// servedBefore returns the release the channel served to everyone before
// it served cur: the newest earlier record that served another release,
// taken whole when it was at 100 % and not paused, else its own Stable.
// The bundle inside the app is no Stable (devices stay where they are).
func servedBefore(hist []*release.Channel, cur release.Hash) (release.Ref, bool) {
	for i := len(hist) - 1; i >= 0; i-- {
		h := hist[i]
		if h.Release.ID == cur {
			continue
		}
		var ref *release.Ref
		switch {
		case h.RolloutBPS >= release.FullRollout && !h.Paused:
			ref = &h.Release
		case h.Stable != nil && h.Stable.ID != cur:
			ref = h.Stable
		default:
			continue
		}
		if ref.ID.IsZero() {
			return release.Ref{}, false
		}
		return *ref, true
	}
	return release.Ref{}, false
}

// pointAt points c at target with a rollout. Devices outside the rollout
// keep being offered the release the channel fully served before.
func pointAt(c, prev *release.Channel, target release.Ref, bps int) {
	if prev != nil && prev.Release.ID != target.ID {
		switch {
		case prev.RolloutBPS >= release.FullRollout && !prev.Paused:
			r := prev.Release
			c.Stable = &r
		case prev.Stable != nil:
			r := *prev.Stable
			c.Stable = &r
		}
	}
	if bps >= release.FullRollout {
		c.Stable = nil
	}
	if c.Stable != nil && c.Stable.ID == target.ID {
		c.Stable = nil
	}
	c.Release = target
	c.RolloutBPS = bps
	c.Paused = false
	// A rollback record keeps its licence to move devices back only while
	// the rolled-back-to release is what devices outside the new rollout
	// get; see docs/decisions/031-rollout-semantics.md.
	c.Rollback = prev != nil && prev.Rollback && c.Stable != nil && c.Stable.ID == prev.Release.ID
}

// ChannelRequest changes what a channel serves.
type ChannelRequest struct {
	App     string
	Channel string
	// Version to serve; empty keeps the current release (to change only the
	// rollout or pause state).
	Version string
	// RolloutBPS in basis points; -1 keeps the current value.
	RolloutBPS int
	// Paused, if non-nil, pauses or resumes the rollout.
	Paused *bool
	// BlockMajor, DeviceSelect and Default, if non-nil, set the channel's
	// flags of the same names (see release.Channel). Making a channel the
	// default takes the flag from the app's previous default channel.
	BlockMajor, DeviceSelect, Default *bool
	// NewChannel allows Channel to be a channel the app does not have yet
	// (see UploadRequest.NewChannel).
	NewChannel bool
}

// SetChannel points a channel at a release and signs the new record. A
// request that changes nothing signs nothing and returns the current
// record (see SetChannelChanged).
func (s *Server) SetChannel(req ChannelRequest) (*release.Envelope, error) {
	env, _, err := s.SetChannelChanged(req)
	return env, err
}

// errUnchanged aborts a channel change that would sign a record equal to
// the current one.
var errUnchanged = errors.New("nothing to change")

// sameChannel reports whether two records say the same thing: every
// field but the sequence number and the validity window.
func sameChannel(a, b *release.Channel) bool {
	x, y := *a, *b
	x.Seq, x.Issued, x.Expires = 0, time.Time{}, time.Time{}
	y.Seq, y.Issued, y.Expires = 0, time.Time{}, time.Time{}
	return reflect.DeepEqual(x, y)
}

// SetChannelChanged is SetChannel that also reports whether a new record
// was signed: `channel set` with nothing to change re-signed the record,
// which moves every edge and device for nothing.
func (s *Server) SetChannelChanged(req ChannelRequest) (*release.Envelope, bool, error) {
	env, err := s.setChannel(req)
	if errors.Is(err, errUnchanged) {
		env, _, err = s.st.channel(req.App, req.Channel)
		return env, false, err
	}
	return env, err == nil, err
}

func (s *Server) setChannel(req ChannelRequest) (*release.Envelope, error) {
	if err := release.ValidateChannel(req.Channel); err != nil {
		return nil, badRequest("%v", err)
	}
	if _, err := s.st.app(req.App); err != nil {
		return nil, err
	}
	if req.RolloutBPS > release.FullRollout {
		return nil, badRequest("rollout must be between 0 and 100 percent")
	}
	if err := s.mayCreateChannel(req.App, req.Channel, req.NewChannel); err != nil {
		return nil, err
	}
	var target *release.Record
	if req.Version != "" {
		if _, err := release.ParseVersion(req.Version); err != nil {
			return nil, badRequest("%v", err)
		}
		r, err := s.st.release(req.App, req.Version)
		if err != nil {
			return nil, err
		}
		target = r
	}
	env, err := s.updateChannel(req.App, req.Channel, func(c, prev *release.Channel) error {
		if target == nil && prev == nil {
			return fmt.Errorf("%w: channel %s/%s does not exist yet: give --version", ErrNotFound, req.App, req.Channel)
		}
		bps := req.RolloutBPS
		if bps < 0 {
			bps = release.FullRollout
			if prev != nil && (target == nil || prev.Release.ID == target.ID) {
				bps = prev.RolloutBPS
			}
		}
		ref := c.Release
		if target != nil {
			ref = release.Ref{Version: target.Version, ID: target.ID}
		}
		if prev != nil && ref.ID == prev.Release.ID {
			// Same release: only the rollout changes; Stable stays.
			c.RolloutBPS = bps
			if bps >= release.FullRollout {
				c.Stable = nil
			}
		} else {
			pointAt(c, prev, ref, bps)
		}
		if req.Paused != nil {
			c.Paused = *req.Paused
		}
		applyFlags(c, req)
		if prev != nil && sameChannel(c, prev) {
			return errUnchanged
		}
		return nil
	})
	if err != nil || req.Default == nil || !*req.Default {
		return env, err
	}
	return env, s.clearOtherDefaults(req.App, req.Channel)
}

func (s *Server) updateChannel(app, ch string, mutate func(c, prev *release.Channel) error) (*release.Envelope, error) {
	s.chanMu.Lock()
	var env *release.Envelope
	err := s.db.Update(func(txn store.Txn) error {
		e, err := s.nextChannelRecord(txn, app, ch, mutate)
		env = e
		return err
	})
	s.chanMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("origin: channel %s/%s: %w", app, ch, err)
	}
	c, _ := env.Channel()
	s.log.Info("channel record signed", "app", app, "channel", ch, "seq", c.Seq, "version", c.Release.Version, "rollout_bps", c.RolloutBPS, "paused", c.Paused)
	s.publish(env)
	return env, nil
}

// Rollback puts an earlier release back on a channel as a new record, so
// history only moves forward and devices move back. to may name a version,
// "builtin", or be empty for the release the channel served before: the
// rollout's Stable release during a partial rollout, otherwise the newest
// earlier record that served another release. The record is marked
// Rollback, which lets edges and devices offer an older version.
func (s *Server) Rollback(app, ch, to string) (*release.Envelope, error) {
	_, cur, err := s.st.channel(app, ch)
	if err != nil {
		return nil, err
	}
	var target release.Ref
	switch to {
	case wire.Builtin:
		// zero Ref: devices go back to the bundle inside the app
	case "":
		if cur.Stable != nil {
			// A partial rollout: back to what everyone else runs.
			target = *cur.Stable
			break
		}
		hist, err := s.st.history(app, ch)
		if err != nil {
			return nil, err
		}
		found := false
		for i := len(hist) - 1; i >= 0; i-- {
			if hist[i].Release.ID != cur.Release.ID {
				target, found = hist[i].Release, true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: channel %s/%s has served only %s; name a version with --to", ErrNotFound, app, ch, cur.Release.Version)
		}
	default:
		r, err := s.st.release(app, to)
		if err != nil {
			return nil, err
		}
		target = release.Ref{Version: r.Version, ID: r.ID}
	}
	return s.updateChannel(app, ch, func(c, _ *release.Channel) error {
		c.Release = target
		c.RolloutBPS = release.FullRollout
		c.Stable = nil
		c.Paused = false
		c.Rollback = true
		return nil
	})
}

func (s *Server) publish(env *release.Envelope) {
	if c, err := env.Channel(); err == nil {
		s.forgetLive(c.App)
		s.precompute(c)
	}
	if s.cfg.Publisher == nil {
		return
	}
	if err := s.cfg.Publisher.Publish(env); err != nil {
		s.log.Error("publish channel record", "err", err)
	}
}

// resignLoop re-signs channel records once half of their lifetime has
// passed, so that fresh records keep reaching devices while the channel
// does not change.
func (s *Server) resignLoop(ctx context.Context) {
	every := s.cfg.ChannelTTL / 8
	if every > time.Minute {
		every = time.Minute
	}
	lifetime.Every(ctx, every, func(context.Context) { s.resignDue() })
}

func (s *Server) resignDue() {
	envs, err := s.st.channels("")
	if err != nil {
		s.log.Error("resign: list channels", "err", err)
		return
	}
	now := s.cfg.Now()
	for _, env := range envs {
		c, err := env.Channel()
		if err != nil {
			continue
		}
		if c.Expires.Sub(now) > s.cfg.ChannelTTL/2 {
			continue
		}
		// Checked again in the transaction: another origin sharing the
		// store may have re-signed it since the list was read.
		_, err = s.updateChannel(c.App, c.Channel, func(_, prev *release.Channel) error {
			if prev != nil && prev.Expires.Sub(s.cfg.Now()) > s.cfg.ChannelTTL/2 {
				return errNoChange
			}
			return nil
		})
		if err != nil && !errors.Is(err, errNoChange) {
			s.log.Error("resign channel", "app", c.App, "channel", c.Channel, "err", err)
		}
	}
}
