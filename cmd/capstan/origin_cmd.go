package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/capstan-ota/capstan/gossip"
	"github.com/spf13/cobra"
)

// `capstan origin`: an origin node.

// originOptions are the flags of `capstan origin`.
type originOptions struct {
	dataDir, apiAddr, pub, cosign string
	g                             gossipOptions
	sf                            sharedFlags
	rotate                        bool
	pp                            pprofFlag
}

func newOriginCmd() *cobra.Command {
	var opt originOptions
	cmd := &cobra.Command{
		Use:   "origin",
		Short: "Run an origin node: the CI API, the release store, the channel signer",
		Long: `Run an origin node. With --store and --blobs, any number of origins share one PostgreSQL
database and one S3-compatible bucket, and sign with the same --origin-key: each takes uploads and
admin calls, the database decides what they race for, and edges learn every origin through gossip.`,
		Example: `  CAPSTAN_ADMIN_KEY=... capstan origin --data /var/lib/capstan --api 0.0.0.0:7070 --gossip 10.0.0.5:7946 --public-url http://origin-1:7070
  CAPSTAN_STORE=postgres://capstan@db/capstan AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
    capstan origin --blobs 's3://capstan-blobs?endpoint=minio:9000' --origin-key /etc/capstan/origin.key \
    --api 0.0.0.0:7070 --public-url http://origin-2:7070 --gossip 10.0.0.6:7946 --join 10.0.0.5:7946`,
		Args: cobra.NoArgs,
		RunE: opt.run,
	}
	cmd.Flags().StringVar(&opt.dataDir, "data", "./capstan-data/origin", "data folder (with --store and --blobs: temp files only)")
	opt.sf.register(cmd)
	cmd.AddCommand(newMigrateCmd())
	cmd.Flags().BoolVar(&opt.rotate, "rotate-key", false, "replace the origin's channel-signing key on this start, publishing a statement signed by the old key (use once; devices follow at most 32 rotations at a time)")
	cmd.Flags().StringVar(&opt.cosign, "rotate-cosign", "", "with --rotate-key: a release private key that co-signs the statement (recovery when the old origin key is stolen)")
	cmd.Flags().StringVar(&opt.apiAddr, "api", "127.0.0.1:7070", "API listen address")
	cmd.Flags().StringVar(&opt.pub, "public-url", "", "URL edges use to reach this origin's API (default from --api)")
	cmd.Flags().StringVar(&opt.g.bind, "gossip", "127.0.0.1:7946", "gossip bind address")
	cmd.Flags().StringVar(&opt.g.join, "join", "", "comma-separated gossip addresses of cluster members to join")
	opt.g.keyFlags(cmd, "cluster key file (default DATA/cluster.key, made on first start: give every edge a copy)")
	opt.pp.register(cmd)
	return cmd
}

func (opt *originOptions) run(cmd *cobra.Command, _ []string) error {
	ctx, fail, log, stop, err := startServer(cmd, opt.pp)
	if err != nil {
		return err
	}
	defer stop()
	lazy := &lazyPublisher{}
	apiLn, err := listen("--api", opt.apiAddr)
	if err != nil {
		return err
	}
	defer apiLn.Close()
	if err := checkGossipFree(opt.g.bind); err != nil {
		return err
	}
	gcfg, err := newGossipConfig(opt.g, gossip.RoleOrigin, publicURL(opt.pub, apiLn.Addr()), log)
	if err != nil {
		return err
	}
	keys := &keyHolder{}
	o, api, closeStores, err := startOrigin(cmd, log, opt.dataDir, apiLn, opt.pub, lazy, opt.sf, keys)
	if err != nil {
		return err
	}
	defer closeStores()
	defer o.Close()
	kf, keyPath, err := originClusterKeys(cmd, opt.g, opt.dataDir, o.PublicKey(), log)
	if err != nil {
		return err
	}
	setKeys(&gcfg, kf)
	keys.p.Store(kf)
	// The origin's own node checks records like any other: a
	// forged one must not be stored, relayed or handed to new edges.
	gcfg.Verify = o.VerifyRecord
	serving(ctx, fail, log, "origin API", func() error { return api.Serve(apiLn) })
	if opt.rotate {
		if err := rotateOriginKey(ctx, cmd, o, opt.cosign); err != nil {
			api.Close()
			return err
		}
	}
	node, err := gossip.New(gcfg)
	if err != nil {
		api.Close()
		return fmt.Errorf("--gossip %s: %w", opt.g.bind, err)
	}
	watchClusterKeys(ctx, keyPath, node, keys, log)
	lazy.node.Store(node)
	publishAll(o, node, log)
	o.Registry().MustRegister(gossipMembers(node))
	log.Info("gossip listening", "addr", node.Addr(), "members", len(node.Members()))
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node.Leave(sctx)
	node.Shutdown()
	return errors.Join(api.Shutdown(sctx), o.Shutdown(sctx), exitCause(ctx))
}
