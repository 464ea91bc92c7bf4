package edge

import (
	"sort"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/release"
)

// The Capgo front end reads a few channel settings that Capstan's own
// channel records may carry (release management, issue 5). Until they do,
// these helpers answer from the Capgo settings alone.

// defaultChannelOf returns the app's default channel according to the
// channel records, or "" when they do not say.
func defaultChannelOf(_ *Server, _ string) string { return "" }

// deviceSelectable reports whether a channel record lets devices choose it.
func deviceSelectable(_ *release.Channel) bool { return false }

// blockMajor reports whether a channel record blocks major jumps.
func blockMajor(_ *release.Channel) bool { return false }

func sortChannels(cs []capgo.ChannelListItem) {
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
}
