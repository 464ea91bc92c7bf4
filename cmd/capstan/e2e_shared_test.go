package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/gossip"
	"github.com/capstan-ota/capstan/internal/servicetest"
	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
)

// sharedStore is one PostgreSQL database, one bucket and one origin key
// that several origin processes share.
type sharedStore struct {
	db, blobs, keyFile string
	// clusterKey is the one cluster key file every origin and edge of
	// the cluster is given (origins on their own would each make one).
	clusterKey string
	env        []string
}

func newSharedStore(t *testing.T) *sharedStore {
	t.Helper()
	db := servicetest.Postgres(t)
	s3, bucket := servicetest.S3(t)
	return newSharedStoreOn(t, db, s3, bucket)
}

func newSharedStoreOn(t *testing.T, db string, s3 servicetest.S3Server, bucket string) *sharedStore {
	t.Helper()
	k, err := release.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pemKey, _ := release.EncodePrivateKey(k)
	keyFile := filepath.Join(t.TempDir(), "origin.key")
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	clusterKey := filepath.Join(t.TempDir(), "cluster.key")
	if _, err := gossip.CreateKeyFile(clusterKey, nil, k.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	return &sharedStore{db: db, blobs: s3.URL(bucket), keyFile: keyFile, clusterKey: clusterKey,
		env: append([]string{"CAPSTAN_ADMIN_KEY=" + e2eAdminKey, "CAPSTAN_STORE=" + db}, s3.Env()...)}
}

type sharedOrigin struct {
	proc        *testutil.Proc
	api, gossip string
}

// start runs one origin process on the shared store, joining the gossip
// cluster at join (if set).
func (s *sharedStore) start(t *testing.T, join string) sharedOrigin {
	t.Helper()
	args := []string{"origin", "--data", t.TempDir(), "--api", "127.0.0.1:0", "--gossip", "127.0.0.1:0",
		"--blobs", s.blobs, "--origin-key", s.keyFile, "--cluster-key", s.clusterKey}
	if join != "" {
		args = append(args, "--join", join)
	}
	p := testutil.Start(t, s.env, testutil.Binary(t), args...)
	m := p.WaitFor(t, 60*time.Second, originAddrs)
	return sharedOrigin{proc: p, api: m[1], gossip: m[2]}
}

// checkWhole fetches a release's manifest and every file from the origin
// at api and checks each against its hash; it returns the files.
func checkWhole(t *testing.T, api, app, version string) []release.File {
	t.Helper()
	c := &client.Client{Server: api, APIKey: e2eAdminKey}
	var rec release.Record
	if err := c.Do(context.Background(), "GET", "/v1/apps/"+app+"/releases/"+version, nil, &rec); err != nil {
		t.Fatalf("release %s: %v", version, err)
	}
	doc, m, err := rec.Envelope.Release()
	if err != nil {
		t.Fatalf("release %s: %v", version, err)
	}
	fetch := func(h release.Hash) []byte {
		resp, err := http.Get(api + "/v1/blobs/" + h.String())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || release.Sum(b) != h {
			t.Fatalf("release %s: blob %s missing or damaged (status %d)", version, h, resp.StatusCode)
		}
		return b
	}
	var files []release.File
	if m != nil {
		files = m.Files
	} else {
		// Format 2: the document names the file list, itself a blob.
		if files, err = release.DecodeFileList(fetch(doc.Files.SHA256)); err != nil {
			t.Fatalf("release %s: file list: %v", version, err)
		}
	}
	if len(files) != doc.Files.Count {
		t.Fatalf("release %s: %d files, the document says %d", version, len(files), doc.Files.Count)
	}
	for _, f := range files {
		if n := len(fetch(f.SHA256)); int64(n) != f.Size {
			t.Fatalf("release %s: file %s is %d bytes, want %d", version, f.Path, n, f.Size)
		}
	}
	return files
}

// TestSharedOriginKilledDuringUploads runs two origins on PostgreSQL and S3
// and kills one with SIGKILL while 50 uploads run concurrently through
// both: every acknowledged release is whole and served by the survivor,
// which keeps taking uploads, and an edge that learnt both origins from
// gossip fetches from the survivor.
func TestSharedOriginKilledDuringUploads(t *testing.T) {
	if testing.Short() {
		t.Skip("process faults")
	}
	st := newSharedStore(t)
	a := st.start(t, "")
	b := st.start(t, a.gossip)
	edge := startFleetEdge(t, fleetOrigin{seed: a.gossip, key: st.clusterKey})
	const app, uploads = "com.example.shared", 50
	var mu sync.Mutex // guards acked, failed
	acked := map[string]bool{}
	var failed []string
	var wg sync.WaitGroup
	ackedCount := make(chan struct{}, uploads)
	for i := 0; i < uploads; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Half the uploaders list A first, half B first: both take
			// uploads until A dies.
			servers := a.api + "," + b.api
			if i%2 == 1 {
				servers = b.api + "," + a.api
			}
			c := &client.Client{Server: servers, APIKey: e2eAdminKey, HTTP: &http.Client{Timeout: 60 * time.Second}}
			v := fmt.Sprintf("1.0.%d", i)
			_, err := c.UploadRelease(context.Background(), client.Upload{App: app, Version: v, Channel: "production", Bundle: bytes.NewReader(smallBundle(i))})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, v+": "+err.Error())
				return
			}
			acked[v] = true
			ackedCount <- struct{}{}
		}()
	}
	// Kill A once a few uploads went through, while the rest are in flight.
	for i := 0; i < 5; i++ {
		select {
		case <-ackedCount:
		case <-time.After(60 * time.Second):
			t.Fatal("no upload acknowledged within 60s")
		}
	}
	a.proc.Kill()
	// The survivor takes a new upload at once, named alone.
	solo := &client.Client{Server: b.api, APIKey: e2eAdminKey}
	if _, err := solo.UploadRelease(context.Background(), client.Upload{App: app, Version: "2.0.0", Bundle: bytes.NewReader(smallBundle(99))}); err != nil {
		t.Fatalf("the surviving origin refused an upload right after the other died: %v", err)
	}
	wg.Wait()
	if len(failed) > 0 {
		// Each uploader names both origins: an upload cut by the kill goes
		// to the survivor, so none should fail.
		t.Errorf("%d uploads failed although the other origin was up:\n%s", len(failed), strings.Join(failed, "\n"))
	}
	for v := range acked {
		checkWhole(t, b.api, app, v)
	}
	files := checkWhole(t, b.api, app, "2.0.0")
	recs, err := solo.Releases(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(acked)+1 {
		t.Errorf("survivor lists %d releases, %d were acknowledged", len(recs), len(acked)+1)
	}
	// The edge learnt B from gossip (it joined through A) and pulls a blob
	// it never cached from B now that A is gone.
	testutil.Eventually(t, 30*time.Second, "the edge to serve a blob through the surviving origin", func() bool {
		resp, err := http.Get(edge.url + "/v1/blobs/" + files[0].SHA256.String())
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	t.Logf("%d of %d concurrent uploads acknowledged, all whole on the survivor", len(acked), uploads)
}

// TestSharedOriginsSameVersionRace uploads the same version with different
// content to two origins at the same moment: exactly one wins, the other
// gets 409, and both serve the winner.
func TestSharedOriginsSameVersionRace(t *testing.T) {
	if testing.Short() {
		t.Skip("process cluster")
	}
	st := newSharedStore(t)
	a := st.start(t, "")
	b := st.start(t, a.gossip)
	const app = "com.example.race"
	for round := 0; round < 5; round++ {
		v := fmt.Sprintf("3.0.%d", round)
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, 2)
		ids := make([]release.Hash, 2)
		for i, api := range []string{a.api, b.api} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := &client.Client{Server: api, APIKey: e2eAdminKey}
				body := smallBundle(100*round + i)
				<-start
				rec, err := c.UploadRelease(context.Background(), client.Upload{App: app, Version: v, Channel: "production", Bundle: bytes.NewReader(body)})
				errs[i] = err
				if err == nil {
					ids[i] = rec.ID
				}
			}()
		}
		close(start)
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if won >= 0 {
					t.Fatalf("round %d: both origins accepted version %s", round, v)
				}
				won = i
			case !client.IsConflict(err):
				t.Fatalf("round %d: origin %d: %v, want success or 409", round, i, err)
			}
		}
		if won < 0 {
			t.Fatalf("round %d: neither origin accepted %s: %v", round, v, errs)
		}
		for _, api := range []string{a.api, b.api} {
			var rec release.Record
			c := &client.Client{Server: api, APIKey: e2eAdminKey}
			if err := c.Do(context.Background(), "GET", "/v1/apps/"+app+"/releases/"+v, nil, &rec); err != nil || rec.ID != ids[won] {
				t.Fatalf("round %d: %s serves release %s (%v), want the winner %s", round, api, rec.ID, err, ids[won])
			}
		}
	}
}

