package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/bench"
	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/internal/fleettest"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
)

const benchAdminKey = fleettest.AdminKey

// benchCluster is an origin and edges in this process, on loopback ports.
type benchCluster struct {
	api   string
	edges []*fleettest.Edge
	urls  []string
}

// startBenchCluster starts an origin and n edges; the origin pushes every
// channel record to the edges directly (the gossip stand-in `capstan dev`
// uses), so a storm reaches them at once.
func startBenchCluster(t *testing.T, n int) *benchCluster {
	t.Helper()
	// Only the patches a test asks for are built: background builds of
	// full bundles would compete for the CPU under the race detector.
	f := fleettest.New(t, fleettest.Config{Origin: func(c *origin.Config) { c.PrecomputeBases = -1 }})
	c := &benchCluster{api: f.OriginURL()}
	for range n {
		e := f.StartEdge(nil)
		c.edges = append(c.edges, e)
		c.urls = append(c.urls, e.URL)
	}
	return c
}

// testBundle is a small web bundle: a shared vendor file, an app file that
// changes with the version and an index.
func testBundle(t *testing.T, version string) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	vendor := make([]byte, 32<<10)
	for i := range vendor {
		vendor[i] = byte(rng.IntN(256))
	}
	app := bytes.Repeat([]byte("console.log('"+version+"');\n"), 500)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range map[string][]byte{
		"index.html": []byte("<script src=app.js></script>" + version),
		"app.js":     app,
		"vendor.js":  vendor,
	} {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (c *benchCluster) upload(t *testing.T, app, version, channel string) release.Hash {
	t.Helper()
	api := &client.Client{Server: c.api, APIKey: benchAdminKey}
	rec, err := api.UploadRelease(context.Background(), client.Upload{App: app, Version: version, Channel: channel, Bundle: bytes.NewReader(testBundle(t, version))})
	if err != nil {
		t.Fatal(err)
	}
	return rec.ID
}

// buildPatches asks the origin for each patch base → target and waits for
// it, so that a slow build on a loaded test machine (the race detector
// makes the delta builder many times slower) cannot run into the bench's
// request timeout.
func (c *benchCluster) buildPatches(t *testing.T, target release.Hash, bases ...release.Hash) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Minute}
	for _, b := range bases {
		// With the API key: the target may not be on a channel yet, and
		// only a publisher may have such a patch built (decision 094).
		req, _ := http.NewRequest("GET", c.api+"/v1/patches/"+b.String()+"/"+target.String(), nil)
		req.Header.Set("Authorization", "Bearer "+benchAdminKey)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("patch %s → %s: %s", b, target, resp.Status)
		}
	}
}

// runBenchCmd runs `capstan bench args…` and decodes its JSON file.
func runBenchCmd(t *testing.T, c *benchCluster, args ...string) (map[string]any, string) {
	t.Helper()
	t.Setenv("CAPSTAN_SERVER", c.api)
	t.Setenv("CAPSTAN_API_KEY", benchAdminKey)
	dir := t.TempDir()
	jsonFile, reportFile := filepath.Join(dir, "out.json"), filepath.Join(dir, "out.html")
	var stdout, stderr bytes.Buffer
	root := newRoot(&stdout, &stderr)
	root.SetArgs(append([]string{"bench", "--edge", strings.Join(c.urls, ","), "--app", "com.example.bench", "--channel", "production",
		"--json", jsonFile, "--report", reportFile}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("capstan bench: %v\nstderr: %s", err, stderr.String())
	}
	b, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("JSON output: %v", err)
	}
	html, err := os.ReadFile(reportFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(html, []byte("<svg")) || bytes.Contains(html, []byte("<script")) {
		t.Errorf("report is not a self-contained page with inline SVG")
	}
	return out, stdout.String()
}

func num(t *testing.T, m map[string]any, path ...string) float64 {
	t.Helper()
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("JSON has no %s", strings.Join(path, "."))
		}
		v, ok = mm[p]
		if !ok {
			t.Fatalf("JSON has no %s", strings.Join(path, "."))
		}
	}
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("JSON %s = %v, want a number", strings.Join(path, "."), v)
	}
	return f
}

