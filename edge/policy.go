package edge

import (
	"encoding/json"
	"fmt"
	"strings"

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
		// A scan of the channel map (no copy): checks that name no channel
		// cost O(channels), which is fine for the hundreds an edge holds.
		var best *channelState
		for _, cs := range *s.state.cur.Load() {
			if cs.ch.Default && cs.ch.App == string(app) && (best == nil || cs.ch.Seq > best.ch.Seq) {
				best = cs
			}
		}
		if best == nil {
			return nil, fasthttp.StatusNotFound, "app " + string(app) + " is unknown or has no default channel: name a channel"
		}
		return best, 0, ""
	}
	key := make([]byte, 0, len(app)+len(channel)+1)
	key = append(append(append(key, app...), '/'), channel...)
	cs, ok := s.state.get(string(key))
	if !ok {
		return nil, fasthttp.StatusNotFound, "unknown app or channel: " + string(key)
	}
	if !cs.ch.Selectable() {
		return nil, fasthttp.StatusForbidden, fmt.Sprintf("channel %s of app %s does not let devices choose it (an operator can allow it: capstan channel set --app %s --channel %s --device-select)", channel, app, app, channel)
	}
	return cs, 0, ""
}

// parseFailed parses the comma-separated release ids a device reports as
// failed on it.
func parseFailed(b []byte) ([]release.Hash, error) {
	if len(b) == 0 {
		return nil, nil
	}
	parts := strings.Split(string(b), ",")
	if len(parts) > maxFailedIDs {
		return nil, fmt.Errorf("failed: at most %d release ids", maxFailedIDs)
	}
	out := make([]release.Hash, 0, len(parts))
	for _, p := range parts {
		h, err := release.ParseHash(p)
		if err != nil {
			return nil, fmt.Errorf("failed: %w", err)
		}
		out = append(out, h)
	}
	return out, nil
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
