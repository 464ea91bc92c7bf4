// Package gossiptest helps other packages' tests run gossip nodes: a
// loopback Config, a Start that shuts the node down with the test, and a
// signed channel record builder. Nodes are real memberlist instances on
// 127.0.0.1 with OS-chosen ports, so several fit in one test process.
package gossiptest

import (
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/gossip"
	"github.com/capstan-ota/capstan/release"
)

// Config returns gossip.DefaultLocalConfig with the given role and seeds and
// a logger that discards.
func Config(role gossip.Role, join ...string) gossip.Config {
	c := gossip.DefaultLocalConfig()
	c.Meta = gossip.Meta{Role: role}
	c.Join = join
	c.Logger = slog.New(slog.DiscardHandler)
	return c
}

// Start starts a node and shuts it down (gracefully) when the test ends.
func Start(t testing.TB, cfg gossip.Config) *gossip.Node {
	t.Helper()
	n, err := gossip.New(cfg)
	if err != nil {
		t.Fatalf("gossiptest: start node: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Shutdown(); err != nil {
			t.Errorf("gossiptest: shutdown %s: %v", n.Name(), err)
		}
	})
	return n
}

// Channel returns a channel record for app/channel at seq, serving version
// "1.<seq>.0" to every device, signed with key.
func Channel(t testing.TB, key ed25519.PrivateKey, app, channel string, seq uint64) *release.Envelope {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	ver := fmt.Sprintf("1.%d.0", seq)
	ch := release.Channel{
		App:        app,
		Channel:    channel,
		Seq:        seq,
		Release:    release.Ref{Version: ver, ID: release.Sum([]byte(app + "/" + ver))},
		RolloutBPS: release.FullRollout,
		Issued:     now,
		Expires:    now.Add(24 * time.Hour),
	}
	b, err := ch.Encode()
	if err != nil {
		t.Fatalf("gossiptest: encode channel record: %v", err)
	}
	return release.Seal(b, key)
}
