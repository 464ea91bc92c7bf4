package fleettest

import (
	"archive/zip"
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
)

// AdminKey is the origin's admin API key in every Fleet.
const AdminKey = "fleettest-admin-key"

// Config shapes a Fleet. The zero value is an origin with the defaults.
type Config struct {
	// Origin adjusts the origin's configuration; DataDir, AdminKey and
	// Publisher are the harness's.
	Origin func(*origin.Config)
	// WrapOrigin, if set, wraps the origin's HTTP API (to count what edges
	// pull, or to play an outage).
	WrapOrigin func(http.Handler) http.Handler
	// NoPush keeps the origin from handing its channel records to the
	// edges (as gossip does): they learn them only by pulling.
	NoPush bool
}

// Fleet is a real origin (Badger in a temporary folder) serving its API
// on 127.0.0.1, and the real edges a test starts, which pull from it and,
// unless Config.NoPush, receive every channel record it signs at once, as
// gossip would deliver it. Everything stops when the test ends.
type Fleet struct {
	t    testing.TB
	cfg  Config
	ocfg origin.Config

	mu    sync.Mutex // guards the fields below
	o     *origin.Server
	osrv  *http.Server
	oURL  string
	edges []*Edge
}

// Edge is one edge of a Fleet.
type Edge struct {
	*edge.Server
	// URL is the edge's base URL, Dir its data folder.
	URL, Dir string

	stopOnce sync.Once
}

// New starts the origin of a fleet; StartEdge adds edges.
func New(t testing.TB, cfg Config) *Fleet {
	t.Helper()
	f := &Fleet{t: t, cfg: cfg}
	f.ocfg = origin.DefaultConfig(filepath.Join(t.TempDir(), "origin"))
	if cfg.Origin != nil {
		cfg.Origin(&f.ocfg)
	}
	f.ocfg.AdminKey = AdminKey
	if !cfg.NoPush {
		f.ocfg.Publisher = origin.PublisherFunc(func(env *release.Envelope) error {
			f.mu.Lock()
			edges := f.edges
			f.mu.Unlock()
			for _, e := range edges {
				e.Apply(env)
			}
			return nil
		})
	}
	f.startOrigin()
	t.Cleanup(f.stopOrigin)
	return f
}

func (f *Fleet) startOrigin() {
	f.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	// The origin knows the URL it serves at, as a deployed one does: it
	// signs an origin statement naming it.
	cfg := f.ocfg
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://" + ln.Addr().String()
	}
	o, err := origin.New(cfg)
	if err != nil {
		ln.Close()
		f.t.Fatalf("fleettest: start origin: %v", err)
	}
	h := o.Handler()
	if f.cfg.WrapOrigin != nil {
		h = f.cfg.WrapOrigin(h)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	f.mu.Lock()
	f.o, f.osrv, f.oURL = o, srv, "http://"+ln.Addr().String()
	f.mu.Unlock()
}

func (f *Fleet) stopOrigin() {
	f.mu.Lock()
	o, srv := f.o, f.osrv
	f.o, f.osrv = nil, nil
	f.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
	if o != nil {
		o.Close()
	}
}

// RestartOrigin closes the origin and opens its data folder again, on a
// new address that the fleet's edges and API client follow.
func (f *Fleet) RestartOrigin() {
	f.stopOrigin()
	f.startOrigin()
}

// Origin returns the running origin.
func (f *Fleet) Origin() *origin.Server {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.o
}

// OriginURL returns the origin API's base URL.
func (f *Fleet) OriginURL() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.oURL
}

// OriginConfig returns the origin's configuration.
func (f *Fleet) OriginConfig() origin.Config { return f.ocfg }

// OriginDir returns the origin's data folder.
func (f *Fleet) OriginDir() string { return f.ocfg.DataDir }

// API returns a client of the origin API with the admin key.
func (f *Fleet) API() *client.Client {
	return &client.Client{Server: f.OriginURL(), APIKey: AdminKey}
}

// StartEdge starts an edge that pulls from the fleet's origin, serving on
// 127.0.0.1. adjust, if set, changes its configuration (Origins is the
// harness's unless adjust sets it). The edge shuts down when the test ends,
// unless the test stopped it first (Edge.Stop).
func (f *Fleet) StartEdge(adjust func(*edge.Config)) *Edge {
	f.t.Helper()
	dir, err := os.MkdirTemp(f.t.TempDir(), "edge-")
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := edge.DefaultConfig(dir)
	cfg.Origins = func() []string { return []string{f.OriginURL()} }
	if adjust != nil {
		adjust(&cfg)
	}
	s, err := edge.New(cfg)
	if err != nil {
		f.t.Fatalf("fleettest: start edge: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	go s.Serve(ln)
	e := &Edge{Server: s, URL: "http://" + ln.Addr().String(), Dir: cfg.DataDir}
	f.mu.Lock()
	f.edges = append(f.edges, e)
	f.mu.Unlock()
	f.t.Cleanup(e.Stop)
	return e
}

// Stop shuts the edge down (once; later calls do nothing).
func (e *Edge) Stop() {
	e.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
}

// Upload stores a release of app made of files (path → content) through
// the origin's Go API; req names the version, channel and rollout (App
// and Version must be set).
func (f *Fleet) Upload(req origin.UploadRequest, files map[string]string) *release.Record {
	f.t.Helper()
	rec, err := f.Origin().Upload(context.Background(), &req, bytes.NewReader(Zip(f.t, files)))
	if err != nil {
		f.t.Fatalf("fleettest: upload %s %s: %v", req.App, req.Version, err)
	}
	return rec
}

// Zip makes a bundle zip of files (path → content), in path order.
func Zip(t testing.TB, files map[string]string) []byte {
	t.Helper()
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, p := range paths {
		w, err := zw.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(files[p])); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
