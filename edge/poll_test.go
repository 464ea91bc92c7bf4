package edge_test

import (
	"testing"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/internal/fleettest"
	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
)

// TestServingEdgePollsItsOrigins: with no gossip at all, a serving edge
// pulls the origin's state on its own every PollEvery, so a release
// reaches it without anyone handing it the record.
func TestServingEdgePollsItsOrigins(t *testing.T) {
	f := fleettest.New(t, fleettest.Config{NoPush: true})
	e := f.StartEdge(func(c *edge.Config) { c.PollEvery = 100 * time.Millisecond })
	rec := f.Upload(origin.UploadRequest{App: "com.x", Version: "1.0.0", Channel: "production", RolloutBPS: release.FullRollout, NewChannel: true},
		map[string]string{"index.html": "v1"})
	testutil.Eventually(t, 10*time.Second, "the edge to pull the new record", func() bool {
		for _, env := range e.Records() {
			if ch, err := env.Channel(); err == nil && ch.Release.ID == rec.ID {
				return true
			}
		}
		return false
	})
}
