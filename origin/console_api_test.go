package origin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/stats"
	"github.com/capstan-ota/capstan/wire"
)

func getJSONAs(t *testing.T, h http.Handler, secret, path string, v any) int {
	t.Helper()
	r := httptest.NewRequest("GET", path, nil)
	r.Header.Set("Authorization", "Bearer "+secret)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code == http.StatusOK && v != nil {
		if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return w.Code
}

func lastDevices(t *testing.T, s *Server) map[string]uint64 {
	t.Helper()
	var tl TimelineView
	if c := getJSONAs(t, s.Handler(), trustAdminKey, "/v1/apps/app/channels/production/timeline", &tl); c != 200 {
		t.Fatalf("timeline: %d", c)
	}
	if len(tl.Points) == 0 {
		return nil
	}
	out := map[string]uint64{}
	for _, r := range tl.Points[len(tl.Points)-1].Releases {
		if r.Devices > 0 {
			out[r.Version] = r.Devices
		}
	}
	return out
}

// TestTimelineFollowsDevicesToTheirNewRelease: a device counts once, under
// the release its latest report names, so the adoption chart moves from
// the old release to the new one as devices update.
func TestTimelineFollowsDevicesToTheirNewRelease(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 30, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, _ := newTestServer(t, clock)
	r1 := mustUpload(t, s, "app", "1.0.0")
	ctx := context.Background()
	ev := func(action, dev string, rel *release.Record) stats.Event {
		e := stats.Event{Action: action, App: "app", Channel: "production", Device: dev}
		if rel != nil {
			e.Release, e.Version = rel.ID, rel.Version
		}
		return e
	}
	if _, err := s.IngestEvents(ctx, []stats.Event{ev("check", "d1", nil), ev("check", "d2", nil), ev("check", "d3", nil)}); err != nil {
		t.Fatal(err)
	}
	if got := lastDevices(t, s); got[wire.Builtin] != 3 || len(got) != 1 {
		t.Fatalf("after three checks on the built-in bundle: %v", got)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if _, err := s.IngestEvents(ctx, []stats.Event{ev("download", "d1", r1), ev("install", "d1", r1), ev("install", "d2", r1), ev("fail", "d3", r1)}); err != nil {
		t.Fatal(err)
	}
	if got := lastDevices(t, s); got[wire.Builtin] != 1 || got["1.0.0"] != 2 {
		t.Fatalf("after two installs: %v", got)
	}
	var tl TimelineView
	getJSONAs(t, s.Handler(), trustAdminKey, "/v1/apps/app/channels/production/timeline", &tl)
	if len(tl.Points) != 3 {
		t.Fatalf("%d points over three minutes, want 3 (one without events, carried)", len(tl.Points))
	}
	if mid := tl.Points[1].Releases; len(mid) != 1 || mid[0].Devices != 3 {
		t.Fatalf("the quiet minute should carry the count before it: %+v", mid)
	}
	var r TimelineRelease
	for _, x := range tl.Points[2].Releases {
		if x.Version == "1.0.0" {
			r = x
		}
	}
	if r.Installs != 2 || r.Failures != 1 || r.Downloads != 1 || r.FailureRate == nil || *r.FailureRate < 0.3 {
		t.Fatalf("1.0.0 in the last minute: %+v", r)
	}
	if r.FullBytes == 0 {
		t.Fatal("full_bytes is 0: the chart of bytes saved by patches has nothing to compare with")
	}
	if tl.AutoPause.FailureRate != DefaultAutoPauseFailureRate {
		t.Fatalf("threshold %v", tl.AutoPause.FailureRate)
	}
	if c := getJSONAs(t, s.Handler(), trustAdminKey, "/v1/apps/app/channels/production/timeline?range=1y", nil); c != 400 {
		t.Fatalf("bad range: %d", c)
	}
	if c := getJSONAs(t, s.Handler(), trustAdminKey, "/v1/apps/app/channels/nope/timeline", nil); c != 404 {
		t.Fatalf("unknown channel: %d", c)
	}
}

// TestTimelineSampleIsBounded: a large fleet costs a bounded sample, and
// the estimate stays close.
func TestTimelineSampleIsBounded(t *testing.T) {
	tl := newTimeline()
	now := time.Now()
	const n = 40000
	evs := make([]stats.Event, 0, n)
	for i := range n {
		evs = append(evs, stats.Event{Action: "check", App: "a", Channel: "c", Device: fmt.Sprintf("device-%d", i)})
	}
	tl.observe(now, evs, func(string, string, release.Hash) (wire.ReleaseStats, bool) { return wire.ReleaseStats{}, false })
	ct := tl.chans["a/c"]
	if len(ct.devs) > timelineSample {
		t.Fatalf("sample holds %d devices, bound %d", len(ct.devs), timelineSample)
	}
	pts, level := tl.series("a", "c", 0, now)
	got := pts[len(pts)-1].Releases[0].Devices
	if level == 0 || got < n*85/100 || got > n*115/100 {
		t.Fatalf("estimate %d of %d devices at level %d", got, n, level)
	}
}

// TestFleetShowsEdgeHealth: reporting edges appear with their figures;
// one that stops reporting turns silent, one without the newest records
// turns behind.
func TestFleetShowsEdgeHealth(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, _ := newTestServer(t, clock)
	mustUpload(t, s, "app", "1.0.0")
	h := s.Handler()
	_, seq := s.maxSeq(t)
	post := func(name string, maxSeq uint64) {
		b, _ := json.Marshal(stats.EdgeReport{Name: name, URL: name, Region: "eu-west", Status: "ok", MaxSeq: maxSeq, CacheHits: 3, CacheMisses: 1, RSSBytes: 50 << 20})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("POST", "/v1/edges/report", bytes.NewReader(b)))
		if w.Code != 200 {
			t.Fatalf("report: %d %s", w.Code, w.Body)
		}
	}
	health := func() map[string]EdgeView {
		var v FleetView
		if c := getJSONAs(t, h, trustAdminKey, "/v1/fleet", &v); c != 200 {
			t.Fatalf("fleet: %d", c)
		}
		out := map[string]EdgeView{}
		for _, e := range v.Edges {
			out[e.Name] = e
		}
		if len(v.Origins) == 0 || !v.Origins[0].Self {
			t.Fatalf("origins: %+v", v.Origins)
		}
		return out
	}
	post("http://a:7080", seq)
	post("http://b:7080", seq-1)
	got := health()
	if got["http://a:7080"].Health != "ok" || got["http://a:7080"].CacheHitRatio != 0.75 || got["http://b:7080"].Health != "ok" {
		t.Fatalf("fresh reports: %+v", got)
	}
	mu.Lock()
	now = now.Add(20 * time.Second)
	mu.Unlock()
	post("http://a:7080", seq)
	post("http://b:7080", seq-1)
	if got := health(); got["http://b:7080"].Health != "behind" || got["http://a:7080"].Health != "ok" {
		t.Fatalf("b lacks the newest record for 20 s: %+v", got)
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	post("http://b:7080", seq)
	if got := health(); got["http://a:7080"].Health != "silent" || got["http://b:7080"].Health != "ok" {
		t.Fatalf("a silent for a minute: %+v", got)
	}
	for _, bad := range []string{`{}`, `{"name":"x","url":"ftp://x"}`, strings.Repeat("x", stats.MaxReportBody+1)} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("POST", "/v1/edges/report", strings.NewReader(bad)))
		if w.Code != 400 {
			t.Errorf("report %.40q: %d, want 400", bad, w.Code)
		}
	}
}

