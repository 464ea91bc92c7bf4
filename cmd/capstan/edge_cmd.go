package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/gossip"
	"github.com/capstan-ota/capstan/release"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
)

// `capstan edge`: an edge node.

// edgeOptions are the flags of `capstan edge`.
type edgeOptions struct {
	dataDir, httpAddr, cacheSize, originURLs, pub, originKey string
	g                                                        gossipOptions
	rl                                                       rateLimitFlags
	cf                                                       capgoEdgeFlags
	pp                                                       pprofFlag
}

func newEdgeCmd() *cobra.Command {
	var opt edgeOptions
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run an edge node: answers device checks and serves blobs and patches",
		Long: `Run an edge node. It joins the cluster through --join, learns the origins and the channel
records from gossip, answers device checks from memory and serves blobs from its cache.`,
		Example: `  capstan edge --data /var/lib/capstan-edge --http 0.0.0.0:7080 --gossip 10.0.0.9:7946 --join 10.0.0.5:7946 --cache-size 2GiB`,
		Args:    cobra.NoArgs,
		RunE:    opt.run,
	}
	cmd.Flags().StringVar(&opt.dataDir, "data", "./capstan-data/edge", "data folder for the blob cache")
	cmd.Flags().StringVar(&opt.httpAddr, "http", "127.0.0.1:7080", "HTTP listen address for devices")
	cmd.Flags().StringVar(&opt.pub, "public-url", "", "URL devices use to reach this edge (default from --http)")
	cmd.Flags().StringVar(&opt.g.bind, "gossip", "127.0.0.1:7947", "gossip bind address")
	cmd.Flags().StringVar(&opt.g.join, "join", "", "comma-separated gossip addresses of cluster members to join")
	cmd.Flags().StringVar(&opt.g.region, "region", "", "region label announced to the fleet, e.g. eu-west")
	cmd.Flags().StringVar(&opt.cacheSize, "cache-size", "1GiB", "disk cache cap, e.g. 500MB or 2GiB")
	cmd.Flags().StringVar(&opt.originURLs, "origin", "", "comma-separated origin API URLs to pull from, besides those learnt from gossip")
	cmd.Flags().StringVar(&opt.originKey, "origin-key", "", "origin public key (PEM), if the cluster key file holds none: the edge trusts only records and origins it signed")
	opt.g.keyFlags(cmd, "cluster key file the origin made (DATA/cluster.key): admits this edge to the cluster and names the origin key (required unless --insecure-gossip)")
	opt.rl.flags(cmd)
	opt.cf.register(cmd)
	opt.pp.register(cmd)
	return cmd
}

func (opt *edgeOptions) run(cmd *cobra.Command, _ []string) error {
	ctx, fail, log, stop, err := startServer(cmd, opt.pp)
	if err != nil {
		return err
	}
	defer stop()
	var size int64
	if opt.cacheSize != "" {
		n, err := humanize.ParseBytes(opt.cacheSize)
		if err != nil {
			return usageError("--cache-size %q: %v", opt.cacheSize, err)
		}
		size = int64(n)
	}
	static := splitList(opt.originURLs)
	var node atomic.Pointer[gossip.Node]
	// Members announcing role origin are only candidates: the edge
	// uses one after its signed origin statement verifies.
	announced := func() []string {
		var out []string
		if n := node.Load(); n != nil {
			for _, m := range n.Origins() {
				if m.Meta.HTTP != "" && !slices.Contains(out, m.Meta.HTTP) {
					out = append(out, m.Meta.HTTP)
				}
			}
		}
		return out
	}
	ln, err := listen("--http", opt.httpAddr)
	if err != nil {
		return err
	}
	defer ln.Close()
	if err := checkGossipFree(opt.g.bind); err != nil {
		return err
	}
	kf, err := edgeClusterKeys(opt.g, log)
	if err != nil {
		return err
	}
	okeys, err := originKeys(opt.originKey)
	if err != nil {
		return err
	}
	if kf != nil {
		okeys = append(okeys, kf.OriginKeys...)
	}
	if len(okeys) == 0 {
		return &exitError{code: 2, err: errors.New("no origin public key: the edge trusts only records and origins the origin key signed; give a --cluster-key file made by the origin (it holds the key) or --origin-key DATA/origin.key.pub")}
	}
	gcfg, err := newGossipConfig(opt.g, gossip.RoleEdge, publicURL(opt.pub, ln.Addr()), log)
	if err != nil {
		return err
	}
	keys := &keyHolder{}
	keys.p.Store(kf)
	var e *edge.Server
	setKeys(&gcfg, kf)
	// The edge joins the cluster itself (retrying until it can) and
	// leaves it at Shutdown; this is what a join is.
	join := func(ctx context.Context) (func(context.Context), error) {
		n, err := gossip.New(gcfg)
		if err != nil {
			return nil, err
		}
		node.Store(n)
		if opt.g.clusterKey != "" {
			watchClusterKeys(ctx, opt.g.clusterKey, n, keys, log)
		}
		e.Registry().MustRegister(gossipMembers(n))
		log.Info("joined the cluster", "gossip", n.Addr(), "members", len(n.Members()), "origins", len(n.Origins()))
		return func(ctx context.Context) { n.Leave(ctx); n.Shutdown() }, nil
	}
	e, err = startEdge(log, opt.dataDir, ln, size, func() []string { return static }, opt.rl.apply, opt.cf.apply, func(c *edge.Config) {
		c.Join = join
		c.OriginKeys = okeys
		c.EventsTokenFunc = keys.token
		c.ClusterOrigins = announced
		c.InsecureGossip = kf == nil
		if opt.pub != "" {
			c.URL = strings.TrimRight(opt.pub, "/")
		}
	}, withFleet(fleetPeers(&node, kf == nil), opt.g.region))
	if err != nil {
		return err
	}
	gcfg.Verify = e.VerifyRecord
	gcfg.OnRecord = func(env *release.Envelope, _ *release.Channel) { e.Apply(env) }
	// Serving starts the edge's own cluster join and origin polling.
	serving(ctx, fail, log, "edge", func() error { return e.Serve(ln) })
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(e.Shutdown(sctx), exitCause(ctx))
}
