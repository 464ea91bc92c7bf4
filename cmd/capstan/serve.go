package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"slices"
	"sync/atomic"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/gossip"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
	"github.com/dustin/go-humanize"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

func newLogger(cmd *cobra.Command) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("CAPSTAN_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// serving runs a server's Serve in the background. If it returns an error
// while the process is not stopping (a listener that failed for good),
// the error is logged and cancels ctx with it as the cause: the command
// then shuts down — leaving the gossip cluster, so edges and devices stop
// counting on a node that answers nothing — and exits non-zero, for a
// supervisor to restart it (issue 16, finding 3).
func serving(ctx context.Context, fail context.CancelCauseFunc, log *slog.Logger, what string, serve func() error) {
	go func() {
		err := serve()
		if err == nil || errors.Is(err, http.ErrServerClosed) || ctx.Err() != nil {
			return
		}
		log.Error(what+" stopped serving; shutting down", "err", err)
		fail(fmt.Errorf("%s stopped serving: %w", what, err))
	}()
}

// exitCause is what a server command returns once ctx is done: nil after
// a signal, the failure that stopped it otherwise.
func exitCause(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// listen binds a server's listen address before anything else happens, so
// that a busy port fails the start before a data folder is created or an
// admin key printed. flag names the flag that sets addr.
func listen(flag, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: is another capstan running? Stop it, or choose another address with %s", flag, addr, listenCause(err), flag)
	}
	return ln, nil
}

// checkGossipFree fails early when the gossip address (TCP and UDP) is
// taken, with the flag's name; memberlist binds it later.
func checkGossipFree(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("--gossip %q: want host:port, e.g. 127.0.0.1:7946", addr)}
	}
	if port == "0" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		var pc net.PacketConn
		pc, err = net.ListenPacket("udp", net.JoinHostPort(host, port))
		if err == nil {
			pc.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("--gossip %s: %w: is another capstan running? Stop it, or choose another address with --gossip", addr, listenCause(err))
	}
	return nil
}

// listenCause is the short reason a listen failed ("address already in
// use"), without the Go operation prefix that repeats the address.
func listenCause(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			return se.Err
		}
		return oe.Err
	}
	return err
}

// minAdminKeyLen is the shortest CAPSTAN_ADMIN_KEY an origin takes: 128
// bits written in hex (openssl rand -hex 16). A guessable admin key is the
// whole fleet (issue 16, finding 6).
const minAdminKeyLen = 32

// adminKeyFromEnv reads CAPSTAN_ADMIN_KEY, refusing one too short to be a
// secret. Unset, the origin generates a key on an empty folder.
func adminKeyFromEnv() (string, error) {
	k := os.Getenv("CAPSTAN_ADMIN_KEY")
	if k != "" && len(k) < minAdminKeyLen {
		return "", usageError("CAPSTAN_ADMIN_KEY is %d characters: an admin key needs at least %d (128 bits in hex: openssl rand -hex 16); or leave it unset and the origin generates one", len(k), minAdminKeyLen)
	}
	return k, nil
}

