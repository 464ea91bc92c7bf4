package edge

import (
	"sort"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/stats"
)

// The Capgo front end honours the settings of Capstan's own channel
// records (release management): the app's default channel, channels
// devices may choose, the block-major rule and the version rules of
// CheckOffer. Capgo's per-channel settings add to them, never loosen them.

// deviceSelectable reports whether a channel record lets devices choose it.
func deviceSelectable(ch *release.Channel) bool { return ch.DeviceSelect }

// blockMajor reports whether a channel record blocks major jumps.
func blockMajor(ch *release.Channel) bool { return ch.BlockMajor }

// capstanOfferCheck applies the channel record's own version rules (no
// downgrade below the version the device runs unless the record is a
// rollback; the built-in bundle only by a rollback) to a Capgo offer. It
// runs after capgo.Check, which has already applied the native-version
// rules with Capgo's lenient version parsing.
func capstanOfferCheck(ch *release.Channel, in *capgo.Info, target release.Ref) *capgo.Refusal {
	current := string(in.VersionName)
	if current == capgo.Builtin {
		current = ""
	}
	if current != "" {
		if _, err := release.ParseVersion(current); err != nil {
			current = "" // not a Capstan release name: nothing to compare
		}
	}
	// Native-version rules were applied by capgo.Check: leave the manifest
	// (min native) out and block-major off, so only the record's own rules
	// speak here.
	o := release.OfferCheck{Target: target, CurrentVersion: current}
	cc := *ch
	cc.BlockMajor = false
	if r := cc.CheckOffer(o); r != nil {
		return &capgo.Refusal{Error: r.Code, Message: r.Reason, Kind: capgo.KindBlocked}
	}
	return nil
}

// pushCapgoEvents feeds Capgo device events into the edge's event queue
// (on the shard picked by hint, the connection), the same pipeline as POST
// /v1/events: forwarded to an origin, counted in per-release stats,
// watched by auto-pause.
func (s *Server) pushCapgoEvents(hint uint64, evs []capgo.Event) {
	out := make([]stats.Event, 0, len(evs))
	for _, e := range evs {
		se := stats.Event{Action: e.Action, App: e.App, Channel: e.Channel, Device: e.Device, Release: e.Release,
			Version: e.Version, Time: e.Time, Error: e.Error, Cause: e.Cause, Addr: e.Addr}
		if se.Validate() == nil {
			out = append(out, se)
		}
	}
	if len(out) == 0 {
		return
	}
	s.events.push(hint, out)
	s.m.eventsIn.Add(float64(len(out)))
}

func sortChannels(cs []capgo.ChannelListItem) {
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
}
