package device_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/internal/bundle"
	"github.com/capstan-ota/capstan/internal/fleettest"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
)

const testApp = "com.example.app"

// clock is a settable clock shared by the origin and the devices of a test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// cluster is a real origin and a real edge in this process, with a
// tampering proxy in front of the edge that the test controls.
type cluster struct {
	t          *testing.T
	clock      *clock
	origin     *origin.Server
	originURL  string
	edge       *edge.Server
	edgeURL    string
	edgeDir    string
	originDir  string
	proxy      *tamperProxy
	releaseKey ed25519.PrivateKey
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, clock: &clock{now: time.Now().UTC()}}
	f := fleettest.New(t, fleettest.Config{Origin: func(cfg *origin.Config) { cfg.Now = c.clock.Now }})
	e := f.StartEdge(nil)
	c.origin, c.originURL, c.originDir = f.Origin(), f.OriginURL(), f.OriginDir()
	c.edge, c.edgeURL, c.edgeDir = e.Server, e.URL, e.Dir
	c.proxy = newTamperProxy(t, c.edgeURL)
	t.Cleanup(c.proxy.srv.Close)
	var err error
	c.releaseKey, err = release.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// keys returns the public keys a device of this cluster trusts.
func (c *cluster) keys() []release.PublicKey {
	return []release.PublicKey{
		{Key: c.releaseKey.Public().(ed25519.PublicKey), Role: release.RoleRelease},
		{Key: c.origin.PublicKey(), Role: release.RoleOrigin},
	}
}

// originPrivateKey reads the origin's online key from its data folder (for
// tests that model an attacker who stole it).
func (c *cluster) originPrivateKey() ed25519.PrivateKey {
	b, err := os.ReadFile(filepath.Join(c.originDir, "origin.key"))
	if err != nil {
		c.t.Fatal(err)
	}
	k, err := release.ParsePrivateKey(b)
	if err != nil {
		c.t.Fatal(err)
	}
	return k
}

