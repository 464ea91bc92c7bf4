package fleettest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// fleet is the package's Fleet with one edge, and the helpers of its
// tests.
type fleet struct {
	*Fleet
	t    *testing.T
	e    *Edge
	eURL string
}

func newFleet(t *testing.T, tune func(*origin.Config)) *fleet {
	t.Helper()
	f := &fleet{t: t, Fleet: New(t, Config{Origin: tune})}
	f.e = f.StartEdge(func(c *edge.Config) {
		c.EventFlush = time.Hour // tests flush explicitly
		c.EventsPerSecond = -1
		c.EventsToken = f.OriginConfig().EventsToken
	})
	f.eURL = f.e.URL
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.e.SyncFromOrigin(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

// restartOrigin closes the origin and opens its data folder again.
func (f *fleet) restartOrigin() { f.RestartOrigin() }

func (f *fleet) origin() *origin.Server { return f.Origin() }

func (f *fleet) api() *client.Client { return f.API() }

func (f *fleet) edge() *edge.Server { return f.e.Server }

// upload stores a release whose files depend on the version, optionally
// pointing channel at it with a rollout in percent.
func (f *fleet) upload(app, version, channel string, rollout float64, minNative string) release.Ref {
	f.t.Helper()
	z := Zip(f.t, map[string]string{
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

// checkAnswer is an edge's answer to /v1/check, with its HTTP status and
// the error of a refusal.
type checkAnswer struct {
	wire.CheckAnswer
	HTTP  int    `json:"-"`
	Error string `json:"error"`
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
