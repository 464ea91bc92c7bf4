package edge_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/internal/fleettest"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

const adminKey = fleettest.AdminKey

// fleet is an origin of the shared harness (internal/fleettest) that does
// not push its records: the edges of these tests pull, and a test can
// count what they pull, play an outage, or tamper with an answer.
type fleet struct {
	*fleettest.Fleet
	origin     *origin.Server
	originURL  string
	blobPulls  atomic.Int64
	originDown atomic.Bool
	tamper     atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
}

func newFleet(t testing.TB, mutate ...func(*origin.Config)) *fleet {
	t.Helper()
	f := &fleet{}
	f.Fleet = fleettest.New(t, fleettest.Config{
		NoPush: true,
		Origin: func(c *origin.Config) {
			for _, m := range mutate {
				m(c)
			}
		},
		WrapOrigin: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if f.originDown.Load() {
					// A hard failure, like a dead process: close the connection.
					hj, _ := w.(http.Hijacker)
					c, _, _ := hj.Hijack()
					c.Close()
					return
				}
				if tp := f.tamper.Load(); tp != nil && (*tp)(w, r) {
					return
				}
				if strings.HasPrefix(r.URL.Path, "/v1/blobs/") {
					f.blobPulls.Add(1)
				}
				h.ServeHTTP(w, r)
			})
		},
	})
	f.origin, f.originURL = f.Origin(), f.OriginURL()
	return f
}

func (f *fleet) upload(t testing.TB, version string, files map[string][]byte) *release.Record {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, b := range files {
		w, _ := zw.Create(name)
		w.Write(b)
	}
	zw.Close()
	rec, err := f.origin.Upload(context.Background(), &origin.UploadRequest{App: "com.x", Version: version, Channel: "production", RolloutBPS: release.FullRollout}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

type testEdge struct {
	*edge.Server
	url string
}

func startEdge(t testing.TB, f *fleet, dir string, mutate func(*edge.Config)) *testEdge {
	t.Helper()
	e := f.StartEdge(func(cfg *edge.Config) {
		cfg.DataDir = dir
		cfg.ConnectTimeout = time.Second
		if mutate != nil {
			mutate(cfg)
		}
	})
	return &testEdge{Server: e.Server, url: e.URL}
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestCheckAnswersFromMemory(t *testing.T) {
	f := newFleet(t)
	rec := f.upload(t, "1.0.0", map[string][]byte{"index.html": []byte("v1")})
	e := startEdge(t, f, t.TempDir(), nil)
	if err := e.SyncFromOrigin(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, e.url+"/v1/check?app=com.x&channel=production&device=d1")
	var ans wire.CheckAnswer
	if err := json.Unmarshal(body, &ans); err != nil || resp.StatusCode != 200 {
		t.Fatalf("check: %d %s", resp.StatusCode, body)
	}
	if ans.Status != wire.StatusUpdate || ans.Release == nil || ans.Release.ID() != rec.ID {
		t.Fatalf("check answer: %s", body)
	}
	if err := ans.Channel.Verify([]ed25519.PublicKey{f.origin.PublicKey()}); err != nil {
		t.Fatalf("channel record served by the edge does not verify: %v", err)
	}
	// With the origin gone, checks are still answered from memory.
	f.originDown.Store(true)
	_, body = get(t, e.url+"/v1/check?app=com.x&channel=production&device=d1&current="+rec.ID.String())
	if !strings.Contains(string(body), `"status":"up-to-date"`) {
		t.Fatalf("check with origin down: %s", body)
	}
	resp, body = get(t, e.url+"/v1/check?app=com.x&channel=nope&device=d1")
	if resp.StatusCode != 404 || !strings.Contains(string(body), "unknown app or channel") {
		t.Fatalf("unknown channel: %d %s", resp.StatusCode, body)
	}
	resp, _ = get(t, e.url+"/v1/check?app=com.x&channel=production&current=zz")
	if resp.StatusCode != 400 {
		t.Fatalf("bad current: %d", resp.StatusCode)
	}
}

// TestThunderingHerdFetchesOnce: a thousand concurrent requests for a blob
// the edge does not hold cause exactly one pull from the origin.
func TestThunderingHerdFetchesOnce(t *testing.T) {
	f := newFleet(t)
	content := randomBytes(1500 << 10)
	f.upload(t, "1.0.0", map[string][]byte{"big.js": content})
	e := startEdge(t, f, t.TempDir(), nil)
	h := release.Sum(content)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1000, MaxConnsPerHost: 0}}
	var wg sync.WaitGroup
	var bad atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	start := make(chan struct{})
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := client.Get(e.url + "/v1/blobs/" + h.String())
			if err != nil {
				bad.Add(1)
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
				return
			}
			hs := sha256.New()
			io.Copy(hs, resp.Body)
			resp.Body.Close()
			var got release.Hash
			hs.Sum(got[:0])
			if resp.StatusCode != 200 || got != h {
				bad.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of 1000 requests failed; first error: %v", bad.Load(), firstErr)
	}
	if n := f.blobPulls.Load(); n != 1 {
		t.Fatalf("origin was asked %d times for one blob, want 1", n)
	}
}

func TestBlobHeadersRangeAndETag(t *testing.T) {
	f := newFleet(t)
	content := randomBytes(700 << 10) // several cache chunks
	f.upload(t, "1.0.0", map[string][]byte{"a.js": content})
	e := startEdge(t, f, t.TempDir(), func(c *edge.Config) { c.MemCacheObject = 1 << 10 }) // force the streaming path
	h := release.Sum(content)
	resp, body := get(t, e.url+"/v1/blobs/"+h.String())
	if resp.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Fatalf("blob: %d, %d bytes", resp.StatusCode, len(body))
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
		t.Errorf("Cache-Control %q", cc)
	}
	if et := resp.Header.Get("ETag"); et != `"`+h.String()+`"` {
		t.Errorf("ETag %q", et)
	}
	if resp.ContentLength != int64(len(content)) {
		t.Errorf("Content-Length %d", resp.ContentLength)
	}
	resp, body = get(t, e.url+"/v1/blobs/"+h.String(), "Range", "bytes=262140-262150")
	if resp.StatusCode != 206 || !bytes.Equal(body, content[262140:262151]) {
		t.Fatalf("range across a chunk boundary: %d %d bytes", resp.StatusCode, len(body))
	}
	if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes 262140-262150/%d", len(content)) {
		t.Errorf("Content-Range %q", cr)
	}
	resp, _ = get(t, e.url+"/v1/blobs/"+h.String(), "If-None-Match", `"`+h.String()+`"`)
	if resp.StatusCode != 304 {
		t.Errorf("If-None-Match: %d", resp.StatusCode)
	}
	resp, _ = get(t, e.url+"/v1/blobs/"+h.String(), "Range", "bytes=99999999-")
	if resp.StatusCode != 416 {
		t.Errorf("unsatisfiable range: %d", resp.StatusCode)
	}
	resp, _ = get(t, e.url+"/v1/blobs/not-a-hash")
	if resp.StatusCode != 400 {
		t.Errorf("bad hash: %d", resp.StatusCode)
	}
}

