package device_test

// One test per attack of the TUF/Uptane checklist (research/peers.md §7.3),
// each driven through a real origin and a real edge, with a proxy in front
// of the edge that corrupts, replays or withholds on purpose. The device
// must refuse, report "failed" with a clear reason, and keep the bundle it
// had.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

var (
	v1Files = map[string]string{"index.html": "<h1>v1</h1>", "js/app.js": "console.log(1)", "css/site.css": "body{}"}
	v2Files = map[string]string{"index.html": "<h1>v2</h1>", "js/app.js": "console.log(2)", "css/site.css": "body{}"}
)

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// rewriteCheck lets a test edit the edge's real check answer.
func rewriteCheck(p *tamperProxy, edit func(r *http.Request, a *wire.CheckAnswer)) {
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v1/check" {
			return false
		}
		var a wire.CheckAnswer
		if err := json.Unmarshal(p.fetch(r.URL.RequestURI()), &a); err != nil {
			p.t.Errorf("edge check answer: %v", err)
		}
		edit(r, &a)
		writeJSON(w, &a)
		return true
	})
}

// installV1 brings a fresh device to v1 through the untouched proxy.
func installV1(t *testing.T, c *cluster, o devOpts) (*device.Device, string) {
	t.Helper()
	c.upload("1.0.0", v1Files, uploadOpts{})
	d, dir := c.device(o)
	if res := d.Update(context.Background()); res.Status != device.StatusUpdated {
		t.Fatalf("install v1: %+v", res)
	}
	sameTree(t, dir, v1Files)
	return d, dir
}

func TestHappyPathVerifiesEverything(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	c.upload("2.0.0", v2Files, uploadOpts{})
	res := d.Update(context.Background())
	if res.Status != device.StatusUpdated || res.To != "2.0.0" {
		t.Fatalf("%+v", res)
	}
	sameTree(t, dir, v2Files)
}

// #1 Arbitrary installation: the edge flips a byte of a file.
func TestAttackTamperedBlob(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	c.upload("2.0.0", v2Files, uploadOpts{})
	// Every byte of content the edge serves is corrupted: the patch, the
	// full bundle stream and every file.
	c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
		if !isContent(r.URL.Path) {
			return false
		}
		b := c.proxy.fetch(r.URL.Path)
		b[len(b)/2] ^= 0x01
		w.Write(b)
		return true
	})
	mustFail(t, d.Update(context.Background()), "verification failed", dir, v1Files)
	if d.State().Current.Version != "1.0.0" {
		t.Fatalf("device state moved to %s", d.State().Current.Version)
	}
}

// #1 (manifest) The edge edits the release document it serves (here: it
// names another file list): the ID no longer matches what the signed
// channel record names.
func TestAttackTamperedManifest(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	c.upload("2.0.0", v2Files, uploadOpts{})
	evil := release.Sum([]byte("evil"))
	rewriteCheck(c.proxy, func(_ *http.Request, a *wire.CheckAnswer) {
		doc, _, err := a.Release.Release()
		if err != nil {
			t.Errorf("release document: %v", err)
			return
		}
		doc.Files.SHA256 = evil
		b, _ := doc.Encode()
		a.Release.Signed = b
	})
	mustFail(t, d.Update(context.Background()), "is not the release", dir, v1Files)
}

// #1b (file list) The edge serves another file list, or damages the patch
// so that it makes other files: the list the device builds does not hash
// to what the CI-signed release document names, and nothing is installed.
func TestAttackTamperedFileList(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	v2 := c.upload("2.0.0", v2Files, uploadOpts{})
	other := c.upload("1.5.0", map[string]string{"index.html": "<h1>XX</h1>"}, uploadOpts{channel: "beta"})
	v2M, err := c.origin.ReleaseManifest(v2.ID)
	if err != nil {
		t.Fatal(err)
	}
	otherM, err := c.origin.ReleaseManifest(other.ID)
	if err != nil {
		t.Fatal(err)
	}
	list := "/v1/blobs/" + v2M.Doc().Files.SHA256.String()
	c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.HasPrefix(r.URL.Path, "/v1/patches/"):
			http.NotFound(w, r) // no patch: the device needs the list
		case r.URL.Path == list:
			w.Write(c.proxy.fetch("/v1/blobs/" + otherM.Doc().Files.SHA256.String()))
		default:
			return false
		}
		return true
	})
	mustFail(t, d.Update(context.Background()), "does not match the signed release document", dir, v1Files)
}

