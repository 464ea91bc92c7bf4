package regions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/internal/netsim"
	"github.com/capstan-ota/capstan/release"
)

// Site is one simulated region: an edge whose round trips from devices
// take RTT longer than on loopback.
type Site struct {
	// Region is the edge's region label (capstan edge --region).
	Region string
	// RTT is the round-trip time added between devices and this edge.
	RTT time.Duration
}

// DefaultSites are three regions 5, 40 and 120 ms away: a nearby city,
// another country, another continent.
func DefaultSites() []Site {
	return []Site{{"eu-west", 5 * time.Millisecond}, {"us-east", 40 * time.Millisecond}, {"ap-south", 120 * time.Millisecond}}
}

// Delay modes, reported in Fleet.Mode and Report.Mode.
const (
	// ModeNetem: edges in network namespaces, delay from tc netem on their
	// links (real kernel network delay).
	ModeNetem = "netns+netem"
	// ModeNetnsProxy: edges in network namespaces, but the kernel has no
	// netem, so a delaying proxy in the root namespace fronts each edge.
	ModeNetnsProxy = "netns+proxy"
	// ModeLoopback: edges on loopback, each behind a delaying proxy (no
	// privileges needed).
	ModeLoopback = "loopback+proxy"
)

// FleetConfig configures a fleet in regions. Zero values mean the
// documented defaults.
type FleetConfig struct {
	// Binary is the capstan binary to run (required).
	Binary string
	// Dir holds the data folders (required; the caller removes it).
	Dir string
	// Sites are the regions, one edge each (default DefaultSites).
	Sites []Site
	// Netns puts the edges in network namespaces; StartFleet then fails
	// with an error wrapping netsim.ErrUnavailable where it cannot.
	Netns bool
	// AdminKey is the origin's admin API key (default a fixed test key).
	AdminKey string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// NetLogf receives each ip and tc command run for the namespaces; nil
	// discards them.
	NetLogf func(format string, args ...any)
}

// Edge is one edge of a Fleet.
type Edge struct {
	Site
	// URL is the edge's public URL, the one devices use.
	URL string

	dataDir string
	proc    *proc
	proxy   *netsim.Proxy // nil with netem
	host    *netsim.Host  // nil on loopback
}

// Fleet is an origin and one edge per site, as processes. Its methods are
// not safe for concurrent use.
type Fleet struct {
	// API is the origin's API URL.
	API string
	// Edges are the edges, in the order of FleetConfig.Sites.
	Edges []*Edge

	cfg    FleetConfig
	mode   string
	net    *netsim.Net
	origin *proc
	gossip string // the origin's gossip address, for edges to join
	client *http.Client
}

var (
	originLine = regexp.MustCompile(`origin API listening.*addr=(http://\S+)[\s\S]*gossip listening.*addr=(\S+)`)
	edgeLine   = regexp.MustCompile(`edge listening.*addr=http://(\S+)`)
	joinedLine = regexp.MustCompile(`joined the cluster`)
)