func (s *Server) maxSeq(t *testing.T) (string, uint64) {
	t.Helper()
	envs, err := s.st.channels("")
	if err != nil {
		t.Fatal(err)
	}
	var m uint64
	for _, e := range envs {
		c, _ := e.Channel()
		m = max(m, c.Seq)
	}
	return "", m
}

// TestReleaseDetailsNameUploaderAndPatches: the console's release history
// says which key uploaded each release and how big its patches are.
func TestReleaseDetailsNameUploaderAndPatches(t *testing.T) {
	s, _ := newTestServer(t, nil)
	h := s.Handler()
	k, secret, err := s.CreateKey(wire.CreateKeyBody{Name: "ci", Role: wire.RolePublisher, Apps: []string{"app"}})
	if err != nil {
		t.Fatal(err)
	}
	var js strings.Builder
	for i := range 4000 {
		fmt.Fprintf(&js, "var v%d=%d;", i, i*7919%10007)
	}
	for _, v := range []string{"1.0.0", "1.0.1"} {
		z := testZip(t, map[string]string{"index.html": "<h1>" + v + "</h1>", "app.js": js.String() + v})
		r := httptest.NewRequest("POST", "/v1/apps/app/releases?channel=production&version="+v, bytes.NewReader(z))
		r.Header.Set("Authorization", "Bearer "+secret)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 201 {
			t.Fatalf("upload %s: %d %s", v, w.Code, w.Body)
		}
	}
	var out struct{ Releases []ReleaseDetail }
	testutil.Eventually(t, 30*time.Second, "patch 1.0.0 → 1.0.1 built in the background", func() bool {
		getJSONAs(t, h, secret, "/v1/apps/app/release-details", &out)
		return len(out.Releases) == 2 && len(out.Releases[0].Patches) == 1 && out.Releases[0].FullBytes > 0
	})
	r := out.Releases[0]
	if r.Version != "1.0.1" || r.UploadedBy != k.ID || r.UploadedByName != "ci" || r.Encrypted || len(r.Signers) != 0 {
		t.Fatalf("release details: %+v", r)
	}
	if p := r.Patches[0]; p.From != "1.0.0" || p.Bytes <= 0 || p.Bytes >= r.FullBytes {
		t.Fatalf("patch %+v, full %d", p, r.FullBytes)
	}
	// Narrowing 1.0.1 would give the rest 1.0.0 (decision 102): the
	// console says so before anyone confirms.
	var cd struct{ Channels []ChannelDetail }
	if c := getJSONAs(t, h, secret, "/v1/apps/app/channel-details", &cd); c != 200 || len(cd.Channels) != 1 || cd.Channels[0].Fallback == nil || cd.Channels[0].Fallback.Version != "1.0.0" {
		t.Fatalf("channel details: %d %+v", c, cd)
	}
	var who wire.APIKey
	if c := getJSONAs(t, h, secret, "/v1/whoami", &who); c != 200 || who.ID != k.ID || who.Role != wire.RolePublisher || who.Hash != "" {
		t.Fatalf("whoami: %d %+v", c, who)
	}
	var pol PolicyView
	if c := getJSONAs(t, h, secret, "/v1/apps/app/channels/production/policy", &pol); c != 200 || pol.MinDevices != DefaultAutoPauseMinDevices {
		t.Fatalf("policy: %d %+v", c, pol)
	}
}

// TestTimelineSurvivesRestart: an origin restarted on the same data keeps
// its adoption chart.
func TestTimelineSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() *Server {
		cfg := DefaultConfig(dir)
		cfg.AdminKey = trustAdminKey
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	r1 := mustUpload(t, s, "app", "1.0.0")
	var evs []stats.Event
	for i := range 5 {
		evs = append(evs, stats.Event{Action: "install", App: "app", Channel: "production", Device: fmt.Sprint("d", i), Release: r1.ID, Version: "1.0.0"})
	}
	if _, err := s.IngestEvents(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	before := lastDevices(t, s)
	if before["1.0.0"] != 5 {
		t.Fatalf("before the restart: %v", before)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.Close()
	if after := lastDevices(t, s); after["1.0.0"] != 5 {
		t.Fatalf("after the restart: %v", after)
	}
	// The restored sample still follows devices.
	if _, err := s.IngestEvents(context.Background(), []stats.Event{{Action: "check", App: "app", Channel: "production", Device: "d0"}}); err != nil {
		t.Fatal(err)
	}
	if got := lastDevices(t, s); got["1.0.0"] != 4 || got[wire.Builtin] != 1 {
		t.Fatalf("after d0 went back to builtin: %v", got)
	}
}
