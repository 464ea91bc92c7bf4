package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
)

var originAPI = regexp.MustCompile(`origin API listening.*addr=(http://\S+)`)

func startOriginProc(t *testing.T, data string) (*testutil.Proc, string) {
	t.Helper()
	p := testutil.Start(t, []string{"CAPSTAN_ADMIN_KEY=" + e2eAdminKey}, testutil.Binary(t),
		"origin", "--data", data, "--api", "127.0.0.1:0", "--gossip", "127.0.0.1:0")
	m := p.WaitFor(t, 30*time.Second, originAPI)
	return p, m[1]
}

// smallBundle is a distinct bundle per i, with a shared file so that
// uploads reuse blobs (the interesting case for orphan blobs).
func smallBundle(i int) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	files := map[string][]byte{
		"index.html":                []byte(fmt.Sprintf("<html>%d</html>", i)),
		"shared/vendor.js":          bytes.Repeat([]byte("vendor();\n"), 2000),
		fmt.Sprintf("app-%d.js", i): bytes.Repeat([]byte(fmt.Sprintf("app(%d);\n", i)), 3000+i),
	}
	for n, b := range files {
		w, _ := zw.Create(n)
		w.Write(b)
	}
	zw.Close()
	return buf.Bytes()
}

// TestOriginKilledDuringUploads kills the origin with SIGKILL at random
// moments while 50 uploads run, restarting it on the same data. Every
// acknowledged release must be whole afterwards, and every release that is
// visible at all must be whole: no half release, no missing blob.
func TestOriginKilledDuringUploads(t *testing.T) {
	if testing.Short() {
		t.Skip("process faults")
	}
	data := t.TempDir()
	proc, api := startOriginProc(t, data)
	var mu sync.Mutex // guards proc and api
	acked := map[string]bool{}
	rng := rand.New(rand.NewPCG(1, 2))
	kills := 0
	for i := 0; i < 50; i++ {
		version := fmt.Sprintf("1.0.%d", i)
		body := smallBundle(i)
		mu.Lock()
		c := &client.Client{Server: api, APIKey: e2eAdminKey, HTTP: &http.Client{Timeout: 20 * time.Second}}
		p := proc
		mu.Unlock()
		done := make(chan struct{})
		killAfter := time.Duration(rng.IntN(40)) * time.Millisecond
		kill := rng.IntN(3) == 0 // a third of the uploads are interrupted
		if kill {
			go func() {
				select {
				case <-done:
				case <-time.After(killAfter):
					p.Kill()
				}
			}()
		}
		_, err := c.UploadRelease(context.Background(), client.Upload{App: "com.example.crash", Version: version, Channel: "production", Bundle: bytes.NewReader(body)})
		close(done)
		if err == nil {
			acked[version] = true
		}
		if kill {
			p.Kill() // make sure it is dead even if the upload won the race
			kills++
			np, napi := startOriginProc(t, data)
			mu.Lock()
			proc, api = np, napi
			mu.Unlock()
		}
	}
	proc.Stop(t)
	_, api = startOriginProc(t, data)
	c := &client.Client{Server: api, APIKey: e2eAdminKey}
	recs, err := c.Releases(context.Background(), "com.example.crash")
	if err != nil {
		t.Fatal(err)
	}
	visible := map[string]bool{}
	for _, r := range recs {
		visible[r.Version] = true
		var full release.Record
		if err := c.Do(context.Background(), "GET", "/v1/apps/com.example.crash/releases/"+r.Version, nil, &full); err != nil {
			t.Fatalf("release %s listed but unreadable: %v", r.Version, err)
		}
		m, err := releaseFiles(api, full.Envelope)
		if err != nil {
			t.Fatalf("release %s has a bad manifest: %v", r.Version, err)
		}
		for _, f := range m.Files {
			resp, err := http.Get(api + "/v1/blobs/" + f.SHA256.String())
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, _ := io.Copy(h, resp.Body)
			resp.Body.Close()
			var got release.Hash
			h.Sum(got[:0])
			if resp.StatusCode != 200 || got != f.SHA256 || n != f.Size {
				t.Fatalf("release %s: file %s missing or damaged after crashes (status %d)", r.Version, f.Path, resp.StatusCode)
			}
		}
	}
	for v := range acked {
		if !visible[v] {
			t.Errorf("acknowledged release %s lost after a crash", v)
		}
	}
	t.Logf("%d kills, %d uploads acknowledged, %d releases visible", kills, len(acked), len(visible))
	if kills == 0 {
		t.Fatal("no kill happened: the test proved nothing")
	}
}

