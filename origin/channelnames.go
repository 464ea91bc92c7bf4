package origin

import (
	"errors"
	"fmt"
	"strings"

	"github.com/capstan-ota/capstan/release"
)

// ErrNoChannel is the refusal of a channel name the app does not have. It
// matches ErrNotFound (HTTP 404).
var ErrNoChannel = fmt.Errorf("%w: no such channel", ErrNotFound)

// noChannelError names the app's channels and the closest one, so that a
// typo (--channel prodution) reads as one.
type noChannelError struct {
	app, channel string
	have         []string
	create       bool // the caller could have created it with --new-channel
}

func (e *noChannelError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "app %s has no channel %q", e.app, e.channel)
	if len(e.have) > 0 {
		if near := closest(e.channel, e.have); near != "" {
			fmt.Fprintf(&b, "; did you mean %q?", near)
		}
		fmt.Fprintf(&b, " (its channels: %s)", strings.Join(e.have, ", "))
	}
	if e.create {
		b.WriteString("; to make a new channel, add --new-channel")
	}
	return b.String()
}

func (e *noChannelError) Is(target error) bool {
	return target == ErrNoChannel || target == ErrNotFound
}

// channelNames lists an app's channels, sorted.
func (s *recordStore) channelNames(app string) ([]string, error) {
	envs, err := s.channels(app)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, env := range envs {
		if c, err := env.Channel(); err == nil {
			out = append(out, c.Channel)
		}
	}
	return out, nil
}

// mayCreateChannel allows a change that would create channel ch of app
// only when ch exists, the app has no channel yet (its first channel is
// made by its first upload), or the caller said --new-channel: a mistyped
// channel name must not become a channel that ships (decision 104).
func (s *Server) mayCreateChannel(app, ch string, create bool) error {
	if create {
		return nil
	}
	_, _, err := s.st.channel(app, ch)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return err
	}
	have, err := s.st.channelNames(app)
	if err != nil || len(have) == 0 {
		return err
	}
	return &noChannelError{app: app, channel: ch, have: have, create: true}
}

// closest returns the name in have nearest to name, if it is near enough
// to be a typo of it (at most max(2, len/3) edits), or "".
func closest(name string, have []string) string {
	best, bestD := "", max(2, len(name)/3)+1
	for _, h := range have {
		if d := editDistance(strings.ToLower(name), strings.ToLower(h)); d < bestD {
			best, bestD = h, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short names.
func editDistance(a, b string) int {
	if len(a) > release.MaxAppLen || len(b) > release.MaxAppLen {
		return max(len(a), len(b))
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