// startOrigin opens an origin (on shared stores when sf names them) and
// makes its API server; the caller serves it on ln (go srv.Serve(ln)) once
// whatever the API needs is ready. Close the origin, then call closeStores.
// public is the --public-url flag ("" for one made from the listen address).
func startOrigin(cmd *cobra.Command, log *slog.Logger, dataDir string, ln net.Listener, public string, pub origin.Publisher, sf sharedFlags, keys *keyHolder) (o *origin.Server, srv *http.Server, closeStores func(), err error) {
	cfg := origin.DefaultConfig(dataDir)
	cfg.EventsTokens = keys.tokens
	cfg.PublicURL = publicURL(public, ln.Addr())
	if cfg.AdminKey, err = adminKeyFromEnv(); err != nil {
		return nil, nil, nil, err
	}
	cfg.Logger = log.With("component", "origin")
	cfg.Publisher = pub
	if l, ok := pub.(interface{ members() []origin.Member }); ok {
		cfg.Members = l.members
	}
	if err := releaseConfig(cmd, &cfg); err != nil {
		return nil, nil, nil, err
	}
	closeStores, err = sf.open(cmd.Context(), &cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	o, err = origin.New(cfg)
	if err != nil {
		closeStores()
		return nil, nil, nil, err
	}
	reportAdminKey(cmd, o.AdminKeyStart(), dataDir)
	srv = &http.Server{
		Handler:           o.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	if cfg.Records != nil {
		log.Info("origin API listening", "addr", "http://"+ln.Addr().String(), "store", "shared (PostgreSQL, S3)", "origin_key", release.KeyID(o.PublicKey()))
	} else {
		log.Info("origin API listening", "addr", "http://"+ln.Addr().String(), "data", dataDir, "origin_key", filepath.Join(dataDir, "origin.key.pub"))
	}
	return o, srv, closeStores, nil
}

// reportAdminKey tells the operator what the start did about admin keys:
// a generated key is shown once, a CAPSTAN_ADMIN_KEY new to the folder is
// said to have been added beside the keys that stay valid (decision 100).
func reportAdminKey(cmd *cobra.Command, a origin.AdminKeyStart, dataDir string) {
	w := cmd.ErrOrStderr()
	switch {
	case a.Generated != "":
		fmt.Fprintf(w, "\nA new admin API key was generated for %s. It is shown only once; keep it secret:\n\n    CAPSTAN_API_KEY=%s\n\n"+
			"Lost it? Restart with CAPSTAN_ADMIN_KEY set to a secret of your own (openssl rand -hex 32): it is added as an admin key.\n\n", dataDir, a.Generated)
	case a.Added:
		fmt.Fprintf(w, "capstan: CAPSTAN_ADMIN_KEY was new to %s: it is now admin key %s; the folder's %d other admin key(s) stay valid (capstan keys list, capstan keys revoke ID)\n", dataDir, a.ID, a.Others)
	}
}

// startEdge opens an edge; the caller serves it on ln (go e.Serve(ln)).
func startEdge(log *slog.Logger, dataDir string, ln net.Listener, cacheSize int64, origins func() []string, opts ...func(*edge.Config)) (*edge.Server, error) {
	cfg := edge.DefaultConfig(dataDir)
	for _, o := range opts {
		o(&cfg)
	}
	if cacheSize > 0 {
		cfg.CacheSize = cacheSize
	}
	cfg.Origins = origins
	cfg.EventsToken = os.Getenv("CAPSTAN_EVENTS_TOKEN")
	cfg.Logger = log.With("component", "edge")
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.URL == "" {
		// The name the edge reports to the origins' fleet view.
		cfg.URL = publicURL("", ln.Addr())
	}
	e, err := edge.New(cfg)
	if err != nil {
		return nil, err
	}
	log.Info("edge listening", "addr", "http://"+ln.Addr().String(), "data", dataDir)
	return e, nil
}

// multiPublisher hands each newly signed record to several sinks.
type multiPublisher []origin.Publisher

func (m multiPublisher) Publish(env *release.Envelope) error {
	var errs []error
	for _, p := range m {
		if p != nil {
			errs = append(errs, p.Publish(env))
		}
	}
	return errors.Join(errs...)
}

// lazyPublisher forwards to a gossip node once it exists: the origin is
// opened before its gossip node, which needs the origin's URL.
type lazyPublisher struct{ node atomic.Pointer[gossip.Node] }

func (l *lazyPublisher) Publish(env *release.Envelope) error {
	if n := l.node.Load(); n != nil {
		return n.Publish(env)
	}
	return nil
}

// members lists the gossip node's members for the console's fleet view.
func (l *lazyPublisher) members() []origin.Member {
	n := l.node.Load()
	if n == nil {
		return nil
	}
	var out []origin.Member
	for _, m := range n.Members() {
		out = append(out, origin.Member{Name: m.Name, Role: string(m.Meta.Role), URL: m.Meta.HTTP, Region: m.Meta.Region, Self: m.Name == n.Name()})
	}
	return out
}

// members lists the members of the first sink that knows them.
func (m multiPublisher) members() []origin.Member {
	for _, p := range m {
		if l, ok := p.(interface{ members() []origin.Member }); ok {
			return l.members()
		}
	}
	return nil
}

// publishAll seeds the cluster with every record the origin holds, so a
// restarted origin (or a fresh cluster) converges without waiting for a
// change.
func publishAll(o *origin.Server, n *gossip.Node, log *slog.Logger) {
	envs, err := o.Records()
	if err != nil {
		log.Warn("list channel records", "err", err)
		return
	}
	for _, env := range envs {
		if err := n.Publish(env); err != nil && !errors.Is(err, gossip.ErrStale) {
			log.Warn("publish channel record", "err", err)
		}
	}
}

func newDevCmd() *cobra.Command {
	var dataDir, apiAddr, edgeAddr string
	var g gossipOptions
	var cf capgoEdgeFlags
	var pp pprofFlag
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an origin and one edge in one process (embedded Badger store)",
		Long: `Run an origin and one edge in one process, with the data under --data.
More edges can join this origin's cluster: capstan edge --join <the gossip address it prints>.`,
		Example: `  capstan dev
  capstan dev --data /tmp/capstan --api 127.0.0.1:7070 --edge 127.0.0.1:7080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cmd)
			sigCtx, stop := signalContext()
			defer stop()
			ctx, fail := context.WithCancelCause(sigCtx)
			defer fail(nil)
			closeProf, err := pp.start(log)
			if err != nil {
				return err
			}
			defer closeProf()
			var e atomic.Pointer[edge.Server]
			toEdge := origin.PublisherFunc(func(env *release.Envelope) error {
				if s := e.Load(); s != nil {
					s.Apply(env)
				}
				return nil
			})
			lazy := &lazyPublisher{}
			// Every address is taken before the data folder is touched.
			apiLn, err := listen("--api", apiAddr)
			if err != nil {
				return err
			}
			defer apiLn.Close()
			edgeLn, err := listen("--edge", edgeAddr)
			if err != nil {
				return err
			}
			defer edgeLn.Close()
			if err := checkGossipFree(g.bind); err != nil {
				return err
			}
			apiURL := "http://" + apiLn.Addr().String()
			gcfg, err := newGossipConfig(g, gossip.RoleOrigin, apiURL, log)
			if err != nil {
				return err
			}
			keys := &keyHolder{}
			o, api, closeStores, err := startOrigin(cmd, log, filepath.Join(dataDir, "origin"), apiLn, "", multiPublisher{toEdge, lazy}, sharedFlags{}, keys)
			if err != nil {
				return err
			}
			defer closeStores()
			kf, keyPath, err := originClusterKeys(cmd, g, filepath.Join(dataDir, "origin"), o.PublicKey(), log)
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
			es, err := startEdge(log, filepath.Join(dataDir, "edge"), edgeLn, 0, func() []string { return []string{apiURL} }, cf.apply, trustOrigin)
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
				return fmt.Errorf("--gossip %s: %w", g.bind, err)
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
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "./capstan-data", "data folder (origin and edge stores live under it)")
	cmd.Flags().StringVar(&apiAddr, "api", "127.0.0.1:7070", "origin API listen address")
	cmd.Flags().StringVar(&edgeAddr, "edge", "127.0.0.1:7080", "edge HTTP listen address")
	cmd.Flags().StringVar(&g.bind, "gossip", "127.0.0.1:7946", "gossip bind address, for more edges to join")
	g.keyFlags(cmd, "cluster key file (default DATA/origin/cluster.key, made on first start; more edges join with a copy)")
	cf.register(cmd)
	pp.register(cmd)
	return cmd
}

func newOriginCmd() *cobra.Command {
	var dataDir, apiAddr, pub, cosign string
	var g gossipOptions
	var sf sharedFlags
	var rotate bool
	var pp pprofFlag
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
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cmd)
			sigCtx, stop := signalContext()
			defer stop()
			ctx, fail := context.WithCancelCause(sigCtx)
			defer fail(nil)
			closeProf, err := pp.start(log)
			if err != nil {
				return err
			}
			defer closeProf()
			lazy := &lazyPublisher{}
			apiLn, err := listen("--api", apiAddr)
			if err != nil {
				return err
			}
			defer apiLn.Close()
			if err := checkGossipFree(g.bind); err != nil {
				return err
			}
			gcfg, err := newGossipConfig(g, gossip.RoleOrigin, publicURL(pub, apiLn.Addr()), log)
			if err != nil {
				return err
			}
			keys := &keyHolder{}
			o, api, closeStores, err := startOrigin(cmd, log, dataDir, apiLn, pub, lazy, sf, keys)
			if err != nil {
				return err
			}
			defer closeStores()
			defer o.Close()
			kf, keyPath, err := originClusterKeys(cmd, g, dataDir, o.PublicKey(), log)
			if err != nil {
				return err
			}
			setKeys(&gcfg, kf)
			keys.p.Store(kf)
			// The origin's own node checks records like any other: a
			// forged one must not be stored, relayed or handed to new edges.
			gcfg.Verify = o.VerifyRecord
			serving(ctx, fail, log, "origin API", func() error { return api.Serve(apiLn) })
			if rotate {
				if err := rotateOriginKey(ctx, cmd, o, cosign); err != nil {
					api.Close()
					return err
				}
			}
			node, err := gossip.New(gcfg)
			if err != nil {
				api.Close()
				return fmt.Errorf("--gossip %s: %w", g.bind, err)
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
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "./capstan-data/origin", "data folder (with --store and --blobs: temp files only)")
	sf.register(cmd)
	cmd.AddCommand(newMigrateCmd())
	cmd.Flags().BoolVar(&rotate, "rotate-key", false, "replace the origin's channel-signing key on this start, publishing a statement signed by the old key (use once; devices follow at most 32 rotations at a time)")
	cmd.Flags().StringVar(&cosign, "rotate-cosign", "", "with --rotate-key: a release private key that co-signs the statement (recovery when the old origin key is stolen)")
	cmd.Flags().StringVar(&apiAddr, "api", "127.0.0.1:7070", "API listen address")
	cmd.Flags().StringVar(&pub, "public-url", "", "URL edges use to reach this origin's API (default from --api)")
	cmd.Flags().StringVar(&g.bind, "gossip", "127.0.0.1:7946", "gossip bind address")
	cmd.Flags().StringVar(&g.join, "join", "", "comma-separated gossip addresses of cluster members to join")
	g.keyFlags(cmd, "cluster key file (default DATA/cluster.key, made on first start: give every edge a copy)")
	pp.register(cmd)
	return cmd
}

func newEdgeCmd() *cobra.Command {
	var dataDir, httpAddr, cacheSize, originURLs, pub, originKey string
	var g gossipOptions
	var rl rateLimitFlags
	var cf capgoEdgeFlags
	var pp pprofFlag
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run an edge node: answers device checks and serves blobs and patches",
		Long: `Run an edge node. It joins the cluster through --join, learns the origins and the channel
records from gossip, answers device checks from memory and serves blobs from its cache.`,
		Example: `  capstan edge --data /var/lib/capstan-edge --http 0.0.0.0:7080 --gossip 10.0.0.9:7946 --join 10.0.0.5:7946 --cache-size 2GiB`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cmd)
			sigCtx, stop := signalContext()
			defer stop()
			ctx, fail := context.WithCancelCause(sigCtx)
			defer fail(nil)
			closeProf, err := pp.start(log)
			if err != nil {
				return err
			}
			defer closeProf()
			var size int64
			if cacheSize != "" {
				n, err := humanize.ParseBytes(cacheSize)
				if err != nil {
					return usageError("--cache-size %q: %v", cacheSize, err)
				}
				size = int64(n)
			}
			static := splitList(originURLs)
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
			ln, err := listen("--http", httpAddr)
			if err != nil {
				return err
			}
			defer ln.Close()
			if err := checkGossipFree(g.bind); err != nil {
				return err
			}
			kf, err := edgeClusterKeys(g, log)
			if err != nil {
				return err
			}
			okeys, err := originKeys(originKey)
			if err != nil {
				return err
			}
			if kf != nil {
				okeys = append(okeys, kf.OriginKeys...)
			}
			if len(okeys) == 0 {
				return &exitError{code: 2, err: errors.New("no origin public key: the edge trusts only records and origins the origin key signed; give a --cluster-key file made by the origin (it holds the key) or --origin-key DATA/origin.key.pub")}
			}
			gcfg, err := newGossipConfig(g, gossip.RoleEdge, publicURL(pub, ln.Addr()), log)
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
				if g.clusterKey != "" {
					watchClusterKeys(ctx, g.clusterKey, n, keys, log)
				}
				e.Registry().MustRegister(gossipMembers(n))
				log.Info("joined the cluster", "gossip", n.Addr(), "members", len(n.Members()), "origins", len(n.Origins()))
				return func(ctx context.Context) { n.Leave(ctx); n.Shutdown() }, nil
			}
			e, err = startEdge(log, dataDir, ln, size, func() []string { return static }, rl.apply, cf.apply, func(c *edge.Config) {
				c.Join = join
				c.OriginKeys = okeys
				c.EventsTokenFunc = keys.token
				c.ClusterOrigins = announced
				c.InsecureGossip = kf == nil
				if pub != "" {
					c.URL = strings.TrimRight(pub, "/")
				}
			}, withFleet(fleetPeers(&node, kf == nil), g.region))
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
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "./capstan-data/edge", "data folder for the blob cache")
	cmd.Flags().StringVar(&httpAddr, "http", "127.0.0.1:7080", "HTTP listen address for devices")
	cmd.Flags().StringVar(&pub, "public-url", "", "URL devices use to reach this edge (default from --http)")
	cmd.Flags().StringVar(&g.bind, "gossip", "127.0.0.1:7947", "gossip bind address")
	cmd.Flags().StringVar(&g.join, "join", "", "comma-separated gossip addresses of cluster members to join")
	cmd.Flags().StringVar(&g.region, "region", "", "region label announced to the fleet, e.g. eu-west")
	cmd.Flags().StringVar(&cacheSize, "cache-size", "1GiB", "disk cache cap, e.g. 500MB or 2GiB")
	cmd.Flags().StringVar(&originURLs, "origin", "", "comma-separated origin API URLs to pull from, besides those learnt from gossip")
	cmd.Flags().StringVar(&originKey, "origin-key", "", "origin public key (PEM), if the cluster key file holds none: the edge trusts only records and origins it signed")
	g.keyFlags(cmd, "cluster key file the origin made (DATA/cluster.key): admits this edge to the cluster and names the origin key (required unless --insecure-gossip)")
	rl.flags(cmd)
	cf.register(cmd)
	pp.register(cmd)
	return cmd
}

// gossipMembers exports the cluster size and what the node holds and
// refused.
func gossipMembers(n *gossip.Node) prometheus.Collector {
	return collectors{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "capstan_gossip_members", Help: "Alive or suspected members of the gossip cluster, this node included."},
			func() float64 { return float64(len(n.Members())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "capstan_gossip_records", Help: "Channel records this gossip node holds (each verified before it was stored)."},
			func() float64 { return float64(len(n.Records())) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "capstan_gossip_records_refused_total", Help: "Records from the cluster this node dropped: bad signature, expired, seq too far ahead, too many channels."},
			func() float64 { return float64(n.Refused()) }),
	}
}

// collectors registers several collectors as one.
type collectors []prometheus.Collector

func (c collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, x := range c {
		x.Describe(ch)
	}
}

func (c collectors) Collect(ch chan<- prometheus.Metric) {
	for _, x := range c {
		x.Collect(ch)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
