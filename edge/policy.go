package edge

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
	"github.com/valyala/fasthttp"
)

// maxFailedIDs bounds the failed release ids a device may send with a
// check; devices send their most recent ones.
const maxFailedIDs = 16

// resolveChannel finds the channel a check asks for: the named one, which
// must let devices choose it (or be the app's default), or the app's
// default channel when none is named. On refusal it returns nil, an HTTP
// status and a message.
func (s *Server) resolveChannel(app, channel []byte) (*channelState, int, string) {
	if len(channel) == 0 {
		a := s.appIndex().apps[string(app)]
		if a == nil || a.def == "" {
			return nil, fasthttp.StatusNotFound, "app " + string(app) + " is unknown or has no default channel: name a channel"
		}
		return a.channels[a.def], 0, ""
	}
	// "app/channel" on the stack: the map index does not copy it.
	var kb [2*release.MaxAppLen + 1]byte
	key := append(append(append(kb[:0], app...), '/'), channel...)
	cs, ok := (*s.state.cur.Load())[string(key)]
	if !ok {
		return nil, fasthttp.StatusNotFound, "unknown app or channel: " + string(key)
	}
	if !cs.ch.Selectable() {
		return nil, fasthttp.StatusForbidden, fmt.Sprintf("channel %s of app %s does not let devices choose it (an operator can allow it: capstan channel set --app %s --channel %s --device-select)", channel, app, app, channel)
	}
	return cs, 0, ""
}

// appIndex is the channel records seen per app: the channels by name and
// the default channel the records name. It is immutable, built once per
// change of the records, and read by every check.
type appIndex struct {
	src  *map[string]*channelState
	apps map[string]*appChannels
}

type appChannels struct {
	channels map[string]*channelState
	// def is the channel of the newest record flagged Default, or "".
	def string
}

// appIndex returns the index of the records the edge holds now.
func (s *Server) appIndex() *appIndex {
	cur := s.state.cur.Load()
	if ix := s.apps.Load(); ix != nil && ix.src == cur {
		return ix
	}
	ix := &appIndex{src: cur, apps: map[string]*appChannels{}}
	defSeq := map[string]uint64{}
	for _, cs := range *cur {
		a := ix.apps[cs.ch.App]
		if a == nil {
			a = &appChannels{channels: map[string]*channelState{}}
			ix.apps[cs.ch.App] = a
		}
		a.channels[cs.ch.Channel] = cs
		if cs.ch.Default && (a.def == "" || cs.ch.Seq > defSeq[cs.ch.App]) {
			a.def, defSeq[cs.ch.App] = cs.ch.Channel, cs.ch.Seq
		}
	}
	// Concurrent rebuilds store equal indexes; any of them will do.
	s.apps.Store(ix)
	return ix
}

// checkFailed validates the comma-separated release ids a device reports
// as failed on it, and reports whether target is among them, without
// allocating.
func checkFailed(b []byte, target release.Hash) (bool, error) {
	if len(b) == 0 {
		return false, nil
	}
	if n := bytes.Count(b, []byte{','}) + 1; n > maxFailedIDs {
		return false, fmt.Errorf("failed: at most %d release ids", maxFailedIDs)
	}
	hit := false
	for part := range bytes.SplitSeq(b, []byte{','}) {
		h, ok := parseHashBytes(part)
		if !ok {
			_, err := release.ParseHash(string(part))
			return false, fmt.Errorf("failed: %w", err)
		}
		hit = hit || h == target
	}
	return hit, nil
}

// writeRefusal answers a check with status "blocked", the rule's code and
// reason, and the signed channel record (so the device can verify that the
// channel really offers what was refused).
func writeRefusal(ctx *fasthttp.RequestCtx, cs *channelState, r *release.Refusal) {
	ctx.WriteString(`{"status":"` + wire.StatusBlocked + `","code":`)
	c, _ := json.Marshal(r.Code)
	ctx.Write(c)
	reason, _ := json.Marshal(r.Reason)
	ctx.WriteString(`,"reason":`)
	ctx.Write(reason)
	ctx.WriteString(`,"channel":`)
	ctx.Write(cs.envJSON)
	ctx.WriteString("}")
}
