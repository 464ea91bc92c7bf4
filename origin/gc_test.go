package origin

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/stats"
)

// gcServer is an origin that precomputes nothing, so every patch is built
// on request, with the retention policy of gc.
func gcServer(t *testing.T, gc GCConfig, budget BuildBudget) *Server {
	t.Helper()
	cfg := DefaultConfig(t.TempDir())
	cfg.AdminKey = trustAdminKey
	cfg.PrecomputeBases = -1
	cfg.GC = gc
	cfg.BuildBudget = budget
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// uploadTo uploads a small release of app, to channel unless it is "".
func uploadTo(t *testing.T, s *Server, app, version, channel string) *release.Record {
	t.Helper()
	junk := make([]byte, 2048)
	rand.Read(junk)
	z := testZip(t, map[string]string{"index.html": app + version, "app.js": fmt.Sprintf("%x", junk)})
	rec, err := s.Upload(context.Background(), &UploadRequest{App: app, Version: version, Channel: channel, RolloutBPS: release.FullRollout, NewChannel: true}, bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// getPatch asks the origin's handler for a patch from the address from.
func getPatch(s *Server, from string, base, target release.Hash) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "/v1/patches/"+base.String()+"/"+target.String(), nil)
	r.RemoteAddr = from + ":40000"
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	return w
}

// TestPatchesOnlyForBasesADeviceCouldHold is finding 5 of issue 16: any
// pair of releases could be asked for and cost a build. Now a patch is
// built on request only to a release a channel serves or recently served,
// from the empty bundle or a release a device could hold: such a release,
// or one devices reported running.
func TestPatchesOnlyForBasesADeviceCouldHold(t *testing.T) {
	s := gcServer(t, GCConfig{KeepReleases: 3}, BuildBudget{Off: true})
	never := uploadTo(t, s, "com.x", "0.9.0", "") // uploaded, never served
	var served []*release.Record
	for i := 1; i <= 5; i++ {
		served = append(served, uploadTo(t, s, "com.x", fmt.Sprintf("1.0.%d", i), "production"))
	}
	v1, v4, v5 := served[0], served[3], served[4]
	for _, c := range []struct {
		name         string
		base, target release.Hash
		want         int
	}{
		{"from the previous release", v4.ID, v5.ID, 200},
		{"the full bundle", release.Hash{}, v5.ID, 200},
		{"from a release served long ago", v1.ID, v5.ID, 404},
		{"from a release never served", never.ID, v5.ID, 404},
		{"to a release never served", v5.ID, never.ID, 404},
		{"to a release no channel serves any more", v5.ID, v1.ID, 404},
	} {
		if w := getPatch(s, "192.0.2.1", c.base, c.target); w.Code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, w.Code, w.Body, c.want)
		}
	}
	// Devices reported running 1.0.1: they could need a patch from it.
	if _, err := s.IngestEvents(context.Background(), []stats.Event{{Action: stats.ActionCheck, App: "com.x", Channel: "production", Device: "d1", Release: v1.ID}}); err != nil {
		t.Fatal(err)
	}
	s.forgetLive("com.x") // the census is read at most liveCacheTTL late
	if w := getPatch(s, "192.0.2.1", v1.ID, v5.ID); w.Code != 200 {
		t.Errorf("from a release devices run: %d %s", w.Code, w.Body)
	}
}

// TestPatchBuildBudget: builds on request come out of a budget per caller
// address and one for the origin; over it the answer is 429 with
// Retry-After, and patches already built are still served.
func TestPatchBuildBudget(t *testing.T) {
	s := gcServer(t, GCConfig{}, BuildBudget{PerAddress: 0.01, PerAddressBurst: 2, Global: 0.01, GlobalBurst: 3})
	var recs []*release.Record
	for i := 1; i <= 6; i++ {
		recs = append(recs, uploadTo(t, s, "com.x", fmt.Sprintf("1.0.%d", i), "production"))
	}
	target := recs[5].ID
	codes := func(from string, bases ...*release.Record) string {
		var out []string
		for _, b := range bases {
			w := getPatch(s, from, b.ID, target)
			if w.Code == 429 && w.Header().Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
			out = append(out, fmt.Sprint(w.Code))
		}
		return strings.Join(out, " ")
	}
	if got := codes("192.0.2.1", recs[0], recs[1], recs[2]); got != "200 200 429" {
		t.Errorf("one address, three builds: %s, want 200 200 429", got)
	}
	if got := codes("192.0.2.2", recs[2], recs[3]); got != "200 429" {
		t.Errorf("another address once the origin's budget is spent: %s, want 200 429", got)
	}
	if got := codes("192.0.2.1", recs[0], recs[1]); got != "200 200" {
		t.Errorf("patches already built are served over budget: %s", got)
	}
}

