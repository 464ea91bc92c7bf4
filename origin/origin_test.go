package origin

import (
	"archive/zip"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/origin/store/fileblobs"

	"github.com/capstan-ota/capstan/release"
)

const testAdminKey = "test-admin-key"

func newTestOrigin(t *testing.T) (*Server, *httptest.Server) {
	t.Helper()
	cfg := DefaultConfig(t.TempDir())
	cfg.AdminKey = testAdminKey
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(o.Handler())
	t.Cleanup(func() { ts.Close(); o.Close() })
	return o, ts
}

type zipEntry struct {
	name string
	body []byte
	mode fs.FileMode
	// lieSize, if set, is written as the declared uncompressed size.
	lieSize uint64
}

func makeZip(t *testing.T, entries ...zipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		if e.mode != 0 {
			h.SetMode(e.mode)
		}
		if e.lieSize != 0 {
			// Write a raw deflate stream with a lying header.
			var comp bytes.Buffer
			fw := zip.NewWriter(&comp)
			w, _ := fw.CreateHeader(&zip.FileHeader{Name: "x", Method: zip.Deflate})
			w.Write(e.body)
			fw.Close()
			zr, _ := zip.NewReader(bytes.NewReader(comp.Bytes()), int64(comp.Len()))
			raw, _ := zr.File[0].OpenRaw()
			rawBytes, _ := io.ReadAll(raw)
			h.CRC32 = zr.File[0].CRC32
			h.CompressedSize64 = uint64(len(rawBytes))
			h.UncompressedSize64 = e.lieSize
			w2, err := zw.CreateRaw(h)
			if err != nil {
				t.Fatal(err)
			}
			w2.Write(rawBytes)
			continue
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func upload(t *testing.T, ts *httptest.Server, key, app, version string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", ts.URL+"/v1/apps/"+app+"/releases?version="+version+"&channel=production", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/zip")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Error string `json:"error"`
	}
	json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error
}

