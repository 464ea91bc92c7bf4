package main

import (
	"sync/atomic"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/gossip"
)

// fleetPeers lists the alive edges of the cluster node (once it has
// joined) for the edge's GET /v1/edges. Members of a keyed cluster were
// admitted by the cluster key; in an unauthenticated cluster (insecure)
// anyone can join and announce an edge, so the list holds only this edge.
func fleetPeers(node *atomic.Pointer[gossip.Node], insecure bool) func() []edge.Peer {
	return func() []edge.Peer {
		n := node.Load()
		if n == nil {
			return nil
		}
		var out []edge.Peer
		for _, m := range n.Edges() {
			if insecure && m.Name != n.Name() {
				continue
			}
			if m.Meta.HTTP != "" {
				out = append(out, edge.Peer{URL: m.Meta.HTTP, Region: m.Meta.Region})
			}
		}
		return out
	}
}

// withFleet sets the edge's fleet list and region.
func withFleet(fleet func() []edge.Peer, region string) func(*edge.Config) {
	return func(c *edge.Config) {
		c.Fleet = fleet
		c.Region = region
	}
}
