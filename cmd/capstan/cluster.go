package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/capstan-ota/capstan/gossip"
	"github.com/capstan-ota/capstan/release"
)

// gossipOptions are the cluster flags shared by origin, edge and dev.
type gossipOptions struct {
	bind   string
	join   string
	region string
	// clusterKey is the cluster key file (--cluster-key); insecure is
	// --insecure-gossip: no key, an unauthenticated cluster.
	clusterKey string
	insecure   bool
}

// keyFlags registers --cluster-key (with help) and --insecure-gossip.
func (o *gossipOptions) keyFlags(cmd *cobra.Command, help string) {
	cmd.Flags().StringVar(&o.clusterKey, "cluster-key", "", help)
	cmd.Flags().BoolVar(&o.insecure, "insecure-gossip", false, "run gossip without the cluster key: any host that reaches the gossip port can join (testing only)")
}

// insecureGossipWarning is said at every start of a node without the
// cluster key, and in an edge's /healthz.
const insecureGossipWarning = "gossip is NOT authenticated (--insecure-gossip): any host that reaches the gossip port can join this cluster"

// envGossipKey reads CAPSTAN_GOSSIP_KEY (a base64 key, the way clusters
// were keyed before key files); nil when unset.
func envGossipKey() ([]byte, error) {
	k := os.Getenv("CAPSTAN_GOSSIP_KEY")
	if k == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil || (len(b) != 16 && len(b) != 24 && len(b) != 32) {
		return nil, errors.New("CAPSTAN_GOSSIP_KEY must be 16, 24 or 32 bytes, base64-encoded (openssl rand -base64 32)")
	}
	return b, nil
}

// originClusterKeys returns the cluster key file of an origin (or dev),
// creating it on first start in the data folder: a fresh gossip key (or
// CAPSTAN_GOSSIP_KEY) and the origin's public key. It returns nil with
// --insecure-gossip.
func originClusterKeys(cmd *cobra.Command, o gossipOptions, dataDir string, pub ed25519.PublicKey, log *slog.Logger) (*gossip.KeyFile, string, error) {
	if o.insecure {
		if o.clusterKey != "" {
			return nil, "", &exitError{code: 2, err: errors.New("--insecure-gossip and --cluster-key exclude each other")}
		}
		log.Warn(insecureGossipWarning)
		return nil, "", nil
	}
	path := o.clusterKey
	if path == "" {
		path = filepath.Join(dataDir, "cluster.key")
	}
	env, err := envGossipKey()
	if err != nil {
		return nil, "", err
	}
	created, err := gossip.CreateKeyFile(path, env, pub)
	if err != nil {
		return nil, "", err
	}
	kf, err := gossip.ReadKeyFile(path)
	if err != nil {
		return nil, "", err
	}
	if created {
		fmt.Fprintf(cmd.ErrOrStderr(), "\nA new cluster key file was made: %s\nEvery edge needs a copy (capstan edge --cluster-key FILE): it admits nodes to the cluster and names the origin's key. Keep it secret.\n\n", path)
	}
	log.Info("cluster key file", "path", path, "gossip_keys", len(kf.Keys))
	return kf, path, nil
}

// edgeClusterKeys returns the cluster keys of an edge: its --cluster-key
// file, or CAPSTAN_GOSSIP_KEY; nil with --insecure-gossip. Without any it
// refuses to start: an edge that joins an unauthenticated cluster can be
// fed members and records by anyone on the network.
func edgeClusterKeys(o gossipOptions, log *slog.Logger) (*gossip.KeyFile, error) {
	if o.insecure && o.clusterKey != "" {
		return nil, &exitError{code: 2, err: errors.New("--insecure-gossip and --cluster-key exclude each other")}
	}
	if o.clusterKey != "" {
		return gossip.ReadKeyFile(o.clusterKey)
	}
	env, err := envGossipKey()
	if err != nil {
		return nil, err
	}
	if env != nil {
		return &gossip.KeyFile{Keys: [][]byte{env}}, nil
	}
	if o.insecure {
		log.Warn(insecureGossipWarning)
		return nil, nil
	}
	return nil, &exitError{code: 2, err: errors.New("no cluster key: give --cluster-key FILE (the origin made it at DATA/cluster.key on its first start and printed where), or --insecure-gossip for an unauthenticated test cluster")}
}