func countBlobs(t *testing.T, o *Server) int {
	n := 0
	filepath.WalkDir(o.blobs.b.(*fileblobs.Store).Root(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// TestBadUploads is the table of hostile or mistaken uploads: each gets a
// clear 4xx with a one-line reason, and nothing is stored.
func TestBadUploads(t *testing.T) {
	good := makeZip(t, zipEntry{name: "index.html", body: []byte("<html>")})
	bomb := bytes.Repeat([]byte{0}, 64<<20)
	cases := []struct {
		name    string
		key     string
		app     string
		version string
		body    []byte
		status  int
		reason  string
	}{
		{"no api key", "", "com.x", "1.0.0", good, 401, "API key"},
		{"wrong api key", "nope", "com.x", "1.0.0", good, 401, "API key"},
		{"not a zip", testAdminKey, "com.x", "1.0.0", []byte("this is not a zip"), 400, "not a readable zip"},
		{"empty body", testAdminKey, "com.x", "1.0.0", nil, 400, "not a readable zip"},
		{"zip slip", testAdminKey, "com.x", "1.0.0", makeZip(t, zipEntry{name: "../evil.js", body: []byte("x")}), 400, "'..'"},
		{"nested zip slip", testAdminKey, "com.x", "1.0.0", makeZip(t, zipEntry{name: "a/../../evil.js", body: []byte("x")}), 400, "'..'"},
		{"absolute path", testAdminKey, "com.x", "1.0.0", makeZip(t, zipEntry{name: "/etc/passwd", body: []byte("x")}), 400, "absolute"},
		{"backslash path", testAdminKey, "com.x", "1.0.0", makeZip(t, zipEntry{name: `..\evil.js`, body: []byte("x")}), 400, "backslash"},
		{"symlink", testAdminKey, "com.x", "1.0.0", makeZip(t, zipEntry{name: "link", body: []byte("/etc/passwd"), mode: fs.ModeSymlink | 0o777}), 400, "symlink"},
		{"duplicate entries", testAdminKey, "com.x", "1.0.0", makeZip(t, zipEntry{name: "a.js", body: []byte("1")}, zipEntry{name: "a.js", body: []byte("2")}), 400, "duplicate"},
		{"file and folder", testAdminKey, "com.x", "1.0.0", makeZip(t, zipEntry{name: "a", body: []byte("1")}, zipEntry{name: "a/b", body: []byte("2")}), 400, "both a file and a folder"},
		{"zip bomb by ratio", testAdminKey, "com.x", "1.0.0", makeZip(t, zipEntry{name: "zeros.bin", body: bomb}), 400, "zip bomb"},
		{"zip bomb lying header", testAdminKey, "com.x", "1.0.0", makeZip(t, zipEntry{name: "liar.bin", body: bytes.Repeat([]byte("a"), 1<<20), lieSize: 100}), 400, "larger than its declared size"},
		{"empty bundle", testAdminKey, "com.x", "1.0.0", makeZip(t), 400, "no files"},
		{"invalid semver", testAdminKey, "com.x", "1.0", good, 400, "not semver"},
		{"invalid app id", testAdminKey, "-bad-", "1.0.0", good, 400, "app id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, ts := newTestOrigin(t)
			status, reason := upload(t, ts, tc.key, tc.app, tc.version, tc.body)
			if status != tc.status || !strings.Contains(reason, tc.reason) {
				t.Fatalf("got %d %q, want %d containing %q", status, reason, tc.status, tc.reason)
			}
			if strings.Contains(reason, "\n") {
				t.Errorf("reason is more than one line: %q", reason)
			}
			if n := countBlobs(t, o); n != 0 {
				t.Errorf("%d blobs stored after a refused upload", n)
			}
			if recs, _ := o.st.releases(tc.app); len(recs) != 0 {
				t.Errorf("release stored after a refused upload")
			}
			if chans, _ := o.st.channels(""); len(chans) != 0 {
				t.Errorf("channel record stored after a refused upload")
			}
		})
	}
}

func TestVersionReuseRefused(t *testing.T) {
	o, ts := newTestOrigin(t)
	good := makeZip(t, zipEntry{name: "index.html", body: []byte("<html>")})
	if s, r := upload(t, ts, testAdminKey, "com.x", "1.0.0", good); s != 201 {
		t.Fatalf("first upload: %d %s", s, r)
	}
	other := makeZip(t, zipEntry{name: "index.html", body: []byte("<html>changed")})
	s, r := upload(t, ts, testAdminKey, "com.x", "1.0.0", other)
	if s != 409 || !strings.Contains(r, "never reused") {
		t.Fatalf("reused version: %d %q", s, r)
	}
	rec, err := o.st.release("com.x", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := o.manifestOf(rec)
	if m.Files[0].SHA256 != release.Sum([]byte("<html>")) {
		t.Fatal("the refused upload replaced the stored release")
	}
}

func apiCall(t *testing.T, ts *httptest.Server, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Error string `json:"error"`
	}
	json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error
}

func TestChannelBadInput(t *testing.T) {
	_, ts := newTestOrigin(t)
	good := makeZip(t, zipEntry{name: "index.html", body: []byte("<html>")})
	upload(t, ts, testAdminKey, "com.x", "1.0.0", good)
	cases := []struct {
		name, method, path, body string
		status                   int
		reason                   string
	}{
		{"unknown app", "PUT", "/v1/apps/com.nope/channels/production", `{"version":"1.0.0"}`, 404, "not found"},
		{"unknown version", "PUT", "/v1/apps/com.x/channels/production", `{"version":"9.9.9"}`, 404, "not found"},
		{"invalid semver", "PUT", "/v1/apps/com.x/channels/production", `{"version":"one"}`, 400, "semver"},
		{"malformed json", "PUT", "/v1/apps/com.x/channels/production", `{"version":`, 400, "malformed JSON"},
		{"unknown field", "PUT", "/v1/apps/com.x/channels/production", `{"versoin":"1.0.0"}`, 400, "malformed JSON"},
		{"rollout out of range", "PUT", "/v1/apps/com.x/channels/production", `{"version":"1.0.0","rollout":150}`, 400, "between 0 and 100"},
		{"bad channel name", "PUT", "/v1/apps/com.x/channels/bad%20name", `{"version":"1.0.0"}`, 400, "channel name"},
		{"new channel without version", "PUT", "/v1/apps/com.x/channels/beta", `{"rollout":10,"new_channel":true}`, 404, "give --version"},
		{"mistyped channel", "PUT", "/v1/apps/com.x/channels/prodution", `{"version":"1.0.0"}`, 404, `did you mean "production"? (its channels: production); to make a new channel, add --new-channel`},
		{"rollback unknown channel", "POST", "/v1/apps/com.x/channels/nightly/rollback", ``, 404, `has no channel "nightly" (its channels: production)`},
		{"rollback with no history", "POST", "/v1/apps/com.x/channels/production/rollback", ``, 404, "has served only"},
		{"releases of unknown app", "GET", "/v1/apps/com.nope/releases", ``, 404, "not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, r := apiCall(t, ts, tc.method, tc.path, tc.body)
			if s != tc.status || !strings.Contains(r, tc.reason) {
				t.Fatalf("got %d %q, want %d containing %q", s, r, tc.status, tc.reason)
			}
		})
	}
}

// TestChannelRecordsSignedAndMonotonic checks that every change makes a
// new signed record with a larger Seq, and rollback adds to history.
func TestChannelRecordsSignedAndMonotonic(t *testing.T) {
	o, ts := newTestOrigin(t)
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if s, r := upload(t, ts, testAdminKey, "com.x", v, makeZip(t, zipEntry{name: "index.html", body: []byte(v)})); s != 201 {
			t.Fatal(s, r)
		}
	}
	if s, r := apiCall(t, ts, "POST", "/v1/apps/com.x/channels/production/rollback", ``); s != 200 {
		t.Fatal(s, r)
	}
	hist, err := o.st.history("com.x", "production")
	if err != nil || len(hist) != 3 {
		t.Fatalf("history: %d records, %v", len(hist), err)
	}
	want := []string{"1.0.0", "1.1.0", "1.0.0"}
	for i, c := range hist {
		if c.Release.Version != want[i] {
			t.Errorf("record %d serves %s, want %s", i, c.Release.Version, want[i])
		}
		if i > 0 && c.Seq <= hist[i-1].Seq {
			t.Errorf("seq did not grow: %d after %d", c.Seq, hist[i-1].Seq)
		}
	}
	env, _, err := o.st.channel("com.x", "production")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Verify([]ed25519.PublicKey{o.PublicKey()}); err != nil {
		t.Fatalf("channel record does not verify with the origin key: %v", err)
	}
}

