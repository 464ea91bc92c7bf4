package gossiptest_test

import (
	"testing"
	"time"

	"github.com/capstan-ota/capstan/gossip"
	"github.com/capstan-ota/capstan/gossip/gossiptest"
	"github.com/capstan-ota/capstan/release"
)

func TestOriginAndEdge(t *testing.T) {
	key, err := release.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	origin := gossiptest.Start(t, gossiptest.Config(gossip.RoleOrigin))
	got := make(chan uint64, 1)
	cfg := gossiptest.Config(gossip.RoleEdge, origin.Addr())
	cfg.OnRecord = func(_ *release.Envelope, ch *release.Channel) { got <- ch.Seq }
	gossiptest.Start(t, cfg)

	if err := origin.Publish(gossiptest.Channel(t, key, "app", "prod", 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case seq := <-got:
		if seq != 1 {
			t.Fatalf("edge got seq %d", seq)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("edge did not get the record")
	}
}