// TestOriginAway: with the origin gone, held blobs are served and a miss is
// a fast 503, never a hang.
func TestOriginAway(t *testing.T) {
	f := newFleet(t)
	held := randomBytes(10 << 10)
	missing := randomBytes(10 << 10)
	f.upload(t, "1.0.0", map[string][]byte{"held.js": held, "missing.js": missing})
	e := startEdge(t, f, t.TempDir(), nil)
	if resp, _ := get(t, e.url+"/v1/blobs/"+release.Sum(held).String()); resp.StatusCode != 200 {
		t.Fatal("warm-up failed")
	}
	f.originDown.Store(true)
	if resp, body := get(t, e.url+"/v1/blobs/"+release.Sum(held).String()); resp.StatusCode != 200 || !bytes.Equal(body, held) {
		t.Fatalf("held blob with origin down: %d", resp.StatusCode)
	}
	start := time.Now()
	resp, body := get(t, e.url+"/v1/blobs/"+release.Sum(missing).String())
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("miss with origin down: %d %s", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("miss took %s: it must fail fast", d)
	}
}

// TestCacheEvictsAndSurvivesRestart fills a small cache past its cap and
// restarts the edge on the same folder.
func TestCacheEvictsAndSurvivesRestart(t *testing.T) {
	f := newFleet(t)
	files := map[string][]byte{}
	var hashes []release.Hash
	for i := 0; i < 6; i++ {
		b := randomBytes(300 << 10)
		files[fmt.Sprintf("f%d.js", i)] = b
		hashes = append(hashes, release.Sum(b))
	}
	f.upload(t, "1.0.0", files)
	dir := t.TempDir()
	e := startEdge(t, f, dir, func(c *edge.Config) { c.CacheSize = 1 << 20 })
	e.SyncFromOrigin(context.Background())
	for _, h := range hashes {
		if resp, _ := get(t, e.url+"/v1/blobs/"+h.String()); resp.StatusCode != 200 {
			t.Fatal("fill failed")
		}
	}
	resp, body := get(t, e.url+"/metrics")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "capstan_edge_cache_bytes") {
		t.Fatal("metrics missing")
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "capstan_edge_cache_bytes ") {
			var v float64
			fmt.Sscanf(strings.TrimPrefix(line, "capstan_edge_cache_bytes "), "%g", &v)
			if v > 1<<20 {
				t.Fatalf("cache holds %v bytes, cap is %d", v, 1<<20)
			}
		}
	}
	e.Shutdown(context.Background())

	// After a restart with the origin gone, the most recent blobs and the
	// channel state are still served.
	f.originDown.Store(true)
	e2 := startEdge(t, f, dir, func(c *edge.Config) { c.CacheSize = 1 << 20 })
	last := hashes[len(hashes)-1]
	if resp, _ := get(t, e2.url+"/v1/blobs/"+last.String()); resp.StatusCode != 200 {
		t.Fatalf("most recent blob lost on restart: %d", resp.StatusCode)
	}
	if resp, _ := get(t, e2.url+"/v1/blobs/"+hashes[0].String()); resp.StatusCode != 503 {
		t.Fatalf("least recently used blob should have been evicted, got %d", resp.StatusCode)
	}
	if resp, body := get(t, e2.url+"/v1/check?app=com.x&channel=production&device=d"); resp.StatusCode != 200 {
		t.Fatalf("channel state lost on restart: %d %s", resp.StatusCode, body)
	}
}

