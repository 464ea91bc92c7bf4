package main

import (
	"archive/zip"
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// manyFiles is a bundle of n small random files: its upload writes n
// blobs, long enough to be killed half-way.
func manyFiles(n int) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := range n {
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("assets/%04d.bin", i), Method: zip.Store})
		b := make([]byte, 512)
		crand.Read(b)
		w.Write(b)
	}
	zw.Close()
	return buf.Bytes()
}

// countBlobFiles counts the blob files of an origin's data folder.
func countBlobFiles(t *testing.T, data string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(filepath.Join(data, "blobs"), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// checkReleasesWhole fetches every file of every release of app from the
// origin and checks its hash.
func checkReleasesWhole(t *testing.T, api, app string) int {
	t.Helper()
	c := &client.Client{Server: api, APIKey: e2eAdminKey}
	recs, err := c.Releases(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		var full release.Record
		if err := c.Do(context.Background(), "GET", "/v1/apps/"+app+"/releases/"+r.Version, nil, &full); err != nil {
			t.Fatalf("release %s: %v", r.Version, err)
		}
		m, err := releaseFiles(api, full.Envelope)
		if err != nil {
			t.Fatalf("release %s: %v", r.Version, err)
		}
		for _, f := range m.Files {
			resp, err := http.Get(api + "/v1/blobs/" + f.SHA256.String())
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			io.Copy(h, resp.Body)
			resp.Body.Close()
			var got release.Hash
			h.Sum(got[:0])
			if resp.StatusCode != 200 || got != f.SHA256 {
				t.Fatalf("release %s lost file %s (status %d)", r.Version, f.Path, resp.StatusCode)
			}
		}
	}
	return len(recs)
}

// TestGCUnderKill9: uploads killed half-way leave thousands of blobs
// nothing refers to (finding 5 of issue 16); garbage collection passes,
// themselves killed with SIGKILL at random moments, never cost a release a
// file, and a pass that completes deletes every leftover. Patches of the
// release the channel serves survive; a rollback still installs.
func TestGCUnderKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("process faults")
	}
	const app = "com.example.gc"
	data := t.TempDir()
	proc, api := startOriginProc(t, data)
	cl := func() *client.Client {
		return &client.Client{Server: api, APIKey: e2eAdminKey, HTTP: &http.Client{Timeout: 60 * time.Second}}
	}
	ids := map[string]release.Hash{}
	upload := func(version string, body []byte) {
		t.Helper()
		rec, err := cl().UploadRelease(context.Background(), client.Upload{App: app, Version: version, Channel: "production", Bundle: bytes.NewReader(body)})
		if err != nil {
			t.Fatalf("upload %s: %v", version, err)
		}
		ids[version] = rec.ID
	}
	for i := 1; i <= 4; i++ {
		upload(fmt.Sprintf("1.0.%d", i), smallBundle(i))
	}
	restart := func() {
		proc.Kill()
		proc, api = startOriginProc(t, data)
	}

	// Uploads killed half-way: their blobs stay, referenced by nothing.
	for k := range 3 {
		body := manyFiles(2000)
		before := countBlobFiles(t, data)
		go cl().UploadRelease(context.Background(), client.Upload{App: app, Version: fmt.Sprintf("9.9.%d", k), Bundle: bytes.NewReader(body)})
		testutil.Eventually(t, 30*time.Second, "the upload to write blobs", func() bool { return countBlobFiles(t, data) > before+500 })
		restart()
	}
	orphaned := countBlobFiles(t, data)
	t.Logf("%d blob files after 3 killed uploads", orphaned)

	// Passes killed at random moments.
	rng := rand.New(rand.NewPCG(3, 4))
	zero := wire.GCBody{Grace: "0s"}
	for k := range 4 {
		before := countBlobFiles(t, data)
		go cl().Do(context.Background(), "POST", "/v1/gc", zero, nil)
		time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
		restart()
		t.Logf("pass %d killed: %d → %d blob files", k, before, countBlobFiles(t, data))
		if n := checkReleasesWhole(t, api, app); n != 4 {
			t.Fatalf("%d releases after a killed pass, want 4", n)
		}
	}
	// An upload is not held up by the lock a killed pass left.
	upload("1.0.5", smallBundle(5))

	// The new release's patches are being built in the background: a
	// pass sweeps no blob until they are done.
	var rep wire.GCReport
	testutil.Eventually(t, 60*time.Second, "a pass that sweeps", func() bool {
		rep = wire.GCReport{}
		if err := cl().Do(context.Background(), "POST", "/v1/gc", zero, &rep); err != nil {
			t.Fatal(err)
		}
		return rep.Skipped == ""
	})
	t.Logf("full pass: %+v", rep)
	var dry wire.GCReport
	if err := cl().Do(context.Background(), "POST", "/v1/gc", wire.GCBody{Grace: "0s", DryRun: true}, &dry); err != nil {
		t.Fatal(err)
	}
	if dry.Blobs != 0 || rep.Skipped != "" {
		t.Fatalf("after a full pass %d blobs are still deletable (%+v)", dry.Blobs, rep)
	}
	left := countBlobFiles(t, data)
	if left > 100 { // five small releases, their file lists and patches
		t.Fatalf("%d blob files left of %d: the killed uploads' blobs were not deleted", left, orphaned)
	}
	checkReleasesWhole(t, api, app)
	patch := func(base, target release.Hash) int {
		resp, err := http.Get(api + "/v1/patches/" + base.String() + "/" + target.String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := patch(ids["1.0.4"], ids["1.0.5"]); code != 200 {
		t.Fatalf("patch to the served release: %d", code)
	}
	runCLI(t, api, true, "rollback", "--app", app, "--channel", "production", "--to", "1.0.1")
	if code := patch(ids["1.0.5"], ids["1.0.1"]); code != 200 {
		t.Fatalf("patch to the rolled-back-to release: %d", code)
	}
	proc.Stop(t)
}