// StartFleet starts the origin and the edges and waits until every edge
// has joined the cluster. Close it when done, also after an error.
func StartFleet(ctx context.Context, cfg FleetConfig) (*Fleet, error) {
	if cfg.Binary == "" || cfg.Dir == "" {
		return nil, errors.New("regions: Binary and Dir are required")
	}
	if len(cfg.Sites) == 0 {
		cfg.Sites = DefaultSites()
	}
	if cfg.AdminKey == "" {
		cfg.AdminKey = "regions-bench-admin-key-0123456789abcdef"
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	f := &Fleet{cfg: cfg, mode: ModeLoopback, client: &http.Client{Timeout: 10 * time.Second}}
	bind := "127.0.0.1"
	if cfg.Netns {
		n, err := netsim.NewNet(ctx, cfg.NetLogf)
		if err != nil {
			return nil, err
		}
		f.net = n
		f.mode = ModeNetnsProxy
		if n.Netem() {
			f.mode = ModeNetem
		}
		bind = n.RootIP()
	}
	cfg.Logf("regions: starting an origin and %d edges (%s)", len(cfg.Sites), f.mode)
	cmd := exec.CommandContext(ctx, cfg.Binary, "origin", "--data", filepath.Join(cfg.Dir, "origin"),
		"--api", bind+":0", "--gossip", bind+":0")
	cmd.Env = append(os.Environ(), "CAPSTAN_ADMIN_KEY="+cfg.AdminKey)
	p, err := startProc(cmd)
	if err != nil {
		f.Close()
		return nil, err
	}
	f.origin = p
	m, err := p.waitFor(ctx, 30*time.Second, originLine)
	if err != nil {
		f.Close()
		return nil, err
	}
	f.API, f.gossip = m[1], m[2]
	for i, s := range cfg.Sites {
		e := &Edge{Site: s, dataDir: filepath.Join(cfg.Dir, fmt.Sprintf("edge-%d-%s", i, s.Region))}
		f.Edges = append(f.Edges, e)
		if f.net != nil {
			if e.host, err = f.net.AddHost(ctx, s.RTT); err != nil {
				f.Close()
				return nil, err
			}
		}
		if e.host == nil || !e.host.Netem {
			if e.proxy, err = netsim.NewProxy(bind+":0", "127.0.0.1:1", s.RTT/2); err != nil {
				f.Close()
				return nil, err
			}
			e.URL = "http://" + e.proxy.Addr()
		} else {
			e.URL = "http://" + e.host.IP + ":7080"
		}
		if err := f.startEdge(ctx, e); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// Mode is how delay is added: ModeNetem, ModeNetnsProxy or ModeLoopback.
func (f *Fleet) Mode() string { return f.mode }

func (f *Fleet) startEdge(ctx context.Context, e *Edge) error {
	args := []string{"edge", "--data", e.dataDir, "--join", f.gossip, "--region", e.Region,
		"--cluster-key", filepath.Join(f.cfg.Dir, "origin", "cluster.key"),
		"--public-url", e.URL, "--cache-size", "256MiB"}
	var cmd *exec.Cmd
	if e.host != nil {
		// Fixed ports are fine: the namespace is the edge's own.
		args = append(args, "--http", e.host.IP+":7080", "--gossip", e.host.IP+":7946")
		cmd = e.host.Command(ctx, f.cfg.Binary, args...)
	} else {
		args = append(args, "--http", "127.0.0.1:0", "--gossip", "127.0.0.1:0")
		cmd = exec.CommandContext(ctx, f.cfg.Binary, args...)
	}
	p, err := startProc(cmd)
	if err != nil {
		return err
	}
	e.proc = p
	m, err := p.waitFor(ctx, 30*time.Second, edgeLine)
	if err != nil {
		return err
	}
	if e.proxy != nil {
		e.proxy.SetTarget(m[1])
	}
	if _, err := p.waitFor(ctx, 30*time.Second, joinedLine); err != nil {
		return err
	}
	f.cfg.Logf("regions: edge %s (+%s) at %s", e.Region, e.RTT, e.URL)
	return nil
}

// Kill kills edge i at once, like a crash.
func (f *Fleet) Kill(i int) {
	f.Edges[i].proc.kill()
	f.cfg.Logf("regions: killed edge %s", f.Edges[i].Region)
}

// Restart starts edge i again on its data folder and public URL.
func (f *Fleet) Restart(ctx context.Context, i int) error {
	e := f.Edges[i]
	e.proc.kill()
	return f.startEdge(ctx, e)
}

// Upload runs `capstan upload` of the bundle at path to the channel.
func (f *Fleet) Upload(ctx context.Context, app, channel, version, path string) error {
	cmd := exec.CommandContext(ctx, f.cfg.Binary, "upload", "--app", app, "--version", version, "--channel", channel, "--json", path)
	cmd.Env = append(os.Environ(), "CAPSTAN_SERVER="+f.API, "CAPSTAN_API_KEY="+f.cfg.AdminKey)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("regions: upload %s %s: %w: %s", app, version, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Serves reports whether edge i offers version on app/channel to a fresh
// device and lists at least n edges in GET /v1/edges.
func (f *Fleet) Serves(ctx context.Context, i int, app, channel, version string, n int) bool {
	e := f.Edges[i]
	var ans struct {
		Channel *release.Envelope `json:"channel"`
	}
	q := url.Values{"app": {app}, "channel": {channel}, "device": {"regions-probe"}}
	if f.getJSON(ctx, e.URL+"/v1/check?"+q.Encode(), &ans) != nil || ans.Channel == nil {
		return false
	}
	ch, err := ans.Channel.Channel()
	if err != nil || ch.Release.Version != version {
		return false
	}
	var fleet struct {
		Edges []json.RawMessage `json:"edges"`
	}
	return f.getJSON(ctx, e.URL+"/v1/edges", &fleet) == nil && len(fleet.Edges) >= n
}

// WaitServing polls until every edge in idx (all if none) Serves version
// and lists every running edge, or timeout passes.
func (f *Fleet) WaitServing(ctx context.Context, timeout time.Duration, app, channel, version string, idx ...int) error {
	if len(idx) == 0 {
		for i := range f.Edges {
			idx = append(idx, i)
		}
	}
	deadline := time.Now().Add(timeout)
	for _, i := range idx {
		for !f.Serves(ctx, i, app, channel, version, len(idx)) {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("regions: edge %s does not serve %s with %d edges listed after %s", f.Edges[i].Region, version, len(idx), timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func (f *Fleet) getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("regions: %s: %s", u, resp.Status)
	}
	return json.Unmarshal(b, v)
}

// Close stops every process, the proxies and the namespaces.
func (f *Fleet) Close() error {
	for _, e := range f.Edges {
		e.proc.kill()
		if e.proxy != nil {
			e.proxy.Close()
		}
	}
	f.origin.kill()
	if f.net != nil {
		return f.net.Close()
	}
	return nil
}