// setKeys puts the cluster keys into a gossip config.
func setKeys(cfg *gossip.Config, kf *gossip.KeyFile) {
	if kf == nil {
		return
	}
	cfg.SecretKey = kf.Keys[0]
	cfg.ExtraKeys = kf.Keys[1:]
}

// keyHolder holds a node's current cluster keys (nil without any), for
// the events tokens derived from them.
type keyHolder struct {
	p atomic.Pointer[gossip.KeyFile]
}

// tokens are the events tokens an origin accepts.
func (h *keyHolder) tokens() []string {
	if kf := h.p.Load(); kf != nil {
		return kf.EventsTokens()
	}
	return nil
}

// token is the events token an edge sends.
func (h *keyHolder) token() string {
	if t := h.tokens(); len(t) > 0 {
		return t[0]
	}
	return ""
}

// clusterKeyReload is how often a node looks at its cluster key file for
// a key rotation (SIGHUP makes it look at once).
const clusterKeyReload = 5 * time.Second

// watchClusterKeys applies changes of the cluster key file to a running
// node, so the cluster key rotates without a restart (docs/operations.md):
// on SIGHUP and every clusterKeyReload. A file that does not parse is
// logged and the node keeps its keys.
func watchClusterKeys(ctx context.Context, path string, node *gossip.Node, keys *keyHolder, log *slog.Logger) {
	if path == "" {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	last, _ := os.ReadFile(path)
	go func() {
		defer signal.Stop(hup)
		t := time.NewTicker(clusterKeyReload)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			case <-t.C:
			}
			b, err := os.ReadFile(path)
			if err != nil {
				log.Warn("cluster key file unreadable; keeping the keys in use", "path", path, "err", err)
				continue
			}
			if bytes.Equal(b, last) {
				continue
			}
			kf, err := gossip.ParseKeyFile(b)
			if err == nil {
				err = node.SetKeys(kf.Keys[0], kf.Keys[1:])
			}
			if err != nil {
				log.Error("cluster key file changed but cannot be used; keeping the keys in use", "path", path, "err", err)
				continue
			}
			last = b
			keys.p.Store(kf)
			log.Info("cluster keys reloaded", "path", path, "gossip_keys", len(kf.Keys))
		}
	}()
}

// newGossipConfig builds a node config. Loopback clusters (tests, one
// machine) get the local profile's fast timers; anything else the LAN one.
func newGossipConfig(o gossipOptions, role gossip.Role, httpURL string, log *slog.Logger) (gossip.Config, error) {
	cfg := gossip.DefaultConfig()
	if host, _, err := net.SplitHostPort(o.bind); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			cfg = gossip.DefaultLocalConfig()
		}
	}
	cfg.BindAddr = o.bind
	cfg.Join = splitList(o.join)
	cfg.Meta = gossip.Meta{Role: role, HTTP: httpURL, Region: o.region}
	cfg.Logger = log.With("component", "gossip")
	return cfg, nil
}

// publicURL turns a listen address into the URL other nodes use, unless
// the operator gave one.
func publicURL(given string, ln net.Addr) string {
	if given != "" {
		return strings.TrimRight(given, "/")
	}
	host, port, _ := net.SplitHostPort(ln.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}

// originKeys reads the origin public keys an edge checks records against
// (edges hold no signing key, but can check signatures so that a rogue
// gossip member cannot feed them records). The edge then follows the
// origin's key rotations on its own.
func originKeys(file string) ([]release.PublicKey, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--origin-key: %w", err)
	}
	keys, err := release.ParsePublicKeys(b)
	if err != nil {
		return nil, fmt.Errorf("--origin-key %s: %w", file, err)
	}
	return keys, nil
}
