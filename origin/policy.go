package origin

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
)

// errStop ends an iteration early.
var errStop = errors.New("stop")

// appHasDefault reports whether one of app's channels is its default.
func appHasDefault(txn store.Txn, app string) (bool, error) {
	found := false
	err := iterate(txn, pfxChannel+app+"/", func(_ string, b []byte) error {
		var env release.Envelope
		if err := json.Unmarshal(b, &env); err != nil {
			return err
		}
		if c, err := env.Channel(); err == nil && c.Default {
			found = true
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return found, err
}

// applyFlags copies the flags a channel request sets onto c.
func applyFlags(c *release.Channel, req ChannelRequest) {
	if req.BlockMajor != nil {
		c.BlockMajor = *req.BlockMajor
	}
	if req.DeviceSelect != nil {
		c.DeviceSelect = *req.DeviceSelect
	}
	if req.Default != nil {
		c.Default = *req.Default
	}
}

// clearOtherDefaults signs a new record without the Default flag for every
// channel of app but keep that has it. For a moment two records may both
// say Default; edges then pick the one with the larger Seq.
func (s *Server) clearOtherDefaults(app, keep string) error {
	envs, err := s.st.channels(app)
	if err != nil {
		return fmt.Errorf("origin: channels of %s: %w", app, err)
	}
	for _, env := range envs {
		c, err := env.Channel()
		if err != nil || c.Channel == keep || !c.Default {
			continue
		}
		if _, err := s.updateChannel(app, c.Channel, func(c, _ *release.Channel) error {
			c.Default = false
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// Promote points channel to at the release channel from serves, as a new
// record of to, at rollout bps (-1: everyone). The flags of to are kept.
// newChannel allows to to be a channel the app does not have yet.
func (s *Server) Promote(app, from, to string, bps int, newChannel bool) (*release.Envelope, error) {
	if from == to {
		return nil, badRequest("promote: --from and --to are the same channel %q", from)
	}
	if err := release.ValidateChannel(to); err != nil {
		return nil, badRequest("%v", err)
	}
	_, src, err := s.st.channel(app, from)
	if err != nil {
		return nil, fmt.Errorf("origin: promote: %w", err)
	}
	if src.Release.ID.IsZero() {
		return nil, badRequest("promote: channel %s/%s serves the built-in bundle; roll %s back instead", app, from, to)
	}
	if bps < 0 {
		bps = release.FullRollout
	}
	return s.SetChannel(ChannelRequest{App: app, Channel: to, Version: src.Release.Version, RolloutBPS: bps, NewChannel: newChannel})
}