// #2 A validly signed record of another app, or another channel.
func TestAttackRecordOfAnotherAppOrChannel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, app, channel string }{
		{"other app", "com.other.app", "production"},
		{"other channel", testApp, "beta"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			d, dir := installV1(t, c, devOpts{})
			c.upload("2.0.0", v2Files, uploadOpts{app: tc.app, channel: tc.channel})
			other := c.signedRecord(tc.app, tc.channel)
			rewriteCheck(c.proxy, func(_ *http.Request, a *wire.CheckAnswer) {
				a.Channel = other // validly signed by the origin, for another channel
			})
			mustFail(t, d.Update(context.Background()), "another app or channel", dir, v1Files)
		})
	}
}

// #3 Unsigned or wrongly signed metadata: every variant is refused.
func TestAttackBadSignatures(t *testing.T) {
	t.Parallel()
	attacker, _ := release.GenerateKey()
	for _, tc := range []struct {
		name string
		edit func(c *cluster, a *wire.CheckAnswer)
		want string
	}{
		{"channel record without signatures", func(_ *cluster, a *wire.CheckAnswer) { a.Channel.Signatures = nil }, "not signed by a trusted key"},
		{"channel record signed by another key", func(_ *cluster, a *wire.CheckAnswer) {
			a.Channel.Signatures = nil
			a.Channel.Sign(attacker)
		}, "not signed by a trusted key"},
		{"channel record with a forged signature under the origin's key id", func(c *cluster, a *wire.CheckAnswer) {
			a.Channel.Signatures[0].Sig = ed25519.Sign(attacker, a.Channel.Signed)
		}, "signature does not verify"},
		{"channel record edited after signing", func(c *cluster, a *wire.CheckAnswer) {
			a.Channel.Signed = bytes.Replace(a.Channel.Signed, []byte(`"rollout_bps":10000`), []byte(`"rollout_bps":9999`), 1)
		}, "signature does not verify"},
		{"duplicated bad signatures", func(c *cluster, a *wire.CheckAnswer) {
			s := a.Channel.Signatures[0]
			s.Sig = bytes.Repeat([]byte{1}, ed25519.SignatureSize)
			a.Channel.Signatures = []release.Signature{s, s}
		}, "signature does not verify"},
		{"manifest without signatures", func(_ *cluster, a *wire.CheckAnswer) { a.Release.Signatures = nil }, "not signed by a trusted key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			d, dir := installV1(t, c, devOpts{})
			c.upload("2.0.0", v2Files, uploadOpts{})
			rewriteCheck(c.proxy, func(_ *http.Request, a *wire.CheckAnswer) { tc.edit(c, a) })
			before := c.proxy.count("blobs") + c.proxy.count("patches")
			mustFail(t, d.Update(context.Background()), tc.want, dir, v1Files)
			if n := c.proxy.count("blobs") + c.proxy.count("patches") - before; n != 0 {
				t.Fatalf("device downloaded %d blobs before verifying", n)
			}
		})
	}
	t.Run("release signed by a key the device does not trust", func(t *testing.T) {
		c := newCluster(t)
		d, dir := installV1(t, c, devOpts{})
		// The origin has no release keys registered for this app, so it
		// stores the upload; the device still refuses.
		c.upload("2.0.0", v2Files, uploadOpts{key: attacker})
		mustFail(t, d.Update(context.Background()), "not signed by a trusted key", dir, v1Files)
	})
}

// #4 Rollback: an older signed record replayed after a newer one.
func TestAttackReplayOlderRecord(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.upload("1.0.0", v1Files, uploadOpts{})
	old := c.proxy.fetch("/v1/check?app=" + testApp + "&channel=production&device=dev-1")
	c.clock.Advance(time.Second)
	c.upload("2.0.0", v2Files, uploadOpts{})
	d, dir := c.device(devOpts{})
	if res := d.Update(context.Background()); res.Status != device.StatusUpdated || res.To != "2.0.0" {
		t.Fatalf("%+v", res)
	}
	c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v1/check" {
			return false
		}
		w.Write(old)
		return true
	})
	mustFail(t, d.Update(context.Background()), "older than one already seen", dir, v2Files)
	// The memory survives a restart.
	d2, _ := c.device(devOpts{dir: dir})
	mustFail(t, d2.Update(context.Background()), "older than one already seen", dir, v2Files)
}

// #5 Indefinite freeze: the edge serves an expired record forever; the
// device reports it rather than "up to date".
func TestAttackFreeze(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	c.proxy.set(nil)
	c.clock.Advance(25 * time.Hour) // the origin re-signs nothing: frozen
	res := d.Update(context.Background())
	mustFail(t, res, "has expired", dir, v1Files)
	res = d.Check(context.Background())
	if res.Status != device.StatusFailed || !strings.Contains(res.Error, "freezing") {
		t.Fatalf("check on a frozen edge: %+v", res)
	}
}