// TestRecordsNeverGoBackwards delivers channel records out of order.
func TestRecordsNeverGoBackwards(t *testing.T) {
	f := newFleet(t)
	f.upload(t, "1.0.0", map[string][]byte{"a": []byte("1")})
	f.upload(t, "1.1.0", map[string][]byte{"a": []byte("2")})
	e := startEdge(t, f, t.TempDir(), nil)
	ctx := context.Background()
	var envs []*release.Envelope
	hist := []string{"1.0.0", "1.1.0"}
	for range hist {
		env, err := f.origin.Rollback("com.x", "production", "")
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, env)
	}
	_ = ctx
	newest := envs[len(envs)-1]
	if !e.Apply(newest) {
		t.Fatal("newest record refused")
	}
	for _, env := range envs[:len(envs)-1] {
		if e.Apply(env) {
			t.Fatal("an older record replaced a newer one")
		}
	}
	nc, _ := newest.Channel()
	_, body := get(t, e.url+"/v1/check?app=com.x&channel=production&device=d")
	if !strings.Contains(string(body), `"version":"`+nc.Release.Version+`"`) {
		t.Fatalf("edge serves %s, want %s", body, nc.Release.Version)
	}
}

// TestCheckRulesPerDevice: the rules' outcome is kept per kind of device,
// never mixed between them: devices asking in turn with different
// versions and failed lists each get their own answer, every time.
func TestCheckRulesPerDevice(t *testing.T) {
	f := newFleet(t)
	r1 := f.upload(t, "1.0.0", map[string][]byte{"index.html": []byte("1")})
	r2 := f.upload(t, "1.1.0", map[string][]byte{"index.html": []byte("2")})
	e := startEdge(t, f, t.TempDir(), nil)
	if err := e.SyncFromOrigin(context.Background()); err != nil {
		t.Fatal(err)
	}
	base := e.url + "/v1/check?app=com.x&channel=production&device=d&current=" + r1.ID.String()
	cases := []struct{ query, status, code string }{
		{"&version=1.0.0", "update", ""},
		{"&version=1.2.0", "blocked", "disable_downgrade"},
		{"&version=1.0.0&failed=" + r2.ID.String(), "blocked", "failed_on_device"},
		{"&version=1.0.0&failed=" + r1.ID.String(), "update", ""},
		{"", "update", ""},
	}
	for round := range 3 {
		for _, c := range cases {
			resp, body := get(t, base+c.query)
			var a struct{ Status, Code string }
			if err := json.Unmarshal(body, &a); err != nil || resp.StatusCode != 200 || a.Status != c.status || a.Code != c.code {
				t.Fatalf("round %d, %q: %d %s; want %s %s", round, c.query, resp.StatusCode, body, c.status, c.code)
			}
		}
	}
	if resp, _ := get(t, base+"&failed=nothex"); resp.StatusCode != 400 {
		t.Fatalf("bad failed list: %d", resp.StatusCode)
	}
}
