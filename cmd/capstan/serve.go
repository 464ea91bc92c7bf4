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

	"sync/atomic"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/gossip"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
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

// startServer is how a server command starts: its logger, a context
// that a signal or a failed listener (serving) ends, and the pprof
// listener of --pprof. stop releases them.
func startServer(cmd *cobra.Command, pp pprofFlag) (ctx context.Context, fail context.CancelCauseFunc, log *slog.Logger, stop func(), err error) {
	log = newLogger(cmd)
	sigCtx, stopSignals := signalContext()
	ctx, fail = context.WithCancelCause(sigCtx)
	closeProf, err := pp.start(log)
	if err != nil {
		fail(nil)
		stopSignals()
		return nil, nil, nil, nil, err
	}
	return ctx, fail, log, func() { closeProf(); fail(nil); stopSignals() }, nil
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