// #8 Mix-and-match: the manifest of A with the files of B.
func TestAttackMixAndMatch(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	other := c.upload("1.5.0", map[string]string{"index.html": "<h1>XX</h1>", "js/app.js": "console.log(3)", "css/site.css": "body{}"}, uploadOpts{channel: "beta"})
	otherM, err := c.origin.ReleaseManifest(other.ID)
	if err != nil {
		t.Fatal(err)
	}
	v2 := c.upload("2.0.0", v2Files, uploadOpts{})
	v2M, err := c.origin.ReleaseManifest(v2.ID)
	if err != nil {
		t.Fatal(err)
	}
	c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
		// Patches: serve the other release's patch from the same base.
		if base, target, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/patches/"), "/"); ok && strings.HasPrefix(r.URL.Path, "/v1/patches/") {
			if target == v2.ID.String() {
				w.Write(c.proxy.fetch("/v1/patches/" + base + "/" + other.ID.String()))
				return true
			}
		}
		if !strings.HasPrefix(r.URL.Path, "/v1/blobs/") {
			return false
		}
		// Files: serve the other release's file at the same path.
		for _, f := range v2M.Files {
			if "/v1/blobs/"+f.SHA256.String() != r.URL.Path {
				continue
			}
			if of, ok := otherM.Lookup(f.Path); ok {
				w.Write(c.proxy.fetch("/v1/blobs/" + of.SHA256.String()))
				return true
			}
		}
		return false
	})
	mustFail(t, d.Update(context.Background()), "verification failed", dir, v1Files)
}

// #9 Wrong base: the files the device reuses from its installed bundle are
// damaged (a wrong base); the device detects it and downloads the file.
func TestAttackWrongBase(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	// css/site.css is unchanged in v2, so the device would reuse it.
	if err := os.WriteFile(filepath.Join(dir, "current", "css", "site.css"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.upload("2.0.0", v2Files, uploadOpts{})
	res := d.Update(context.Background())
	if res.Status != device.StatusUpdated {
		t.Fatalf("%+v", res)
	}
	sameTree(t, dir, v2Files)
}

// #10 Endless data: the edge streams forever or lies in Content-Length; the
// device stops at the signed size.
func TestAttackEndlessData(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		hook func(w http.ResponseWriter, r *http.Request)
		want string
	}{
		{"endless body", func(w http.ResponseWriter, r *http.Request) {
			buf := bytes.Repeat([]byte("A"), 32<<10)
			for i := 0; i < 1<<16 && r.Context().Err() == nil; i++ { // up to 2 GiB
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
		}, "verification failed"},
		{"Content-Length lie", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(1<<40))
			w.Write([]byte("x"))
		}, "is more than the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			d, dir := installV1(t, c, devOpts{})
			c.upload("2.0.0", v2Files, uploadOpts{})
			c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
				if !isContent(r.URL.Path) {
					return false
				}
				tc.hook(w, r)
				return true
			})
			res := d.Update(context.Background())
			mustFail(t, res, tc.want, dir, v1Files)
			if res.Bytes > 1<<20 {
				t.Fatalf("device read %d bytes from an endless body", res.Bytes)
			}
		})
	}
}

// #11 Path traversal: even with both signatures valid (an attacker holding
// the CI key and the origin key), a manifest that leaves the install
// folder is refused when parsed.
func TestAttackPathTraversal(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	bad := []byte(`{"type":"capstan.release/v1","app":"` + testApp + `","version":"2.0.0","files":[{"path":"../../evil.sh","size":1,"mode":420,"sha256":"` + release.Sum([]byte("x")).String() + `"}]}`)
	menv := release.Seal(bad, c.releaseKey)
	var okCh *release.Channel
	rewriteCheck(c.proxy, func(_ *http.Request, a *wire.CheckAnswer) {
		ch, err := a.Channel.Channel()
		if err != nil {
			t.Error(err)
			return
		}
		ch.Seq++
		ch.Release = release.Ref{Version: "2.0.0", ID: menv.ID()}
		okCh = ch
		b, _ := ch.Encode()
		a.Channel = release.Seal(b, c.originPrivateKey())
		a.Release = menv
		a.Status = "update"
	})
	mustFail(t, d.Update(context.Background()), "'..' segment", dir, v1Files)
	if okCh == nil {
		t.Fatal("hook did not run")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "evil.sh")); err == nil {
		t.Fatal("a file was written outside the device folder")
	}
}

