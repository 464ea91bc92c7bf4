package origin

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// AutoPausePolicy says when a rollout pauses itself: once at least
// MinDevices distinct devices reported on the release, more than
// FailureRate of them reported a fail or a revert, and those failures came
// from at least MinAddresses distinct network addresses. Device ids are
// whatever a device says; addresses are what the edges saw (decision 096).
type AutoPausePolicy struct {
	// FailureRate is the threshold, a fraction in (0, 1]. Zero means the
	// default (0.2); a negative value disables auto-pause.
	FailureRate float64 `json:"failure_rate"`
	// MinDevices is the fewest devices that must have reported before the
	// rate is trusted. Zero means the default (20).
	MinDevices int `json:"min_devices"`
	// MinAddresses is the fewest distinct addresses (IPv4, or IPv6 /64)
	// the failures must come from. Zero means the default (5).
	MinAddresses int `json:"min_addresses"`
}

// Defaults of AutoPausePolicy.
const (
	DefaultAutoPauseFailureRate  = 0.2
	DefaultAutoPauseMinDevices   = 20
	DefaultAutoPauseMinAddresses = 5
)

func (p AutoPausePolicy) withDefaults() AutoPausePolicy {
	if p.FailureRate == 0 {
		p.FailureRate = DefaultAutoPauseFailureRate
	}
	if p.MinDevices <= 0 {
		p.MinDevices = DefaultAutoPauseMinDevices
	}
	if p.MinAddresses <= 0 {
		p.MinAddresses = DefaultAutoPauseMinAddresses
	}
	return p
}

// policyFor returns the effective auto-pause policy of a channel.
func (s *Server) policyFor(app, ch string) AutoPausePolicy {
	p := s.cfg.AutoPause.withDefaults()
	var cp wire.ChannelPolicy
	if err := s.db.View(func(txn store.Txn) error { return getJSON(txn, pfxPolicy+app+"/"+ch, &cp) }); err == nil {
		if cp.AutoPauseFailureRate != nil {
			p.FailureRate = *cp.AutoPauseFailureRate
		}
		if cp.AutoPauseMinDevices != nil && *cp.AutoPauseMinDevices > 0 {
			p.MinDevices = *cp.AutoPauseMinDevices
		}
		if cp.AutoPauseMinAddresses != nil && *cp.AutoPauseMinAddresses > 0 {
			p.MinAddresses = *cp.AutoPauseMinAddresses
		}
	}
	return p
}

// SetChannelPolicy stores a channel's auto-pause overrides (nil fields
// keep the stored value).
func (s *Server) SetChannelPolicy(app, ch string, p wire.ChannelPolicy) (wire.ChannelPolicy, error) {
	if _, _, err := s.st.channel(app, ch); err != nil {
		return wire.ChannelPolicy{}, fmt.Errorf("origin: policy: %w", err)
	}
	if r := p.AutoPauseFailureRate; r != nil && *r > 1 {
		return wire.ChannelPolicy{}, badRequest("auto-pause failure rate %v must be at most 1 (a fraction; negative disables)", *r)
	}
	var cur wire.ChannelPolicy
	err := s.db.Update(func(txn store.Txn) error {
		cur = wire.ChannelPolicy{} // the transaction may run more than once
		if err := getJSON(txn, pfxPolicy+app+"/"+ch, &cur); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if p.AutoPauseFailureRate != nil {
			cur.AutoPauseFailureRate = p.AutoPauseFailureRate
		}
		if p.AutoPauseMinDevices != nil {
			cur.AutoPauseMinDevices = p.AutoPauseMinDevices
		}
		if p.AutoPauseMinAddresses != nil {
			cur.AutoPauseMinAddresses = p.AutoPauseMinAddresses
		}
		return setJSON(txn, pfxPolicy+app+"/"+ch, &cur)
	})
	if err != nil {
		return wire.ChannelPolicy{}, fmt.Errorf("origin: policy: %w", err)
	}
	return cur, nil
}

// maybeAutoPause pauses the rollout of the release whose stats are at key
// if its failure rate crossed the channel's threshold. A release is
// auto-paused at most once per channel: if an operator resumes it, the
// origin does not fight the decision.
func (s *Server) maybeAutoPause(key string) {
	var rec statsRecord
	if err := s.db.View(func(txn store.Txn) error { return getJSON(txn, key, &rec) }); err != nil {
		return
	}
	if rec.AutoPaused != nil || rec.Release.IsZero() {
		return
	}
	v := rec.view()
	p := s.policyFor(rec.App, rec.Channel)
	if p.FailureRate < 0 || v.Devices < uint64(p.MinDevices) || v.FailureRate <= p.FailureRate {
		return
	}
	if v.FailedAddresses < uint64(p.MinAddresses) {
		// Many device ids failing from few addresses is what one host
		// making up events looks like (issue 16, finding 4).
		s.log.Warn("auto-pause held back: the failures come from too few addresses", "app", rec.App, "channel", rec.Channel,
			"version", rec.Version, "failed_devices", v.FailedDevices, "failed_addresses", v.FailedAddresses, "min_addresses", p.MinAddresses)
		return
	}
	_, cur, err := s.st.channel(rec.App, rec.Channel)
	if err != nil || cur.Release.ID != rec.Release || cur.Paused {
		return
	}
	env, err := s.updateChannel(rec.App, rec.Channel, func(c, _ *release.Channel) error {
		if c.Release.ID != rec.Release || c.Paused {
			return errNoChange
		}
		c.Paused = true
		return nil
	})
	if err != nil {
		if !errors.Is(err, errNoChange) {
			s.log.Error("auto-pause", "app", rec.App, "channel", rec.Channel, "version", rec.Version, "err", err)
		}
		return
	}
	c, _ := env.Channel()
	ap := &wire.AutoPause{At: s.cfg.Now().UTC(), Seq: c.Seq, FailureRate: v.FailureRate, Devices: v.Devices, FailedDevices: v.FailedDevices, Threshold: p.FailureRate, FailedAddresses: v.FailedAddresses}
	s.log.Warn("rollout auto-paused: failure rate over threshold",
		"app", rec.App, "channel", rec.Channel, "version", rec.Version,
		"failure_rate", fmt.Sprintf("%.1f%%", v.FailureRate*100), "failed_devices", v.FailedDevices, "devices", v.Devices,
		"threshold", fmt.Sprintf("%.1f%%", p.FailureRate*100), "seq", c.Seq)
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	err = s.db.Update(func(txn store.Txn) error {
		var r statsRecord
		if err := getJSON(txn, key, &r); err != nil {
			return err
		}
		r.AutoPaused = ap
		return setJSON(txn, key, &r)
	})
	if err != nil {
		s.log.Error("auto-pause: record", "err", err)
	}
}

// errNoChange aborts a channel update that turned out to be unnecessary.
var errNoChange = errors.New("no change")

func (s *Server) handleSetPolicy(w http.ResponseWriter, r *http.Request) {
	app, ch := r.PathValue("app"), r.PathValue("channel")
	if _, err := s.authorize(r, wire.RolePublisher, app); err != nil {
		s.fail(w, err)
		return
	}
	var body wire.ChannelPolicy
	if err := decodeBody(r, &body); err != nil {
		s.fail(w, err)
		return
	}
	p, err := s.SetChannelPolicy(app, ch, body)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}