// TestResignBeforeExpiry checks that records are re-signed with a new
// expiry once half their lifetime has passed.
func TestResignBeforeExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := DefaultConfig(t.TempDir())
	cfg.AdminKey = testAdminKey
	cfg.ChannelTTL = time.Hour
	cfg.Now = func() time.Time { return now }
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ts := httptest.NewServer(o.Handler())
	defer ts.Close()
	upload(t, ts, testAdminKey, "com.x", "1.0.0", makeZip(t, zipEntry{name: "index.html", body: []byte("x")}))
	_, before, _ := o.st.channel("com.x", "production")
	now = now.Add(20 * time.Minute)
	o.resignDue()
	_, same, _ := o.st.channel("com.x", "production")
	if same.Seq != before.Seq {
		t.Fatal("re-signed too early")
	}
	now = now.Add(20 * time.Minute)
	o.resignDue()
	_, after, _ := o.st.channel("com.x", "production")
	if after.Seq <= before.Seq || !after.Expires.After(before.Expires) || after.Release != before.Release {
		t.Fatalf("not re-signed: before %+v after %+v", before, after)
	}
}

func TestAdminKeyGeneratedOnce(t *testing.T) {
	dir := t.TempDir()
	o, err := New(DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	k := o.GeneratedAdminKey()
	o.Close()
	if !strings.HasPrefix(k, "cap_") {
		t.Fatalf("generated key %q", k)
	}
	o2, err := New(DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer o2.Close()
	if o2.GeneratedAdminKey() != "" {
		t.Fatal("a second admin key was generated on restart")
	}
	if _, err := os.Stat(filepath.Join(dir, "origin.key.pub")); err != nil {
		t.Fatal("origin public key not written:", err)
	}
}

func newServer(t *testing.T, srv *http.Server) *httptest.Server {
	ts := httptest.NewUnstartedServer(srv.Handler)
	ts.Config = srv
	ts.Start()
	t.Cleanup(ts.Close)
	return ts
}

// randomish is incompressible filler for size tests.
func randomish(n int) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}
