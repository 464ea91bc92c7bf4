package fleettest

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

const adminKey = "test-admin-key"

// fleet is an origin and an edge in one process.
type fleet struct {
	t      *testing.T
	dir    string
	ocfg   origin.Config
	mu     sync.Mutex // guards o, oURL, osrv
	o      *origin.Server
	oURL   string
	osrv   *http.Server
	e      atomic.Pointer[edge.Server]
	eURL   string
	client *client.Client
}

func newFleet(t *testing.T, tune func(*origin.Config)) *fleet {
	t.Helper()
	f := &fleet{t: t, dir: t.TempDir()}
	f.ocfg = origin.Config{
		DataDir:  filepath.Join(f.dir, "origin"),
		AdminKey: adminKey,
		Publisher: origin.PublisherFunc(func(env *release.Envelope) error {
			if e := f.e.Load(); e != nil {
				e.Apply(env)
			}
			return nil
		}),
	}
	if tune != nil {
		tune(&f.ocfg)
	}
	f.startOrigin()
	e, err := edge.New(edge.Config{
		DataDir:         filepath.Join(f.dir, "edge"),
		Origins:         func() []string { f.mu.Lock(); defer f.mu.Unlock(); return []string{f.oURL} },
		EventFlush:      time.Hour, // tests flush explicitly
		EventsPerSecond: -1,
		EventsToken:     f.ocfg.EventsToken,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.Serve(ln)
	f.e.Store(e)
	f.eURL = "http://" + ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.SyncFromOrigin(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Shutdown(ctx)
		f.stopOrigin()
	})
	return f
}

func (f *fleet) startOrigin() {
	f.t.Helper()
	o, err := origin.New(f.ocfg)
	if err != nil {
		f.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	srv := &http.Server{Handler: o.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	f.mu.Lock()
	f.o, f.osrv, f.oURL = o, srv, "http://"+ln.Addr().String()
	f.client = &client.Client{Server: f.oURL, APIKey: adminKey}
	f.mu.Unlock()
}

func (f *fleet) stopOrigin() {
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

// restartOrigin closes the origin and opens its data folder again.
func (f *fleet) restartOrigin() {
	f.stopOrigin()
	f.startOrigin()
}

func (f *fleet) origin() *origin.Server {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.o
}

func (f *fleet) api() *client.Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.client
}

func (f *fleet) edge() *edge.Server { return f.e.Load() }

// bundleZip zips files (path → content).
func bundleZip(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for p, c := range files {
		w, err := zw.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, c)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// upload stores a release whose files depend on the version, optionally
// pointing channel at it with a rollout in percent.
func (f *fleet) upload(app, version, channel string, rollout float64, minNative string) release.Ref {
	f.t.Helper()
	z := bundleZip(f.t, map[string]string{
		"index.html":     "<html>" + version + "</html>",
		"assets/app.js":  "console.log('" + version + "')",
		"assets/lib.css": "body{}",
	})
	rec, err := f.origin().Upload(context.Background(), &origin.UploadRequest{
		App: app, Version: version, MinNative: minNative, Channel: channel, RolloutBPS: int(rollout*100 + 0.5), NewChannel: true,
	}, bytes.NewReader(z))
	if err != nil {
		f.t.Fatalf("upload %s: %v", version, err)
	}
	return release.Ref{Version: rec.Version, ID: rec.ID}
}

// checkAnswer is an edge's answer to /v1/check.
type checkAnswer struct {
	HTTP    int
	Status  string            `json:"status"`
	Code    string            `json:"code"`
	Reason  string            `json:"reason"`
	Error   string            `json:"error"`
	Channel *release.Envelope `json:"channel"`
	Release *release.Envelope `json:"release"`
}

// offered returns the release the answer offers (zero ID: builtin), and
// whether it offers anything.
func (a *checkAnswer) offered() (release.Hash, bool) {
	if a.Status != wire.StatusUpdate {
		return release.Hash{}, false
	}
	if a.Release == nil {
		return release.Hash{}, true
	}
	return a.Release.ID(), true
}

// check asks the edge as a device would.
func (f *fleet) check(q url.Values) checkAnswer {
	f.t.Helper()
	resp, err := http.Get(f.eURL + "/v1/check?" + q.Encode())
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var a checkAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		f.t.Fatal(err)
	}
	a.HTTP = resp.StatusCode
	return a
}

func checkQuery(app, channel, device string, current release.Ref, native string) url.Values {
	q := url.Values{"app": {app}, "device": {device}}
	if channel != "" {
		q.Set("channel", channel)
	}
	if !current.ID.IsZero() {
		q.Set("current", current.ID.String())
		q.Set("version", current.Version)
	}
	if native != "" {
		q.Set("native", native)
	}
	return q
}

func deviceIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("device-%05d", i)
	}
	return ids
}

// postEvents sends a batch of events to the edge as a device does.
func (f *fleet) postEvents(body any) {
	f.t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(f.eURL+"/v1/events", "application/json", bytes.NewReader(b))
	if err != nil {
		f.t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("post events: %s: %s", resp.Status, msg)
	}
}

func (f *fleet) flush() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.edge().FlushEvents(ctx); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fleet) channel(app, ch string) *release.Channel {
	f.t.Helper()
	chs, err := f.api().Channels(context.Background(), app)
	if err != nil {
		f.t.Fatal(err)
	}
	for i := range chs {
		if chs[i].Channel.Channel == ch {
			return &chs[i].Channel
		}
	}
	f.t.Fatalf("no channel %s/%s", app, ch)
	return nil
}

// readFile returns a file of a device's installed bundle.
func readFile(t *testing.T, dir, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "current", filepath.FromSlash(p)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// clock is a settable clock for devices.
type clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now()} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func ptr[T any](v T) *T { return &v }

func clientChange(makeDefault bool) wire.SetChannelBody {
	return wire.SetChannelBody{Default: &makeDefault}
}