// TestSharedStoreDatabaseRestart stops PostgreSQL under an origin while
// uploads run: uploads that reach it while the database is away get a
// clear 503, nothing half-stored becomes visible, and the same uploads
// retried once it is back succeed (the CLI waits it out by itself).
func TestSharedStoreDatabaseRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("process faults")
	}
	pg := servicetest.OwnPostgres(t)
	s3, bucket := servicetest.S3(t)
	st := newSharedStoreOn(t, pg.URL(), s3, bucket)
	o := st.start(t, "")
	const app = "com.example.dbrestart"
	noRetry := &client.Client{Server: o.api, APIKey: e2eAdminKey, RetryFor: -1}
	up := func(c *client.Client, i int) error {
		_, err := c.UploadRelease(context.Background(), client.Upload{App: app, Version: fmt.Sprintf("1.1.%d", i), Channel: "production", Bundle: bytes.NewReader(smallBundle(i))})
		return err
	}
	if err := up(noRetry, 0); err != nil {
		t.Fatal(err)
	}
	// Uploads run back to back while the database goes away under them.
	stop := make(chan struct{})
	type result struct {
		i   int
		err error
	}
	results := make(chan result, 1000)
	go func() {
		defer close(results)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			results <- result{i, up(noRetry, i)}
		}
	}()
	for i := 0; i < 3; i++ {
		<-results // a few uploads complete before the database stops
	}
	pg.Stop()
	var refused []result
	testutil.Eventually(t, 30*time.Second, "an upload refused while the database is down", func() bool {
		for {
			select {
			case r := <-results:
				if r.err != nil {
					refused = append(refused, r)
				}
			default:
				return len(refused) > 0
			}
		}
	})
	close(stop)
	for r := range results {
		if r.err != nil {
			refused = append(refused, r)
		}
	}
	for _, r := range refused {
		var ae *client.Error
		if !errors.As(r.err, &ae) || ae.Status != http.StatusServiceUnavailable || !strings.Contains(ae.Message, "database") {
			t.Fatalf("upload %d while the database is down: %v; want a 503 that says the database is unavailable", r.i, r.err)
		}
	}
	// An upload started while the database is down: the CLI retries and
	// succeeds once it is back.
	cli := testutil.Start(t, []string{"CAPSTAN_SERVER=" + o.api, "CAPSTAN_API_KEY=" + e2eAdminKey}, testutil.Binary(t),
		"upload", "--app", app, "--version", "9.0.0", "--channel", "production", writeZip(t, smallBundle(900)))
	pg.Start()
	select {
	case <-cli.Exited():
	case <-time.After(60 * time.Second):
		t.Fatal("the CLI upload did not finish within 60s of the database coming back")
	}
	if cli.Cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("CLI upload across the restart failed:\n%s", cli.Output())
	}
	// The refused uploads, retried with the same client code, succeed.
	for _, r := range refused {
		if err := up(&client.Client{Server: o.api, APIKey: e2eAdminKey}, r.i); err != nil && !client.IsConflict(err) {
			t.Fatalf("retry of upload %d after the restart: %v", r.i, err)
		}
	}
	// Nothing half-visible: every listed release is whole.
	recs, err := (&client.Client{Server: o.api, APIKey: e2eAdminKey}).Releases(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		checkWhole(t, o.api, app, r.Version)
	}
	t.Logf("%d uploads refused while the database was down, %d releases whole after the restart", len(refused), len(recs))
}