// zipFiles makes a deterministic bundle zip of files.
func zipFiles(t *testing.T, files map[string]string) []byte {
	t.Helper()
	dir := t.TempDir()
	for p, body := range files {
		fp := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.ZipDir(dir, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// signZip computes a zip's manifest and signs it with key, as CI does.
func signZip(t *testing.T, zip []byte, app, version, minNative string, key ed25519.PrivateKey) *release.Envelope {
	t.Helper()
	entries, err := bundle.Read(bytes.NewReader(zip), int64(len(zip)), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.Manifest(context.Background(), entries, app, version, minNative, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.EncodeDoc()
	if err != nil {
		t.Fatal(err)
	}
	return release.Seal(b, key)
}

type uploadOpts struct {
	app, channel, minNative string
	key                     ed25519.PrivateKey // nil: the cluster's release key
}

// upload stores a signed release and points the channel at it.
func (c *cluster) upload(version string, files map[string]string, o uploadOpts) *release.Record {
	c.t.Helper()
	if o.app == "" {
		o.app = testApp
	}
	if o.channel == "" {
		o.channel = "production"
	}
	if o.key == nil {
		o.key = c.releaseKey
	}
	z := zipFiles(c.t, files)
	env := signZip(c.t, z, o.app, version, o.minNative, o.key)
	rec, err := c.origin.Upload(context.Background(), &origin.UploadRequest{
		App: o.app, Version: version, MinNative: o.minNative, Channel: o.channel,
		RolloutBPS: release.FullRollout, Envelope: env, NewChannel: true,
	}, bytes.NewReader(z))
	if err != nil {
		c.t.Fatalf("upload %s: %v", version, err)
	}
	return rec
}

type devOpts struct {
	edges   []string // default: the proxy
	channel string
	native  string
	timeout time.Duration
	keys    []release.PublicKey // default: the cluster's keys
	dir     string
}

func (c *cluster) device(o devOpts) (*device.Device, string) {
	c.t.Helper()
	if o.edges == nil {
		o.edges = []string{c.proxy.srv.URL}
	}
	if o.channel == "" {
		o.channel = "production"
	}
	if o.keys == nil {
		o.keys = c.keys()
	}
	if o.dir == "" {
		o.dir = c.t.TempDir()
	}
	d, err := device.New(device.Config{
		Dir: o.dir, Edges: o.edges, App: testApp, Channel: o.channel, DeviceID: "dev-1",
		NativeVersion: o.native, Keys: o.keys, RequestTimeout: o.timeout, Now: c.clock.Now,
		// The attacks are about what a device installs, not about health:
		// no revert of unconfirmed releases (the clock jumps), no events,
		// and the edges tried in the order given (a ranking would put a
		// slow or hostile edge last once the edges are ready).
		ConfirmTimeout: -1, NoEvents: true, Ranking: device.RankConfig{Off: true},
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return d, o.dir
}

// tree returns the files under dir/current.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	root := filepath.Join(dir, "current")
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	return out
}

func sameTree(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	got := tree(t, dir)
	if len(got) != len(want) {
		t.Fatalf("current has %v, want %v", keysOf(got), keysOf(want))
	}
	for p, b := range want {
		if got[p] != b {
			t.Fatalf("current/%s = %q, want %q", p, got[p], b)
		}
	}
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// mustFail asserts a failed result whose error mentions want, and that the
// device still holds exactly keep.
func mustFail(t *testing.T, res device.Result, want string, dir string, keep map[string]string) {
	t.Helper()
	if res.Status != device.StatusFailed {
		t.Fatalf("status %q (error %q), want failed", res.Status, res.Error)
	}
	if !strings.Contains(res.Error, want) {
		t.Fatalf("error %q does not mention %q", res.Error, want)
	}
	sameTree(t, dir, keep)
}

// tamperProxy is an HTTP proxy in front of the edge. A hook may answer a
// request itself (returning true) or leave it to the edge.
type tamperProxy struct {
	t      *testing.T
	edge   string
	mu     sync.Mutex
	hook   func(w http.ResponseWriter, r *http.Request) bool
	srv    *httptest.Server
	hits   map[string]int
	client *http.Client
}

func newTamperProxy(t *testing.T, edgeURL string) *tamperProxy {
	u, err := url.Parse(edgeURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &tamperProxy{t: t, edge: edgeURL, hits: map[string]int{}, client: &http.Client{Timeout: 30 * time.Second}}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		hook := p.hook
		p.hits[routeOf(r.URL.Path)]++
		p.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	return p
}

func routeOf(path string) string {
	parts := strings.SplitN(strings.TrimPrefix(path, "/"), "/", 3)
	if len(parts) >= 2 {
		return parts[1]
	}
	return path
}

func (p *tamperProxy) set(hook func(w http.ResponseWriter, r *http.Request) bool) {
	p.mu.Lock()
	p.hook = hook
	p.mu.Unlock()
}

func (p *tamperProxy) count(route string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits[route]
}

// fetch GETs path (with query) from the real edge.
func (p *tamperProxy) fetch(pathQuery string) []byte {
	resp, err := p.client.Get(p.edge + pathQuery)
	if err != nil {
		p.t.Errorf("fetch %s: %v", pathQuery, err)
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Errorf("fetch %s: %v", pathQuery, err)
	}
	return b
}

// signedRecord returns the origin's current signed record of a channel, as
// any edge or gossip member can read it from GET /v1/state.
func (c *cluster) signedRecord(app, channel string) *release.Envelope {
	c.t.Helper()
	resp, err := c.proxy.client.Get(c.originURL + "/v1/state")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Channels []*release.Envelope `json:"channels"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		c.t.Fatal(err)
	}
	for _, env := range st.Channels {
		if ch, err := env.Channel(); err == nil && ch.App == app && ch.Channel == channel {
			return env
		}
	}
	c.t.Fatalf("no record for %s/%s", app, channel)
	return nil
}
