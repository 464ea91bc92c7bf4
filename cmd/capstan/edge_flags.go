package main

import (
	"sync/atomic"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/gossip"
	"github.com/spf13/cobra"
)

// Flags and wiring of the edge that dev and edge share.

// capgoEdgeFlags are the edge's flags for @capgo/capacitor-updater devices.
type capgoEdgeFlags struct {
	publicURL, defaultChannel string
	rate                      int
	disabled                  bool
}

func (f *capgoEdgeFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.publicURL, "capgo-public-url", "", "base URL Capgo devices reach this edge at, for the URLs in answers (default: from the request's Host and X-Forwarded-*)")
	cmd.Flags().StringVar(&f.defaultChannel, "capgo-default-channel", "production", "channel Capgo devices follow when the app's Capgo settings name none")
	cmd.Flags().IntVar(&f.rate, "capgo-rate", 50, "Capgo requests per second per client address before 429 (negative: no limit)")
	cmd.Flags().BoolVar(&f.disabled, "no-capgo", false, "turn off the Capgo endpoints (/updates, /stats, /channel_self)")
}

// apply sets the edge's Capgo configuration from the flags.
func (f *capgoEdgeFlags) apply(cfg *edge.Config) {
	cfg.Capgo.PublicURL = f.publicURL
	cfg.Capgo.DefaultChannel = f.defaultChannel
	cfg.Capgo.RequestsPerSecond = f.rate
	cfg.Capgo.Disabled = f.disabled
}

// rateLimitFlags are the edge's per-address rate limit flags.
type rateLimitFlags struct {
	perSecond float64
	burst     int
	clients   int
	loopback  bool
	perAddr   int
	maxConns  int
}

func (f *rateLimitFlags) flags(cmd *cobra.Command) {
	d := edge.DefaultRateLimit()
	cmd.Flags().Float64Var(&f.perSecond, "rate-limit", d.PerSecond, "device requests per second per client address (IPv4 address or IPv6 /64); negative turns limiting off")
	cmd.Flags().IntVar(&f.burst, "rate-burst", d.Burst, "requests a quiet address may make at once")
	cmd.Flags().IntVar(&f.clients, "rate-clients", d.Clients, "client addresses tracked at once (least recently seen forgotten first)")
	cmd.Flags().BoolVar(&f.loopback, "rate-limit-loopback", false, "also limit loopback clients (exempt by default for local load generators), rate and connections")
	cmd.Flags().IntVar(&f.perAddr, "conns-per-address", edge.DefaultConnsPerAddress, "open connections one client address may hold (IPv4, or IPv6 /64); more are answered 429 and closed; negative: no cap")
	cmd.Flags().IntVar(&f.maxConns, "max-conns", edge.DefaultMaxConns, "open connections in all (~6 KB each when idle); more are answered 503 and closed")
}

func (f *rateLimitFlags) apply(cfg *edge.Config) {
	cfg.RateLimit = edge.RateLimitConfig{PerSecond: f.perSecond, Burst: f.burst, Clients: f.clients, LimitLoopback: f.loopback}
	cfg.ConnsPerAddress = f.perAddr
	cfg.MaxConns = f.maxConns
}

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