func writeZip(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "www.zip")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// metric sums the samples of a counter with the given labels on an
// origin's /metrics.
func metric(t *testing.T, api, name, labels string) int {
	t.Helper()
	resp, err := http.Get(api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+"{"+labels+"}") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += int(v)
		}
	}
	return n
}

// TestSharedOriginsBuildPatchOnce asks three origins for the same patch at
// the same moment: one builds it (under a lease in the database), the
// others serve the same bytes without building.
func TestSharedOriginsBuildPatchOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("process cluster")
	}
	st := newSharedStore(t)
	a := st.start(t, "")
	origins := []sharedOrigin{a, st.start(t, a.gossip), st.start(t, a.gossip)}
	c := &client.Client{Server: a.api, APIKey: e2eAdminKey}
	var ids []release.Hash
	for i, z := range []string{"swagger-ui/www-5.34.0.zip", "swagger-ui/www-5.34.1.zip"} {
		f, err := os.Open(testutil.Fixture(t, z))
		if err != nil {
			t.Fatal(err)
		}
		// No channel: nothing is precomputed, the first request builds.
		rec, err := c.UploadRelease(context.Background(), client.Upload{App: "com.example.patch", Version: fmt.Sprintf("5.34.%d", i), Bundle: f})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	var wg sync.WaitGroup
	sums := make([]string, len(origins))
	for i, o := range origins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// With a publisher's key: the releases are on no channel, and
			// only a publisher may have such a patch built (decision 094).
			req, _ := http.NewRequest("GET", o.api+"/v1/patches/"+ids[0].String()+"/"+ids[1].String(), nil)
			req.Header.Set("Authorization", "Bearer "+e2eAdminKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			io.Copy(h, resp.Body)
			if resp.StatusCode != 200 {
				t.Errorf("origin %d: patch answered %s", i, resp.Status)
			}
			sums[i] = fmt.Sprintf("%x", h.Sum(nil))
		}()
	}
	wg.Wait()
	if sums[0] != sums[1] || sums[1] != sums[2] {
		t.Fatalf("origins served different patches: %v", sums)
	}
	built := 0
	for _, o := range origins {
		built += metric(t, o.api, "capstan_origin_patches_total", `result="built"`)
	}
	if built != 1 {
		t.Fatalf("the patch was built %d times across three origins, want once", built)
	}
}