func TestBenchCommandSteady(t *testing.T) {
	c := startBenchCluster(t, 2)
	v0 := c.upload(t, "com.example.bench", "1.0.0", "production")
	v1 := c.upload(t, "com.example.bench", "1.0.1", "production")
	v2 := c.upload(t, "com.example.bench", "1.0.2", "production")
	c.buildPatches(t, v2, v0, v1)
	out, text := runBenchCmd(t, c, "--devices", "20", "--duration", "2s", "--concurrency", "8")

	if num(t, out, "updates") <= 0 {
		t.Errorf("no device updated:\n%s", text)
	}
	if f := num(t, out, "failed_updates") + num(t, out, "failed_checks"); f != 0 {
		t.Errorf("%v failed sessions:\n%s", f, text)
	}
	for _, op := range []string{"check", "update", "download"} {
		for _, field := range []string{"count", "errors", "per_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p99_9_ms", "max_ms"} {
			num(t, out, "ops", op, field)
		}
		if num(t, out, "ops", op, "count") <= 0 {
			t.Errorf("no %s recorded", op)
		}
		if num(t, out, "ops", op, "p50_ms") > num(t, out, "ops", op, "max_ms") {
			t.Errorf("%s: p50 above max", op)
		}
	}
	for _, field := range []string{"sessions", "sessions_per_s", "bytes", "blob_bytes", "failovers", "elapsed_s", "origin_fetches_delta"} {
		num(t, out, field)
	}
	if num(t, out, "bytes") <= 0 {
		t.Error("no bytes downloaded")
	}
	if num(t, out, "ops", "update_patch", "count") <= 0 || num(t, out, "patch_bytes") <= 0 {
		t.Errorf("no device updated with a patch:\n%s", text)
	}
	if pe, _ := out["per_edge"].(map[string]any); len(pe) != 2 {
		t.Errorf("per_edge has %d edges, want 2", len(pe))
	}
	// The fleet spreads over 1.0.1 (prev), 1.0.0 (older) and 1.0.2.
	fleet, _ := out["fleet"].([]any)
	versions := map[string]bool{}
	for _, f := range fleet {
		for _, v := range f.(map[string]any)["versions"].([]any) {
			versions[v.(string)] = true
		}
	}
	for _, v := range []string{"1.0.0", "1.0.1", "1.0.2"} {
		if !versions[v] {
			t.Errorf("no device started on %s: fleet %v", v, fleet)
		}
	}
	if tl, _ := out["timeline"].([]any); len(tl) == 0 {
		t.Error("empty timeline")
	}
	for _, want := range []string{"p99.9 ms", "check", "update", "sessions"} {
		if !strings.Contains(text, want) {
			t.Errorf("human table lacks %q:\n%s", want, text)
		}
	}
}

func TestBenchCommandStorm(t *testing.T) {
	c := startBenchCluster(t, 1)
	v1 := c.upload(t, "com.example.bench", "1.0.0", "production")
	v2 := c.upload(t, "com.example.bench", "2.0.0", "")
	c.buildPatches(t, v2, v1)
	out, text := runBenchCmd(t, c, "--devices", "20", "--duration", "2s", "--scenario", "storm",
		"--storm-version", "2.0.0", "--storm-after", "300ms", "--fleet", "current=100", "--concurrency", "8")
	storm, _ := out["storm"].(map[string]any)
	if storm == nil || storm["error"] != nil {
		t.Fatalf("storm result %v:\n%s", storm, text)
	}
	if num(t, out, "storm", "updated") != 1 || num(t, out, "storm", "t99_s") < 0 {
		t.Errorf("the fleet did not converge on 2.0.0:\n%s", text)
	}
	if num(t, out, "storm", "propagation_max_s") < 0 {
		t.Errorf("the edge never answered 2.0.0:\n%s", text)
	}
	if num(t, out, "storm", "origin_fetches") <= 0 {
		t.Errorf("no origin fetch counted after the storm (the edge had to pull 2.0.0):\n%s", text)
	}
}

// TestBenchEdgeKill kills one of two edges mid-run through the library's
// Kill hook: devices that preferred it fail over to the other.
func TestBenchEdgeKill(t *testing.T) {
	c := startBenchCluster(t, 2)
	v0 := c.upload(t, "com.example.bench", "1.0.0", "production")
	v1 := c.upload(t, "com.example.bench", "1.0.1", "production")
	c.buildPatches(t, v1, v0)
	cfg := bench.DefaultConfig()
	cfg.Edges, cfg.App, cfg.Channel = c.urls, "com.example.bench", "production"
	cfg.Devices, cfg.Duration, cfg.Concurrency = 20, 2*time.Second, 8
	cfg.Scenario, cfg.KillAfter = bench.ScenarioEdgeKill, 700*time.Millisecond
	cfg.Origin = &client.Client{Server: c.api, APIKey: benchAdminKey}
	cfg.Kill = func(ctx context.Context) error { return c.edges[0].Shutdown(ctx) }
	b, err := bench.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	res.WriteText(&text)
	if res.Kill == nil || res.Kill.Error != "" {
		t.Fatalf("kill: %+v", res.Kill)
	}
	if res.Failovers == 0 {
		t.Errorf("no failover after the kill:\n%s", text.String())
	}
	var after int64
	for _, p := range res.Timeline {
		if p.T > res.Kill.At+1 {
			after += p.Ops["update"].Count
		}
	}
	if after == 0 {
		t.Errorf("no update after the kill:\n%s", text.String())
	}
	t.Logf("failed after kill: %d (goal 0), failovers %d", res.Kill.FailedAfter, res.Failovers)
}

