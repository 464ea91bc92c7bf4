package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/gossip"
	"github.com/capstan-ota/capstan/release"
)

// gossipOptions are the cluster flags shared by origin, edge and dev.
type gossipOptions struct {
	bind   string
	join   string
	region string
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
	if k := os.Getenv("CAPSTAN_GOSSIP_KEY"); k != "" {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil || (len(b) != 16 && len(b) != 24 && len(b) != 32) {
			return cfg, errors.New("CAPSTAN_GOSSIP_KEY must be 16, 24 or 32 bytes, base64-encoded (openssl rand -base64 32)")
		}
		cfg.SecretKey = b
	}
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

// recordVerifier is the gossip Verify hook of an edge with origin keys:
// the edge's signature check (which follows key rotations) and freshness.
func recordVerifier(e *edge.Server) func(*release.Envelope, *release.Channel) error {
	return func(env *release.Envelope, ch *release.Channel) error {
		if err := e.VerifyRecord(env, ch); err != nil {
			return err
		}
		if time.Now().After(ch.Expires) {
			return fmt.Errorf("record %s expired at %s", ch.Key(), ch.Expires)
		}
		return nil
	}
}
