package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/gossip"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
	"github.com/spf13/cobra"
)

// `capstan dev`: an origin and one edge in one process.

// devOptions are the flags of `capstan dev`.
type devOptions struct {
	dataDir, apiAddr, edgeAddr string
	g                          gossipOptions
	cf                         capgoEdgeFlags
	pp                         pprofFlag
}

func newDevCmd() *cobra.Command {
	var opt devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an origin and one edge in one process (embedded Badger store)",
		Long: `Run an origin and one edge in one process, with the data under --data.
More edges can join this origin's cluster: capstan edge --join <the gossip address it prints>.`,
		Example: `  capstan dev
  capstan dev --data /tmp/capstan --api 127.0.0.1:7070 --edge 127.0.0.1:7080`,
		Args: cobra.NoArgs,
		RunE: opt.run,
	}
	cmd.Flags().StringVar(&opt.dataDir, "data", "./capstan-data", "data folder (origin and edge stores live under it)")
	cmd.Flags().StringVar(&opt.apiAddr, "api", "127.0.0.1:7070", "origin API listen address")
	cmd.Flags().StringVar(&opt.edgeAddr, "edge", "127.0.0.1:7080", "edge HTTP listen address")
	cmd.Flags().StringVar(&opt.g.bind, "gossip", "127.0.0.1:7946", "gossip bind address, for more edges to join")
	opt.g.keyFlags(cmd, "cluster key file (default DATA/origin/cluster.key, made on first start; more edges join with a copy)")
	opt.cf.register(cmd)
	opt.pp.register(cmd)
	return cmd
}

func (opt *devOptions) run(cmd *cobra.Command, _ []string) error {
	ctx, fail, log, stop, err := startServer(cmd, opt.pp)
	if err != nil {
		return err
	}
	defer stop()
	var e atomic.Pointer[edge.Server]
	toEdge := origin.PublisherFunc(func(env *release.Envelope) error {
		if s := e.Load(); s != nil {
			s.Apply(env)
		}
		return nil
	})
	lazy := &lazyPublisher{}
	// Every address is taken before the data folder is touched.
	apiLn, err := listen("--api", opt.apiAddr)
	if err != nil {
		return err
	}
	defer apiLn.Close()
	edgeLn, err := listen("--edge", opt.edgeAddr)
	if err != nil {
		return err
	}
	defer edgeLn.Close()
	if err := checkGossipFree(opt.g.bind); err != nil {
		return err
	}
	apiURL := "http://" + apiLn.Addr().String()
	gcfg, err := newGossipConfig(opt.g, gossip.RoleOrigin, apiURL, log)
	if err != nil {
		return err
	}
	keys := &keyHolder{}
	o, api, closeStores, err := startOrigin(cmd, log, filepath.Join(opt.dataDir, "origin"), apiLn, "", multiPublisher{toEdge, lazy}, sharedFlags{}, keys)
	if err != nil {
		return err
	}
	defer closeStores()
	kf, keyPath, err := originClusterKeys(cmd, opt.g, filepath.Join(opt.dataDir, "origin"), o.PublicKey(), log)
	if err != nil {
		o.Close()
		return err
	}
	setKeys(&gcfg, kf)
	keys.p.Store(kf)
	gcfg.Verify = o.VerifyRecord
	// The edge trusts what the origin key signed, like any edge,
	// and sends its events with the cluster's events token.
	trustOrigin := func(c *edge.Config) {
		c.OriginKeys = []release.PublicKey{{Key: o.PublicKey(), Role: release.RoleOrigin}}
		c.EventsTokenFunc = keys.token
		c.PollEvery = 30 * time.Second
	}
	es, err := startEdge(log, filepath.Join(opt.dataDir, "edge"), edgeLn, 0, func() []string { return []string{apiURL} }, opt.cf.apply, trustOrigin)
	if err != nil {
		api.Close()
		o.Close()
		return err
	}
	e.Store(es)
	// The API serves once the edge takes records, so that an upload
	// made the moment `capstan dev &` returns reaches the edge.
	serving(ctx, fail, log, "origin API", func() error { return api.Serve(apiLn) })
	node, err := gossip.New(gcfg)
	if err != nil {
		api.Close()
		es.Shutdown(context.Background())
		o.Close()
		return fmt.Errorf("--gossip %s: %w", opt.g.bind, err)
	}
	watchClusterKeys(ctx, keyPath, node, keys, log)
	o.Registry().MustRegister(gossipMembers(node))
	lazy.node.Store(node)
	publishAll(o, node, log)
	syncCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := es.SyncFromOrigin(syncCtx); err != nil {
		log.Warn("first sync from origin", "err", err)
	}
	cancel()
	// Devices are answered once the edge holds what the origin has.
	serving(ctx, fail, log, "edge", func() error { return es.Serve(edgeLn) })
	fmt.Fprintf(cmd.ErrOrStderr(), "capstan dev: origin API %s, edge %s, gossip %s (Ctrl-C to stop)\n", apiURL, "http://"+edgeLn.Addr().String(), node.Addr())
	<-ctx.Done()
	log.Info("shutting down")
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	node.Shutdown()
	api.Shutdown(sctx)
	return errors.Join(es.Shutdown(sctx), o.Shutdown(sctx), exitCause(ctx))
}