// TestDeviceKilledDuringInstalls kills the device at random points during
// 200 runs while the channel flips between two releases: current/ must
// always be one complete released bundle.
func TestDeviceKilledDuringInstalls(t *testing.T) {
	if testing.Short() {
		t.Skip("process faults")
	}
	bundles := [][]byte{smallBundle(1), smallBundle(2)}
	want := make([]map[string][]byte, 2)
	for i, b := range bundles {
		p := filepath.Join(t.TempDir(), "b.zip")
		os.WriteFile(p, b, 0o644)
		want[i] = zipFiles(t, p)
	}
	_, api, edgeURL := startDev(t, t.TempDir())
	c := &client.Client{Server: api, APIKey: e2eAdminKey}
	ctx := context.Background()
	for i, b := range bundles {
		if _, err := c.UploadRelease(ctx, client.Upload{App: "com.example.swagger", Version: fmt.Sprintf("2.0.%d", i), Channel: "production", Bundle: bytes.NewReader(b)}); err != nil {
			t.Fatal(err)
		}
	}
	phone := filepath.Join(t.TempDir(), "phone")
	bin := testutil.Binary(t)
	rng := rand.New(rand.NewPCG(3, 4))
	killed, completed := 0, 0
	for i := 0; i < 200; i++ {
		if i%5 == 0 {
			if _, err := c.SetChannel(ctx, "com.example.swagger", "production", fmt.Sprintf("2.0.%d", (i/5)%2), nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		p := testutil.Start(t, nil, bin, "device", "--edge", edgeURL, "--app", "com.example.swagger", "--channel", "production", "--dir", phone, "--json", "--insecure-no-verify")
		// Every other run is killed at a random moment; the rest run to the
		// end, so both kinds happen whatever the machine's speed.
		if i%2 == 0 {
			select {
			case <-p.Exited():
				completed++
			case <-time.After(time.Duration(rng.IntN(80)) * time.Millisecond):
				p.Kill()
				killed++
			}
		} else {
			select {
			case <-p.Exited():
				completed++
			case <-time.After(60 * time.Second):
				t.Fatalf("run %d did not finish in 60s", i)
			}
		}
		cur := filepath.Join(phone, "current")
		if _, err := os.Stat(cur); os.IsNotExist(err) {
			continue // nothing installed yet
		}
		if !treeIs(cur, want[0]) && !treeIs(cur, want[1]) {
			t.Fatalf("run %d: current/ is not a complete released bundle", i)
		}
	}
	t.Logf("%d runs killed, %d completed", killed, completed)
	if killed < 10 || completed < 100 {
		t.Fatalf("too few kills (%d) or completions (%d) to prove anything", killed, completed)
	}
}

func treeIs(dir string, want map[string][]byte) bool {
	n := 0
	ok := true
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			ok = false
			return err
		}
		if d.IsDir() {
			return nil
		}
		n++
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, want[filepath.ToSlash(rel)]) {
			ok = false
		}
		return nil
	})
	return ok && n == len(want)
}

// TestEdgeKilledUnderLoad kills one of two edges while 30 devices install:
// every device fails over to the other edge and ends with the complete
// bundle; none is left broken.
func TestEdgeKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("process faults")
	}
	o := startFleetOrigin(t)
	api := o.api
	e1, e2 := startFleetEdge(t, o), startFleetEdge(t, o)
	body := smallBundle(7)
	p := filepath.Join(t.TempDir(), "b.zip")
	os.WriteFile(p, body, 0o644)
	want := zipFiles(t, p)
	c := &client.Client{Server: api, APIKey: e2eAdminKey}
	if _, err := c.UploadRelease(context.Background(), client.Upload{App: "com.example.swagger", Version: "3.0.0", Channel: "production", Bundle: bytes.NewReader(body)}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []fleetEdge{e1, e2} {
		testutil.Eventually(t, 10*time.Second, "edges to serve 3.0.0", func() bool { return checkVersion(e.url) == "3.0.0" })
	}
	const n = 30
	dirs := make([]string, n)
	results := make([]deviceJSON, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		dirs[i] = filepath.Join(t.TempDir(), "phone")
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cmd := exec.Command(testutil.Binary(t), "device", "--insecure-no-verify", "--edge", e1.url+","+e2.url, "--app", "com.example.swagger",
				"--channel", "production", "--dir", dirs[i], "--no-rank", "--json")
			out, _ := cmd.Output()
			json.Unmarshal(out, &results[i])
		}(i)
		if i == n/3 {
			e1.proc.Kill() // mid-run: a third of the devices have started
		}
	}
	wg.Wait()
	for i, r := range results {
		if r.Status != "updated" || r.To != "3.0.0" {
			t.Errorf("device %d: %+v", i, r)
			continue
		}
		if !treeIs(filepath.Join(dirs[i], "current"), want) {
			t.Errorf("device %d ended with a broken install", i)
		}
	}
}

// releaseFiles returns the full manifest of a signed release, fetching the
// file list a format 2 release names by hash from the server at base.
func releaseFiles(base string, env *release.Envelope) (*release.Manifest, error) {
	doc, m, err := env.Release()
	if err != nil || m != nil {
		return m, err
	}
	resp, err := http.Get(base + "/v1/blobs/" + doc.Files.SHA256.String())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, doc.Files.MaxListBytes()))
	if err != nil {
		return nil, err
	}
	if release.Sum(b) != doc.Files.SHA256 {
		return nil, fmt.Errorf("file list %s: %d bytes that do not hash to it (%s)", doc.Files.SHA256, len(b), resp.Status)
	}
	files, err := release.DecodeFileList(b)
	if err != nil {
		return nil, err
	}
	return doc.WithFiles(files)
}