// #12 Slow retrieval: one edge trickles bytes; the device gives up at its
// deadline and the next edge succeeds.
func TestAttackSlowEdge(t *testing.T) {
	c := newCluster(t)
	c.upload("1.0.0", v1Files, uploadOpts{})
	c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
		if !isContent(r.URL.Path) {
			return false
		}
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // trickle: nothing more until the device leaves
		return true
	})
	d, dir := c.device(devOpts{edges: []string{c.proxy.srv.URL, c.edgeURL}, timeout: 2 * time.Second})
	res := d.Update(context.Background())
	if res.Status != device.StatusUpdated {
		t.Fatalf("%+v", res)
	}
	sameTree(t, dir, v1Files)
	if c.proxy.count("blobs")+c.proxy.count("patches") == 0 {
		t.Fatalf("the slow edge was never asked: %v", c.proxy.hits)
	}
}

// #13 Malicious mirror denial: one edge answers garbage; the device uses
// the next.
func TestAttackGarbageEdgeFailover(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.upload("1.0.0", v1Files, uploadOpts{})
	c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
		w.Write([]byte("{garbage"))
		return true
	})
	d, dir := c.device(devOpts{edges: []string{c.proxy.srv.URL, c.edgeURL}})
	if res := d.Update(context.Background()); res.Status != device.StatusUpdated {
		t.Fatalf("%+v", res)
	}
	sameTree(t, dir, v1Files)
}

// #17 Compatibility: a release for a newer native shell is refused by the
// device itself, even when the edge offers it.
func TestAttackWrongNativeVersion(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{native: "1.0.0"})
	before := c.proxy.count("blobs") + c.proxy.count("patches")
	c.upload("2.0.0", v2Files, uploadOpts{minNative: "2.0.0"})
	rewriteCheck(c.proxy, func(r *http.Request, a *wire.CheckAnswer) {
		q := r.URL.Query()
		q.Set("native", "9.9.9") // the edge is told a lie and offers the release
		json.Unmarshal(c.proxy.fetch("/v1/check?"+q.Encode()), a)
		if a.Status != "update" || a.Release == nil {
			t.Errorf("edge answer %+v", a)
		}
	})
	res := d.Update(context.Background())
	if res.Status != device.StatusUpToDate || !strings.Contains(res.Reason, "needs native version 2.0.0") {
		t.Fatalf("%+v", res)
	}
	sameTree(t, dir, v1Files)
	if n := c.proxy.count("blobs") + c.proxy.count("patches"); n != before {
		t.Fatalf("%d content downloads after the refusal", n-before)
	}
}

// #15 Edges hold no signing key: after serving updates, nothing in the
// edge's data folder is a private key or contains one.
func TestEdgeHoldsNoSigningKey(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	installV1(t, c, devOpts{})
	secrets := [][]byte{[]byte("PRIVATE KEY"), c.originPrivateKey().Seed(), c.releaseKey.Seed()}
	err := filepath.WalkDir(c.edgeDir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if bytes.Contains(b, s) {
				t.Errorf("%s contains key material", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// And a forged record made with a key the edge could hold is refused.
	forger, _ := release.GenerateKey()
	rewriteCheck(c.proxy, func(_ *http.Request, a *wire.CheckAnswer) {
		a.Channel.Signatures = nil
		a.Channel.Sign(forger)
	})
	d, dir := c.device(devOpts{})
	mustFail(t, d.Update(context.Background()), "not signed by a trusted key", dir, map[string]string{})
}

// isContent reports whether a path is release content: a file or a patch
// (including the full-bundle stream, a patch from the empty base).
func isContent(path string) bool {
	return strings.HasPrefix(path, "/v1/blobs/") || strings.HasPrefix(path, "/v1/patches/")
}

// #10 (metadata) An endless update-check answer is cut at the bound for
// metadata (the largest manifest plus room), not read forever.
func TestAttackEndlessCheckAnswer(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v1/check" {
			return false
		}
		w.Write([]byte(`{"status":"update","reason":"`))
		buf := bytes.Repeat([]byte("A"), 64<<10)
		for i := 0; i < 1<<15 && r.Context().Err() == nil; i++ { // up to 2 GiB
			if _, err := w.Write(buf); err != nil {
				return true
			}
		}
		return true
	})
	res := d.Update(context.Background())
	mustFail(t, res, "malformed answer", dir, v1Files)
	if limit := int64(4<<20 + release.MaxManifestBytes); res.Bytes > limit+64<<10 {
		t.Fatalf("device read %d bytes of an endless answer, bound %d", res.Bytes, limit)
	}
}