// slowLinkBundle is a bundle whose 200 KB vendor file does not compress
// and changes by one byte between versions: a file-level update must send
// the whole file, a patch a few bytes.
func slowLinkBundle(t *testing.T, version string) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	vendor := make([]byte, 200<<10)
	for i := range vendor {
		vendor[i] = byte(rng.IntN(256))
	}
	vendor[1000] = version[len(version)-1]
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range map[string][]byte{
		"index.html": []byte("<script src=vendor.js></script>"),
		"vendor.js":  vendor,
	} {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBenchSlowLink times a real device's update and a Capgo manifest-mode
// update of the same pair through the simulated link: the file-level
// client sends the whole changed file, and neither can be faster than the
// link's rate and round trip allow.
func TestBenchSlowLink(t *testing.T) {
	c := startBenchCluster(t, 1)
	api := &client.Client{Server: c.api, APIKey: benchAdminKey}
	for _, v := range []string{"1.0.0", "1.0.1"} {
		if _, err := api.UploadRelease(context.Background(), client.Upload{App: "com.example.bench", Version: v, Channel: "production", Bundle: bytes.NewReader(slowLinkBundle(t, v))}); err != nil {
			t.Fatal(err)
		}
	}
	const rate = 8e6 / 8 // --link-down 8 (Mbit/s), in bytes per second
	out, text := runSlowLinkCmd(t, c, "--pairs", "1.0.0:1.0.1", "--link-down", "8", "--link-up", "8", "--link-rtt", "20ms")
	pairs, _ := out["pairs"].([]any)
	if len(pairs) != 1 {
		t.Fatalf("%d pairs in the result, want 1:\n%s", len(pairs), text)
	}
	p := pairs[0].(map[string]any)
	if m := p["capstan"].(map[string]any)["mode"]; m != "delta" {
		t.Errorf("the device updated in mode %v, want delta:\n%s", m, text)
	}
	if m := p["files"].(map[string]any)["mode"]; m != "manifest" {
		t.Errorf("the Capgo client updated in mode %v, want manifest:\n%s", m, text)
	}
	capDown, filesDown := num(t, p, "capstan", "wire_down"), num(t, p, "files", "wire_down")
	if filesDown < 200<<10 {
		t.Errorf("the file-level update moved %.0f B, less than the changed 200 KB file", filesDown)
	}
	if capDown <= 0 || capDown > filesDown/10 {
		t.Errorf("Capstan moved %.0f B over the link, the file level %.0f B", capDown, filesDown)
	}
	// Physics: the bytes at the rate (less one 10 ms burst), and for the
	// device at least a connection's handshake and a request round trip.
	if s := num(t, p, "files", "seconds"); s < (filesDown-rate/100)/rate {
		t.Errorf("the file level took %.3f s for %.0f B at %.0f B/s", s, filesDown, rate)
	}
	if s := num(t, p, "capstan", "seconds"); s < 0.040 {
		t.Errorf("Capstan took %.3f s, less than two 20 ms round trips", s)
	}
	if r := num(t, p, "time_ratio"); r >= 1 {
		t.Errorf("Capstan / file level time ratio %.2f, want < 1:\n%s", r, text)
	}
	if !strings.Contains(text, "1.0.0 → 1.0.1") {
		t.Errorf("the table lacks the pair:\n%s", text)
	}
	// The channel is back on 1.0.1, where it was.
	res, err := runDeviceCheck(c.urls[0], t.TempDir())
	if err != nil || res != "1.0.1" {
		t.Errorf("after the run the channel offers %q (%v), want 1.0.1", res, err)
	}
}

// runSlowLinkCmd runs `capstan bench --scenario slow-link args…` and
// decodes its JSON file.
func runSlowLinkCmd(t *testing.T, c *benchCluster, args ...string) (map[string]any, string) {
	t.Helper()
	t.Setenv("CAPSTAN_SERVER", c.api)
	t.Setenv("CAPSTAN_API_KEY", benchAdminKey)
	jsonFile := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr bytes.Buffer
	root := newRoot(&stdout, &stderr)
	root.SetArgs(append([]string{"bench", "--scenario", "slow-link", "--edge", c.urls[0], "--app", "com.example.bench", "--channel", "production",
		"--json", jsonFile}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("capstan bench: %v\nstderr: %s", err, stderr.String())
	}
	b, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("JSON output: %v", err)
	}
	return out, stdout.String()
}

// runDeviceCheck asks the edge, as a new device, what the channel offers.
func runDeviceCheck(edge, dir string) (string, error) {
	d, err := device.New(device.Config{Dir: dir, Edges: []string{edge}, App: "com.example.bench", Channel: "production", Ranking: device.RankConfig{Off: true}, NoEvents: true})
	if err != nil {
		return "", err
	}
	r := d.Check(context.Background())
	if r.Error != "" {
		return "", errors.New(r.Error)
	}
	return r.To, nil
}
