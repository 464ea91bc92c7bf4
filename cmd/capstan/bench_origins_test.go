package main

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
)

// TestBenchOrigins is `make bench-origins`: uploads per minute and patches
// built per minute with 1 and 3 origins on PostgreSQL and S3, and one
// origin on its embedded store for reference. It runs only when
// CAPSTAN_BENCH_ORIGINS=1 (it takes minutes) and prints a table.
func TestBenchOrigins(t *testing.T) {
	if os.Getenv("CAPSTAN_BENCH_ORIGINS") != "1" {
		t.Skip("benchmark: make bench-origins")
	}
	dur := 15 * time.Second
	if v, err := time.ParseDuration(os.Getenv("BENCH_DURATION")); err == nil {
		dur = v
	}
	type row struct {
		name               string
		uploads, patches   float64
		uploadsN, patchesN int
	}
	var rows []row
	run := func(name string, apis []string) {
		up, upN := benchUploads(t, apis, dur)
		pa, paN := benchPatches(t, apis)
		rows = append(rows, row{name, up, pa, upN, paN})
		t.Logf("%s: %.0f uploads/min, %.0f patches/min", name, up, pa)
	}
	_, api := startOriginProc(t, t.TempDir())
	run("1 origin, embedded (Badger + files)", []string{api})
	for _, n := range []int{1, 3} {
		st := newSharedStore(t)
		first := st.start(t, "")
		apis := []string{first.api}
		for i := 1; i < n; i++ {
			apis = append(apis, st.start(t, first.gossip).api)
		}
		run(fmt.Sprintf("%d origin%s, PostgreSQL + S3", n, map[bool]string{true: "s"}[n > 1]), apis)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| setup | uploads/min | vs 1 shared | patches built/min | vs 1 shared |\n|---|---|---|---|---|\n")
	ref := rows[1]
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %.0f (%d in %s) | %.2f× | %.0f (%d) | %.2f× |\n", r.name, r.uploads, r.uploadsN, dur, r.uploads/ref.uploads, r.patches, r.patchesN, r.patches/ref.patches)
	}
	fmt.Println(b.String())
}

// benchBundle is a 40-file bundle: 30 files every release shares (a vendor
// folder) and 10 of its own, 20 KiB each, the usual shape of a CI upload.
func benchBundle(seed uint64) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	shared := rand.New(rand.NewPCG(7, 7))
	own := rand.New(rand.NewPCG(seed, 1))
	page := make([]byte, 20<<10)
	for i := 0; i < 40; i++ {
		r := shared
		if i >= 30 {
			r = own
		}
		for j := range page {
			page[j] = "abcdefghijklmnopqrstuvwxyz{}();\n"[r.IntN(32)]
		}
		w, _ := zw.Create(fmt.Sprintf("assets/f%02d.js", i))
		w.Write(page)
	}
	zw.Close()
	return buf.Bytes()
}

// benchUploads runs 8 concurrent uploaders for dur, spread over the
// origins, and returns acknowledged uploads per minute.
func benchUploads(t *testing.T, apis []string, dur time.Duration) (float64, int) {
	bundles := make([][]byte, 16)
	for i := range bundles {
		bundles[i] = benchBundle(uint64(i + 1))
	}
	var n, seq atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(dur)
	start := time.Now()
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each uploader starts its server list at another origin.
			servers := append(append([]string(nil), apis[w%len(apis):]...), apis[:w%len(apis)]...)
			c := &client.Client{Server: strings.Join(servers, ","), APIKey: e2eAdminKey}
			for time.Now().Before(deadline) {
				i := seq.Add(1)
				// No channel: a channel move precomputes patches in the
				// background, which would measure patch building here.
				_, err := c.UploadRelease(context.Background(), client.Upload{App: "com.example.bench", Version: fmt.Sprintf("1.%d.0", i),
					Bundle: bytes.NewReader(bundles[i%int64(len(bundles))])})
				if err != nil {
					t.Errorf("upload: %v", err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Minutes(), int(n.Load())
}

// benchPatches uploads 6 related releases (no channel: nothing is
// precomputed), then asks for every patch between them and every full
// bundle, spread over the origins, and returns patches built per minute.
func benchPatches(t *testing.T, apis []string) (float64, int) {
	c := &client.Client{Server: apis[0], APIKey: e2eAdminKey}
	app := fmt.Sprintf("com.example.patches%d", time.Now().UnixNano()%1e6)
	var ids []release.Hash
	for i := 0; i < 6; i++ {
		rec, err := c.UploadRelease(context.Background(), client.Upload{App: app, Version: fmt.Sprintf("2.0.%d", i), Bundle: bytes.NewReader(benchBundle(uint64(100 + i/2)))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	type pair struct{ base, target release.Hash }
	jobs := make(chan pair)
	go func() {
		for j := range ids {
			jobs <- pair{release.Hash{}, ids[j]}
			for i := 0; i < j; i++ {
				jobs <- pair{ids[i], ids[j]}
			}
		}
		close(jobs)
	}()
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < 4*len(apis); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			api := apis[w%len(apis)]
			for p := range jobs {
				// A publisher's builds: the releases are on no channel
				// (decision 094).
				req, _ := http.NewRequest("GET", api+"/v1/patches/"+p.base.String()+"/"+p.target.String(), nil)
				req.Header.Set("Authorization", "Bearer "+e2eAdminKey)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Errorf("patch: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("patch: %s", resp.Status)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Minutes(), int(n.Load())
}