// TestGCKeepsWhatIsNeeded: a pass deletes blobs of refused and abandoned
// uploads, patches no device will ask for and upload temp files, and keeps
// every release whole (a rollback to the oldest still installs), the
// patches of live releases, and blobs within the grace.
func TestGCKeepsWhatIsNeeded(t *testing.T) {
	s := gcServer(t, GCConfig{KeepReleases: 2}, BuildBudget{Off: true})
	var recs []*release.Record
	for i := 1; i <= 4; i++ {
		rec := uploadTo(t, s, "com.x", fmt.Sprintf("1.0.%d", i), "production")
		if i > 1 {
			if w := getPatch(s, "192.0.2.1", recs[i-2].ID, rec.ID); w.Code != 200 {
				t.Fatalf("patch to %s: %d %s", rec.Version, w.Code, w.Body)
			}
		}
		recs = append(recs, rec)
	}
	// What a killed or refused upload leaves: blobs nothing refers to, and
	// a temp file.
	var orphans []release.Hash
	for range 5 {
		b := make([]byte, 4096)
		rand.Read(b)
		h, _, err := s.blobs.put(bytes.NewReader(b), int64(len(b)), release.Hash{})
		if err != nil {
			t.Fatal(err)
		}
		orphans = append(orphans, h)
	}
	if err := os.WriteFile(filepath.Join(s.blobs.tmp, "upload-123.zip"), []byte("half an upload"), 0o600); err != nil {
		t.Fatal(err)
	}
	oldPatch, ok1 := s.indexedBlob(patchKey(recs[0].ID, recs[1].ID))
	livePatch, ok2 := s.indexedBlob(patchKey(recs[2].ID, recs[3].ID))
	if !ok1 || !ok2 {
		t.Fatal("patches not indexed")
	}

	// Within the grace, nothing goes.
	rep, err := s.GC(context.Background(), GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Blobs != 0 || rep.Leftovers != 0 {
		t.Fatalf("a pass within the grace deleted %+v", rep)
	}
	// Live: 1.0.4 and 1.0.3 (the channel's newest two); 1.0.1 → 1.0.2
	// and 1.0.2 → 1.0.3 start from a release no device holds.
	if rep.Patches != 2 {
		t.Fatalf("the pass dropped %d patch index entries, want 2", rep.Patches)
	}
	zero := time.Duration(0)
	if rep, err := s.GC(context.Background(), GCOptions{Grace: &zero, DryRun: true}); err != nil || rep.Blobs == 0 {
		t.Fatalf("dry run: %+v %v", rep, err)
	}
	if !s.blobs.has(orphans[0]) {
		t.Fatal("a dry run deleted a blob")
	}
	rep, err = s.GC(context.Background(), GCOptions{Grace: &zero})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc: %+v", rep)
	for _, h := range orphans {
		if s.blobs.has(h) {
			t.Errorf("orphan blob %s kept", h)
		}
	}
	if s.blobs.has(oldPatch) {
		t.Error("the patch between two releases no channel serves any more was kept")
	}
	if !s.blobs.has(livePatch) {
		t.Error("the patch to the release the channel serves was deleted")
	}
	if _, err := os.Stat(filepath.Join(s.blobs.tmp, "upload-123.zip")); err == nil {
		t.Error("the upload leftover was kept")
	}
	if rep.Blobs < 6 || rep.Leftovers != 1 {
		t.Errorf("report %+v", rep)
	}
	// Every release is whole: a rollback to the oldest installs.
	for _, rec := range recs {
		m, err := s.manifestOf(rec)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m.Files {
			if !s.blobs.has(f.SHA256) {
				t.Fatalf("release %s lost file %s", rec.Version, f.Path)
			}
		}
	}
	if _, err := s.Rollback("com.x", "production", "1.0.1"); err != nil {
		t.Fatal(err)
	}
	if w := getPatch(s, "192.0.2.1", recs[3].ID, recs[0].ID); w.Code != 200 {
		t.Fatalf("patch to the rolled-back-to release: %d %s", w.Code, w.Body)
	}
}

// TestGCWaitsForUploads: while an upload is under way (it may reuse any
// blob), a pass deletes no blob; an upload that starts during a sweep
// waits for it.
func TestGCWaitsForUploads(t *testing.T) {
	s := gcServer(t, GCConfig{}, BuildBudget{Off: true})
	b := []byte("a blob nothing refers to")
	h, _, err := s.blobs.put(bytes.NewReader(b), int64(len(b)), release.Hash{})
	if err != nil {
		t.Fatal(err)
	}
	end, err := s.beginWrite(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	zero := time.Duration(0)
	rep, err := s.GC(context.Background(), GCOptions{Grace: &zero})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Skipped == "" || rep.Blobs != 0 || !s.blobs.has(h) {
		t.Fatalf("a pass during an upload: %+v", rep)
	}
	end()
	if why, err := s.lockSweep(); err != nil || why != "" {
		t.Fatalf("lock: %q %v", why, err)
	}
	// Another origin's upload (the lock names this node, so pretend).
	other := &Server{cfg: s.cfg, log: s.log, db: s.db, node: "another-origin"}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := other.beginWrite(ctx); err == nil {
		t.Fatal("an upload started while a sweep held the lock")
	}
	s.unlockSweep()
	if rep, err := s.GC(context.Background(), GCOptions{Grace: &zero}); err != nil || rep.Blobs != 1 {
		t.Fatalf("after the upload: %+v %v", rep, err)
	}
	_ = http.StatusOK
}
