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

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
	"github.com/dustin/go-humanize"
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

// startOrigin opens an origin and serves its API on addr.
func startOrigin(cmd *cobra.Command, log *slog.Logger, dataDir, addr string, pub origin.Publisher) (*origin.Server, *http.Server, net.Listener, error) {
	cfg := origin.DefaultConfig(dataDir)
	cfg.AdminKey = os.Getenv("CAPSTAN_ADMIN_KEY")
	cfg.Logger = log.With("component", "origin")
	cfg.Publisher = pub
	if err := releaseConfig(cmd, &cfg); err != nil {
		return nil, nil, nil, err
	}
	o, err := origin.New(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	if k := o.GeneratedAdminKey(); k != "" {
		fmt.Fprintf(cmd.ErrOrStderr(), "\nA new admin API key was generated. It is shown only once; keep it secret:\n\n    CAPSTAN_API_KEY=%s\n\n", k)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		o.Close()
		return nil, nil, nil, fmt.Errorf("origin API: %w", err)
	}
	srv := &http.Server{
		Handler:           o.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	go srv.Serve(ln)
	log.Info("origin API listening", "addr", "http://"+ln.Addr().String(), "data", dataDir, "origin_key", filepath.Join(dataDir, "origin.key.pub"))
	return o, srv, ln, nil
}

func startEdge(log *slog.Logger, dataDir, addr string, cacheSize int64, origins func() []string) (*edge.Server, net.Listener, error) {
	cfg := edge.DefaultConfig(dataDir)
	if cacheSize > 0 {
		cfg.CacheSize = cacheSize
	}
	cfg.Origins = origins
	cfg.EventsToken = os.Getenv("CAPSTAN_EVENTS_TOKEN")
	cfg.Logger = log.With("component", "edge")
	e, err := edge.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		e.Shutdown(context.Background())
		return nil, nil, fmt.Errorf("edge HTTP: %w", err)
	}
	go e.Serve(ln)
	log.Info("edge listening", "addr", "http://"+ln.Addr().String(), "data", dataDir)
	return e, ln, nil
}

func newDevCmd() *cobra.Command {
	var dataDir, apiAddr, edgeAddr string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an origin and one edge in one process (embedded Badger store)",
		Example: `  capstan dev
  capstan dev --data /tmp/capstan --api 127.0.0.1:7070 --edge 127.0.0.1:7080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cmd)
			ctx, stop := signalContext()
			defer stop()
			var e *edge.Server
			pub := origin.PublisherFunc(func(env *release.Envelope) error {
				if e != nil {
					e.Apply(env)
				}
				return nil
			})
			o, api, apiLn, err := startOrigin(cmd, log, filepath.Join(dataDir, "origin"), apiAddr, pub)
			if err != nil {
				return err
			}
			apiURL := "http://" + apiLn.Addr().String()
			e, edgeLn, err := startEdge(log, filepath.Join(dataDir, "edge"), edgeAddr, 0, func() []string { return []string{apiURL} })
			if err != nil {
				api.Close()
				o.Close()
				return err
			}
			syncCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := e.SyncFromOrigin(syncCtx); err != nil {
				log.Warn("first sync from origin", "err", err)
			}
			cancel()
			go e.PollOrigins(ctx, 30*time.Second)
			fmt.Fprintf(cmd.ErrOrStderr(), "capstan dev: origin API %s, edge %s (Ctrl-C to stop)\n", apiURL, "http://"+edgeLn.Addr().String())
			<-ctx.Done()
			log.Info("shutting down")
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			api.Shutdown(sctx)
			err = errors.Join(e.Shutdown(sctx), o.Close())
			return err
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "./capstan-data", "data folder (origin and edge stores live under it)")
	cmd.Flags().StringVar(&apiAddr, "api", "127.0.0.1:7070", "origin API listen address")
	cmd.Flags().StringVar(&edgeAddr, "edge", "127.0.0.1:7080", "edge HTTP listen address")
	return cmd
}

func newOriginCmd() *cobra.Command {
	var dataDir, apiAddr, gossipAddr, join string
	cmd := &cobra.Command{
		Use:     "origin",
		Short:   "Run an origin node: the CI API, the release store, the channel signer",
		Example: `  CAPSTAN_ADMIN_KEY=... capstan origin --data /var/lib/capstan --api 0.0.0.0:7070 --gossip 0.0.0.0:7946`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cmd)
			ctx, stop := signalContext()
			defer stop()
			o, api, _, err := startOrigin(cmd, log, dataDir, apiAddr, nil)
			if err != nil {
				return err
			}
			_ = gossipAddr
			_ = join
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			api.Shutdown(sctx)
			return o.Close()
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "./capstan-data/origin", "data folder")
	cmd.Flags().StringVar(&apiAddr, "api", "127.0.0.1:7070", "API listen address")
	cmd.Flags().StringVar(&gossipAddr, "gossip", "127.0.0.1:7946", "gossip bind address")
	cmd.Flags().StringVar(&join, "join", "", "comma-separated gossip addresses of cluster members to join")
	return cmd
}

func newEdgeCmd() *cobra.Command {
	var dataDir, httpAddr, gossipAddr, join, cacheSize, originURLs string
	cmd := &cobra.Command{
		Use:     "edge",
		Short:   "Run an edge node: answers device checks and serves blobs and patches",
		Example: `  capstan edge --data /var/lib/capstan-edge --http 0.0.0.0:7080 --gossip 0.0.0.0:7947 --join origin-1:7946 --cache-size 2GiB`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cmd)
			ctx, stop := signalContext()
			defer stop()
			var size int64
			if cacheSize != "" {
				n, err := humanize.ParseBytes(cacheSize)
				if err != nil {
					return fmt.Errorf("--cache-size %q: %w", cacheSize, err)
				}
				size = int64(n)
			}
			origins := splitList(originURLs)
			_ = gossipAddr
			_ = join
			e, _, err := startEdge(log, dataDir, httpAddr, size, func() []string { return origins })
			if err != nil {
				return err
			}
			go e.PollOrigins(ctx, 5*time.Second)
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return e.Shutdown(sctx)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "./capstan-data/edge", "data folder for the blob cache")
	cmd.Flags().StringVar(&httpAddr, "http", "127.0.0.1:7080", "HTTP listen address for devices")
	cmd.Flags().StringVar(&gossipAddr, "gossip", "127.0.0.1:7947", "gossip bind address")
	cmd.Flags().StringVar(&join, "join", "", "comma-separated gossip addresses of cluster members to join")
	cmd.Flags().StringVar(&cacheSize, "cache-size", "1GiB", "disk cache cap, e.g. 500MB or 2GiB")
	cmd.Flags().StringVar(&originURLs, "origin", "", "comma-separated origin API URLs to pull from (besides those learnt from gossip)")
	return cmd
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
