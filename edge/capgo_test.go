package edge_test

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/capgo/capgokey"
	"github.com/capstan-ota/capstan/capgo/capgotest"
	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// androidBody is capgo.md A.2's example request, for app com.x.
const androidBody = `{"platform":"android","device_id":"0b6c2a9e-8d1f-4c5e-9a7b-2f4e6d8c1a3b","app_id":"com.x",
 "custom_id":"","version_build":"1.0.0","version_code":"100","version_os":"14","version_name":"builtin",
 "plugin_version":"8.51.14","is_emulator":false,"is_prod":true,"install_source":"google_play",
 "defaultChannel":""}`

// iosBody is the iOS variant: no install_source on a dev build, is_prod
// false, Accept header set by the caller.
const iosBody = `{"platform":"ios","device_id":"5f1d2c3b-aaaa-4bbb-8ccc-0123456789ab","app_id":"com.x",
 "custom_id":"","version_build":"1.0","version_code":"7","version_os":"17.4","version_name":"builtin",
 "plugin_version":"8.51.14","is_emulator":true,"is_prod":false,"defaultChannel":""}`

func postJSON(t *testing.T, u, method, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
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

// withFields returns body with fields set (or deleted when the value is
// nil).
func withFields(t *testing.T, body string, kv ...any) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(m, kv[i].(string))
		} else {
			m[kv[i].(string)] = kv[i+1]
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func syncEdge(t testing.TB, e *testEdge) {
	t.Helper()
	if err := e.SyncFromOrigin(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestCapgoConformance replays the plugin's request bodies, good and bad,
// against a real edge and checks every answer with the plugin's rules.
func TestCapgoConformance(t *testing.T) {
	f := newFleet(t)
	big := bytes.Repeat([]byte("console.log('capstan');\n"), 1000) // 24 KiB: a Brotli payload
	rec := f.upload(t, "1.0.0", map[string][]byte{
		"index.html":       []byte("<html>v1</html>"),
		"assets/app.js":    big,
		"assets/pre.js.br": []byte("tiny but named .br"),
	})
	e := startEdge(t, f, t.TempDir(), nil)
	syncEdge(t, e)
	u := e.url + "/updates"

	type want struct {
		update bool
		kind   string
		code   string
	}
	cases := []struct {
		name string
		body string
		hdr  []string
		want want
	}{
		{"android A.2 example", androidBody, nil, want{update: true}},
		{"ios variant", iosBody, []string{"Accept", "application/json"}, want{update: true}},
		{"unknown fields ignored", withFields(t, androidBody, "future_field", map[string]any{"x": []int{1}}, "another", 3.5), nil, want{update: true}},
		{"numbers and string booleans tolerated", withFields(t, androidBody, "version_code", 230, "is_prod", "true"), nil, want{update: true}},
		{"already on the release", withFields(t, androidBody, "version_name", "1.0.0"), nil, want{kind: "up_to_date", code: capgo.CodeNoNewVersion}},
		{"unknown current version", withFields(t, androidBody, "version_name", "0.0.1-old"), nil, want{update: true}},
		{"major jump over native", withFields(t, androidBody, "version_build", "0.9.0"), nil, want{kind: "blocked", code: capgo.CodeDisableMajor}},
		{"release older than native", withFields(t, androidBody, "version_build", "1.5.0"), nil, want{kind: "blocked", code: capgo.CodeDisableUnderNative}},
		{"unknown native version", withFields(t, androidBody, "version_build", "unknown"), nil, want{kind: "failed", code: capgo.CodeUnknownVersionBuild}},
		{"garbage native version", withFields(t, androidBody, "version_build", "banana"), nil, want{kind: "failed", code: capgo.CodeSemverError}},
		{"device holds a key, release is plain", withFields(t, androidBody, "key_id", "MIIBCgKCAQEAu7lq0Yz3"), nil, want{kind: "blocked", code: capgo.CodeKeyIDMismatch}},
		{"unknown app", withFields(t, androidBody, "app_id", "com.nope"), nil, want{kind: "failed", code: capgo.CodeNoChannel}},
		{"missing device id", withFields(t, androidBody, "device_id", nil), nil, want{kind: "failed", code: capgo.CodeMissingInfo}},
		{"empty object", `{}`, nil, want{kind: "failed", code: capgo.CodeMissingInfo}},
		{"array body", `[` + androidBody + `]`, nil, want{kind: "failed", code: capgo.CodeMissingInfo}},
		{"malformed JSON", `{"app_id":"com.x",`, nil, want{kind: "failed", code: capgo.CodeMissingInfo}},
		{"wrong type", withFields(t, androidBody, "app_id", map[string]any{"x": 1}), nil, want{kind: "failed", code: capgo.CodeMissingInfo}},
		{"oversized body", withFields(t, androidBody, "padding", strings.Repeat("x", capgo.MaxInfoBody)), nil, want{kind: "failed", code: capgo.CodeMissingInfo}},
		{"hostile app id", withFields(t, androidBody, "app_id", "../../etc"), nil, want{kind: "failed", code: capgo.CodeMissingInfo}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, raw := postJSON(t, u, "POST", tc.body, tc.hdr...)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, raw)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("content type %q", ct)
			}
			a, err := capgotest.DecodeAnswer(raw)
			if err != nil {
				t.Fatalf("%v: %s", err, raw)
			}
			if a.IsUpdate() != tc.want.update {
				t.Fatalf("update=%v, want %v: %s", a.IsUpdate(), tc.want.update, raw)
			}
			if !tc.want.update {
				if *a.Kind != tc.want.kind || *a.Error != tc.want.code {
					t.Fatalf("got %s/%s, want %s/%s: %s", *a.Kind, *a.Error, tc.want.kind, tc.want.code, raw)
				}
				if tc.want.code == capgo.CodeDisableMajor && (a.Major == nil || !*a.Major) {
					t.Fatalf("major block without major:true: %s", raw)
				}
				return
			}
			if *a.Version != "1.0.0" || *a.SessionKey != "" || len(a.Manifest) != 3 {
				t.Fatalf("answer: %s", raw)
			}
			checkZipURL(t, *a.URL, *a.Checksum)
			checkManifest(t, a, f.origin, rec)
		})
	}

	t.Run("old plugin gets no manifest", func(t *testing.T) {
		_, raw := postJSON(t, u, "POST", withFields(t, androidBody, "plugin_version", "5.2.0"))
		a, err := capgotest.DecodeAnswer(raw)
		if err != nil || !a.IsUpdate() || a.Manifest != nil {
			t.Fatalf("%v: %s", err, raw)
		}
	})
	t.Run("forwarded host and proto", func(t *testing.T) {
		_, raw := postJSON(t, u, "POST", androidBody, "X-Forwarded-Proto", "https", "X-Forwarded-Host", "ota.example.com")
		a, err := capgotest.DecodeAnswer(raw)
		if err != nil || !strings.HasPrefix(*a.URL, "https://ota.example.com/") {
			t.Fatalf("%v: %s", err, raw)
		}
		_, raw = postJSON(t, u, "POST", androidBody, "X-Forwarded-Host", "evil.com/path?")
		if a, err = capgotest.DecodeAnswer(raw); err != nil || strings.Contains(*a.URL, "evil") {
			t.Fatalf("hostile forwarded host: %v: %s", err, raw)
		}
	})
	t.Run("over the fasthttp body cap", func(t *testing.T) {
		// The edge refuses (413) or closes the connection mid-body.
		resp, err := http.Post(u, "application/json", strings.NewReader(withFields(t, androidBody, "padding", strings.Repeat("x", 2<<20))))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Fatal("a 2 MiB body was accepted")
			}
		}
	})
}

// checkZipURL downloads the full zip, checks its hash, Content-Length and
// a Range request.
func checkZipURL(t *testing.T, u, checksum string) {
	t.Helper()
	resp, body := get(t, u)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(body)) {
		t.Fatalf("zip: %d, %d bytes, Content-Length %d", resp.StatusCode, len(body), resp.ContentLength)
	}
	if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != checksum {
		t.Fatalf("zip hashes to %x, checksum %s", sum, checksum)
	}
	resp, part := get(t, u, "Range", "bytes=10-")
	if resp.StatusCode != 206 || !bytes.Equal(part, body[10:]) {
		t.Fatalf("range: %d, %d bytes", resp.StatusCode, len(part))
	}
}

// checkManifest downloads every manifest entry and checks it decodes (for
// .br) and hashes to file_hash, and that the entries are the release.
func checkManifest(t *testing.T, a *capgotest.AppVersion, o *origin.Server, rec *release.Record) {
	t.Helper()
	m, err := o.ReleaseManifest(rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range a.Manifest {
		name := *e.FileName
		target := strings.TrimSuffix(name, ".br")
		f, ok := m.Lookup(target)
		if !ok || f.SHA256.String() != *e.FileHash {
			t.Fatalf("manifest entry %s does not match the release", name)
		}
		if capgo.WantsBrotli(f.Path, f.Size) != strings.HasSuffix(name, ".br") {
			t.Fatalf("entry %s (%d bytes): brotli choice", name, f.Size)
		}
		resp, b := get(t, *e.DownloadURL)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", name, resp.StatusCode)
		}
		if strings.HasSuffix(name, ".br") {
			if b, err = io.ReadAll(brotli.NewReader(bytes.NewReader(b))); err != nil {
				t.Fatalf("%s: brotli: %v", name, err)
			}
		}
		if release.Sum(b) != f.SHA256 {
			t.Fatalf("%s: content does not hash to file_hash", name)
		}
	}
}

// newQuietFleet is newFleet without background patch builds: Capgo
// devices never ask for Capstan patches, and the builds would only compete
// for CPU with the test.
func newQuietFleet(t testing.TB) *fleet {
	t.Helper()
	return newFleet(t, func(cfg *origin.Config) {
		cfg.PrecomputeBases = -1
		cfg.CapgoBrotliQuality = 1 // the race detector makes q9 ~10 s per MiB
	})
}

func uploadFixture(t testing.TB, f *fleet, app, version, fixture, channel string, enc *capgo.Encrypted, encZip []byte) *release.Record {
	t.Helper()
	zf, err := os.Open(testutil.Fixture(t, fixture))
	if err != nil {
		t.Fatal(err)
	}
	defer zf.Close()
	up := client.Upload{App: app, Version: version, Channel: channel, Bundle: zf}
	if enc != nil {
		up.Capgo, up.CapgoZip = enc, bytes.NewReader(encZip)
	}
	c := &client.Client{Server: f.originURL, APIKey: adminKey}
	rec, err := c.UploadRelease(context.Background(), up)
	if err != nil {
		t.Fatal(err)
	}
	// Wait for (join) the background build of zip and Brotli payloads.
	if err := f.origin.PrepareCapgo(context.Background(), rec.ID); err != nil {
		t.Fatal(err)
	}
	return rec
}

func newDevice(t *testing.T, e *testEdge, app, nativeVersion string) *capgotest.Device {
	return &capgotest.Device{
		UpdateURL: e.url + "/updates", StatsURL: e.url + "/stats", ChannelURL: e.url + "/channel_self",
		Dir: t.TempDir(),
		Info: capgo.Info{
			Platform: "android", DeviceID: "0b6c2a9e-8d1f-4c5e-9a7b-2f4e6d8c1a3b", AppID: capgo.Str(app),
			VersionBuild: capgo.Str(nativeVersion), VersionCode: "1", VersionOS: "14", VersionName: capgo.Builtin,
			PluginVersion: "8.51.14", IsProd: true, InstallSource: "google_play",
		},
	}
}

// checkUntilUpdate polls the update check until the edge offers an update:
// the first check of a new release may find its zip still being built and
// answer "failed, retry later", as a device would retry at its next
// foreground.
func checkUntilUpdate(t *testing.T, d *capgotest.Device) *capgotest.AppVersion {
	t.Helper()
	var a *capgotest.AppVersion
	var raw []byte
	var err error
	testutil.Eventually(t, 2*time.Minute, "an update answer", func() bool {
		a, raw, err = d.Check(context.Background())
		if err != nil {
			t.Fatalf("%v: %s", err, raw)
		}
		if !a.IsUpdate() && *a.Error != capgo.CodeNoBundle {
			t.Fatalf("not an update: %s", raw)
		}
		return a.IsUpdate()
	})
	return a
}

func fixtureHashes(t *testing.T, fixture string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(testutil.Fixture(t, fixture))
	if err != nil {
		t.Fatal(err)
	}
	h, err := capgotest.ZipHashes(b)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func sameFiles(t *testing.T, d *capgotest.Device, version, fixture string) {
	t.Helper()
	got, err := d.Files(version)
	if err != nil {
		t.Fatal(err)
	}
	want := fixtureHashes(t, fixture)
	if len(got) != len(want) {
		t.Fatalf("installed %d files, the fixture has %d", len(got), len(want))
	}
	for p, h := range want {
		if got[p] != h {
			t.Fatalf("%s: installed %q, fixture %q", p, got[p], h)
		}
	}
}

// TestCapgoInstallsSwaggerReleases installs real releases through an edge
// with the plugin's algorithm: manifest downloads reuse the files the
// device already holds, and old plugins take the full zip.
func TestCapgoInstallsSwaggerReleases(t *testing.T) {
	f := newQuietFleet(t)
	uploadFixture(t, f, "com.swagger", "5.34.0", "swagger-ui/www-5.34.0.zip", "production", nil, nil)
	e := startEdge(t, f, t.TempDir(), nil)
	syncEdge(t, e)
	ctx := context.Background()

	d := newDevice(t, e, "com.swagger", "5.0.0")
	a := checkUntilUpdate(t, d)
	res, err := d.Install(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != "manifest" || res.Reused != 0 || res.Downloaded == 0 {
		t.Fatalf("first install: %+v", res)
	}
	sameFiles(t, d, "5.34.0", "swagger-ui/www-5.34.0.zip")
	a, raw, err := d.Check(ctx)
	if err != nil || a.IsUpdate() || *a.Kind != capgo.KindUpToDate {
		t.Fatalf("after install: %v %s", err, raw)
	}

	uploadFixture(t, f, "com.swagger", "5.34.1", "swagger-ui/www-5.34.1.zip", "production", nil, nil)
	syncEdge(t, e)
	if a = checkUntilUpdate(t, d); *a.Version != "5.34.1" {
		t.Fatalf("offered %s", *a.Version)
	}
	res, err = d.Install(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	sameFiles(t, d, "5.34.1", "swagger-ui/www-5.34.1.zip")
	fi, _ := os.Stat(testutil.Fixture(t, "swagger-ui/www-5.34.1.zip"))
	if res.Reused == 0 || res.Bytes >= fi.Size() {
		t.Fatalf("second install reused %d files and downloaded %d bytes (zip %d)", res.Reused, res.Bytes, fi.Size())
	}
	t.Logf("5.34.0 → 5.34.1 over the manifest: %d files fetched, %d reused, %d bytes (full zip %d)", res.Downloaded, res.Reused, res.Bytes, fi.Size())

	old := newDevice(t, e, "com.swagger", "5.0.0")
	old.Info.PluginVersion = "5.2.0"
	if a, raw, err = old.Check(ctx); err != nil || len(a.Manifest) != 0 {
		t.Fatalf("%v: %s", err, raw)
	}
	if res, err = old.Install(ctx, a); err != nil || res.Mode != "zip" {
		t.Fatalf("zip install: %v %+v", err, res)
	}
	sameFiles(t, old, "5.34.1", "swagger-ui/www-5.34.1.zip")
}

// TestCapgoEncryptedRelease serves a bundle encrypted in the plugin's
// format: the device recovers the session key and checksum with the public
// key, decrypts the zip and checks it.
func TestCapgoEncryptedRelease(t *testing.T) {
	privPEM, pubPEM, err := capgokey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := capgokey.ParsePrivateKey(privPEM)
	pub, _ := capgokey.ParsePublicKey(pubPEM)
	plain, err := os.ReadFile(testutil.Fixture(t, "swagger-ui/www-5.34.0.zip"))
	if err != nil {
		t.Fatal(err)
	}
	var encZip bytes.Buffer
	enc, err := capgokey.EncryptBundle(priv, bytes.NewReader(plain), &encZip)
	if err != nil {
		t.Fatal(err)
	}
	if enc.KeyID != capgo.KeyIDFromPEM(string(pubPEM)) {
		t.Fatalf("key id %s, from PEM %s", enc.KeyID, capgo.KeyIDFromPEM(string(pubPEM)))
	}
	f := newQuietFleet(t)
	uploadFixture(t, f, "com.secret", "5.34.0", "swagger-ui/www-5.34.0.zip", "production", enc, encZip.Bytes())
	e := startEdge(t, f, t.TempDir(), nil)
	syncEdge(t, e)
	ctx := context.Background()

	d := newDevice(t, e, "com.secret", "5.0.0")
	d.PublicKey, d.Info.KeyID = pub, capgo.Str(enc.KeyID)
	a, raw, err := d.Check(ctx)
	if err != nil || !a.IsUpdate() || *a.SessionKey != enc.SessionKey || a.Manifest != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	res, err := d.Install(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != "zip" {
		t.Fatalf("mode %s", res.Mode)
	}
	sameFiles(t, d, "5.34.0", "swagger-ui/www-5.34.0.zip")

	for name, keyID := range map[string]string{"no key": "", "other key": "MIIBCgKCAQEAzzzzzzzz"} {
		d := newDevice(t, e, "com.secret", "5.0.0")
		d.Info.KeyID = capgo.Str(keyID)
		a, raw, err := d.Check(ctx)
		if err != nil || a.IsUpdate() || *a.Error != capgo.CodeKeyIDMismatch || *a.Kind != capgo.KindBlocked {
			t.Fatalf("%s: %v %s", name, err, raw)
		}
	}
}

// TestCapgoStats: objects and arrays are accepted, actions feed the event
// sink, and update_fail stops the release being offered to that device.
func TestCapgoStats(t *testing.T) {
	f := newFleet(t)
	rec := f.upload(t, "1.0.0", map[string][]byte{"index.html": []byte("v1")})
	var mu sync.Mutex
	var got []capgo.Event
	e := startEdge(t, f, t.TempDir(), func(c *edge.Config) {
		c.Capgo.Events = capgo.EventSinkFunc(func(evs []capgo.Event) {
			mu.Lock()
			got = append(got, evs...)
			mu.Unlock()
		})
	})
	syncEdge(t, e)
	ctx := context.Background()
	d := newDevice(t, e, "com.x", "1.0.0")
	a, raw, err := d.Check(ctx)
	if err != nil || !a.IsUpdate() {
		t.Fatalf("%v: %s", err, raw)
	}
	// A single object (the download worker's form) and an array.
	info, _ := json.Marshal(d.Info)
	one := withFields(t, string(info), "action", "download_zip_complete", "version_name", "1.0.0")
	if resp, raw := postJSON(t, e.url+"/stats", "POST", one); resp.StatusCode != 200 || !strings.Contains(string(raw), `"status":"ok"`) {
		t.Fatalf("object: %d %s", resp.StatusCode, raw)
	}
	batch := "[" + withFields(t, string(info), "action", "set", "version_name", "1.0.0", "timestamp", 1700000000000) + "," +
		withFields(t, string(info), "action", "brand_new_action_2030", "version_name", "1.0.0") + ",42]"
	if resp, raw := postJSON(t, e.url+"/stats", "POST", batch); resp.StatusCode != 200 || !strings.Contains(string(raw), `"dropped":1`) {
		t.Fatalf("array: %d %s", resp.StatusCode, raw)
	}
	if code, err := d.Stat(ctx, "update_fail", "1.0.0", "builtin"); err != nil || code != 200 {
		t.Fatalf("update_fail: %d %v", code, err)
	}
	if resp, raw := postJSON(t, e.url+"/stats", "POST", `"nope"`); resp.StatusCode != 400 {
		t.Fatalf("garbage stats: %d %s", resp.StatusCode, raw)
	}
	if resp, _ := postJSON(t, e.url+"/stats", "POST", "["+strings.Repeat(one+",", capgo.MaxStatsEvents)+one+"]"); resp.StatusCode != 400 {
		t.Fatalf("oversized batch: %d", resp.StatusCode)
	}
	a, raw, err = d.Check(ctx)
	if err != nil || a.IsUpdate() || *a.Error != capgo.CodeFailedOnDevice || *a.Kind != capgo.KindBlocked {
		t.Fatalf("after update_fail: %v %s", err, raw)
	}
	other := newDevice(t, e, "com.x", "1.0.0")
	other.Info.DeviceID = "11111111-2222-3333-4444-555555555555"
	if a, raw, err = other.Check(ctx); err != nil || !a.IsUpdate() {
		t.Fatalf("another device: %v %s", err, raw)
	}
	mu.Lock()
	defer mu.Unlock()
	actions := map[string]capgo.Event{}
	for _, ev := range got {
		actions[ev.Action] = ev
	}
	for _, want := range []string{capgo.EventDownload, capgo.EventInstall, capgo.EventRevert} {
		ev, ok := actions[want]
		if !ok || ev.Release != rec.ID || ev.App != "com.x" || ev.Channel != "production" {
			t.Fatalf("event %s: %+v (all: %+v)", want, ev, got)
		}
	}
	if actions[capgo.EventInstall].Time != 1700000000000 || actions[capgo.EventRevert].Error != "update_fail" {
		t.Fatalf("events: %+v", got)
	}
}

// TestCapgoRateLimit: over its rate a client gets 429 with Retry-After and
// a JSON body, on every Capgo endpoint.
func TestCapgoRateLimit(t *testing.T) {
	f := newFleet(t)
	f.upload(t, "1.0.0", map[string][]byte{"index.html": []byte("v1")})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := startEdge(t, f, t.TempDir(), func(c *edge.Config) {
		c.Capgo.RequestsPerSecond = 2
		c.Now = func() time.Time { return now }
	})
	syncEdge(t, e)
	for i := 0; i < 2; i++ {
		if resp, raw := postJSON(t, e.url+"/updates", "POST", androidBody); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, raw)
		}
	}
	// Behind a proxy, devices are told apart by the proxy's last hop.
	if resp, raw := postJSON(t, e.url+"/updates", "POST", androidBody, "X-Forwarded-For", "203.0.113.7"); resp.StatusCode != 200 {
		t.Fatalf("another client behind the proxy: %d %s", resp.StatusCode, raw)
	}
	for _, path := range []string{"/updates", "/stats", "/channel_self"} {
		resp, raw := postJSON(t, e.url+path, "POST", androidBody)
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("%s: %d %q %s", path, resp.StatusCode, resp.Header.Get("Retry-After"), raw)
		}
		if a, err := capgotest.DecodeAnswer(raw); err != nil || *a.Error != capgo.CodeTooManyRequests {
			t.Fatalf("%s: %v %s", path, err, raw)
		}
	}
}

// TestCapgoChannelSelf: setChannel, getChannel and listChannels as the v8
// plugin calls them, and the update check following the chosen channel.
func TestCapgoChannelSelf(t *testing.T) {
	f := newFleet(t)
	f.upload(t, "1.0.0", map[string][]byte{"index.html": []byte("v1")})
	for _, ch := range []struct{ version, channel string }{{"1.1.0-beta.1", "beta"}, {"1.2.0", "secret"}} {
		if _, err := f.origin.Upload(context.Background(), &origin.UploadRequest{App: "com.x", Version: ch.version, Channel: ch.channel, RolloutBPS: release.FullRollout, NewChannel: true},
			zipOf(t, map[string][]byte{"index.html": []byte(ch.channel)})); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.origin.SetCapgoConfig("com.x", &capgo.AppConfig{Channels: map[string]capgo.ChannelFlags{"beta": {SelfAssign: true}}}); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, f, t.TempDir(), nil)
	syncEdge(t, e)
	ctx := context.Background()
	d := newDevice(t, e, "com.x", "1.0.0")

	for _, tc := range []struct {
		channel, key, want string
	}{
		{"beta", "allowSet", "true"},
		{"nope", "error", "channel_not_found"},
		{"secret", "error", "channel_self_set_not_allowed"},
		{"", "error", "missing_channel"},
		{"production", "unset", "true"},
	} {
		code, out, err := d.Channel(ctx, "POST", tc.channel)
		if err != nil || code != 200 || jsonString(out[tc.key]) != tc.want {
			t.Fatalf("setChannel %q: %d %v %v", tc.channel, code, out, err)
		}
	}
	code, out, err := d.Channel(ctx, "PUT", "")
	if err != nil || code != 200 || out["channel"] != "production" || out["status"] != "default" {
		t.Fatalf("getChannel: %d %v %v", code, out, err)
	}
	d.Info.DefaultChannel = "beta" // what v8 sends after a successful setChannel
	code, out, err = d.Channel(ctx, "PUT", "")
	if err != nil || code != 200 || out["channel"] != "beta" || out["status"] != "override" {
		t.Fatalf("getChannel on beta: %d %v %v", code, out, err)
	}
	a, raw, err := d.Check(ctx)
	if err != nil || !a.IsUpdate() || *a.Version != "1.1.0-beta.1" {
		t.Fatalf("check on beta: %v %s", err, raw)
	}
	d.Info.DefaultChannel = "secret" // not self-assignable: the default channel is used
	if a, raw, err = d.Check(ctx); err != nil || !a.IsUpdate() || *a.Version != "1.0.0" {
		t.Fatalf("check naming a closed channel: %v %s", err, raw)
	}

	resp, body := get(t, e.url+"/channel_self?app_id=com.x&device_id=abc&platform=android&is_prod=true&is_emulator=false&plugin_version=8.51.14")
	var list []map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(body, &list) != nil || len(list) != 2 {
		t.Fatalf("listChannels: %d %s", resp.StatusCode, body)
	}
	for _, c := range list {
		if _, ok := c["id"].(float64); !ok {
			t.Fatalf("id is not a number: %s", body)
		}
	}
	if !strings.Contains(string(body), `"name":"beta","public":false,"allow_self_set":true`) {
		t.Fatalf("listChannels: %s", body)
	}
	resp, body = postJSON(t, e.url+"/channel_self", "PUT", withFields(t, androidBody, "app_id", "com.unknown"))
	if resp.StatusCode != 400 || !strings.Contains(string(body), "channel_not_found") {
		t.Fatalf("getChannel of an unknown app: %d %s", resp.StatusCode, body)
	}
}

func jsonString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		if x {
			return "true"
		}
		return "false"
	}
	return ""
}

func zipOf(t *testing.T, files map[string][]byte) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, b := range files {
		w, _ := zw.Create(name)
		w.Write(b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// TestCapgoStatsFeedOriginCounters: with no sink configured, Capgo stats
// go through the edge's event pipeline to the origin's per-release
// counters, like Capstan devices' own events.
func TestCapgoStatsFeedOriginCounters(t *testing.T) {
	f := newFleet(t)
	rec := f.upload(t, "1.0.0", map[string][]byte{"index.html": []byte("v1")})
	e := startEdge(t, f, t.TempDir(), nil)
	syncEdge(t, e)
	ctx := context.Background()
	d := newDevice(t, e, "com.x", "1.0.0")
	if a, raw, err := d.Check(ctx); err != nil || !a.IsUpdate() {
		t.Fatalf("%v: %s", err, raw)
	}
	for _, action := range []string{"download_zip_complete", "set", "download_fail", "checksum_fail", "update_fail", "app_moved_to_foreground"} {
		if code, err := d.Stat(ctx, action, "1.0.0", "builtin"); err != nil || code != 200 {
			t.Fatalf("%s: %d %v", action, code, err)
		}
	}
	if err := e.FlushEvents(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := f.origin.Stats("com.x", "production")
	if err != nil {
		t.Fatal(err)
	}
	var got *wire.ReleaseStats
	for i, r := range rep.Channels[0].Releases {
		if r.Release == rec.ID {
			got = &rep.Channels[0].Releases[i]
		}
	}
	if got == nil || got.Downloads != 1 || got.Installs != 1 || got.Failures != 2 || got.Reverts != 1 || got.Devices != 1 {
		t.Fatalf("origin counters: %+v", rep)
	}
	if rep.Totals.Checks == 0 {
		t.Fatalf("update checks were not counted: %+v", rep.Totals)
	}
}

// TestCapgoTopFolderBundle: a bundle zipped with one top folder installs
// the same way from the manifest as from the zip, which the plugin
// flattens.
func TestCapgoTopFolderBundle(t *testing.T) {
	f := newFleet(t)
	files := map[string][]byte{"www/index.html": []byte("<html>top</html>"), "www/js/app.js": bytes.Repeat([]byte("let a = 1;\n"), 1000)}
	if _, err := f.origin.Upload(context.Background(), &origin.UploadRequest{App: "com.x", Version: "1.0.0", Channel: "production", RolloutBPS: release.FullRollout},
		zipOf(t, files)); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, f, t.TempDir(), nil)
	syncEdge(t, e)
	for _, plugin := range []string{"8.51.14", "5.2.0"} {
		d := newDevice(t, e, "com.x", "1.0.0")
		d.Info.PluginVersion = capgo.Str(plugin)
		res, err := d.Install(context.Background(), checkUntilUpdate(t, d))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := d.Files("1.0.0")
		if len(got) != 2 || got["index.html"] != release.Sum(files["www/index.html"]).String() || got["js/app.js"] == "" {
			t.Fatalf("plugin %s (%s): installed %v", plugin, res.Mode, got)
		}
	}
}

// TestCapgoSkipsCapstanEncryptedReleases: a release encrypted for Capstan
// devices (the origin holds only ciphertext) has no Capgo download; Capgo
// devices are told so once, as a blocked answer, and the edge stops
// asking the origin.
func TestCapgoSkipsCapstanEncryptedReleases(t *testing.T) {
	f := newFleet(t)
	box, err := release.GenerateBoxKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := release.EncodeBoxPublicKey(box.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	f.upload(t, "1.0.0", map[string][]byte{"index.html": []byte("v1")})
	pemKey := string(pub)
	if _, err := f.origin.SetApp("com.x", wire.AppSettings{EncryptKey: &pemKey}); err != nil {
		t.Fatal(err)
	}
	f.upload(t, "1.1.0", map[string][]byte{"index.html": []byte("v1.1 secret")})
	e := startEdge(t, f, t.TempDir(), nil)
	syncEdge(t, e)
	d := newDevice(t, e, "com.x", "1.0.0")
	for i := 0; i < 2; i++ {
		a, raw, err := d.Check(context.Background())
		if err != nil || a.IsUpdate() || *a.Error != capgo.CodeNoBundle || *a.Kind != capgo.KindBlocked {
			t.Fatalf("check %d: %v %s", i, err, raw)
		}
	}
}

// TestCapgoUpdateAnswerCompressed: the plugins' HTTP stacks (OkHttp,
// URLSession) send Accept-Encoding: gzip; an update answer listing files is
// compressed for them and decodes to the same answer.
func TestCapgoUpdateAnswerCompressed(t *testing.T) {
	f := newFleet(t)
	files := map[string][]byte{"index.html": []byte("<html>v1</html>")}
	for i := range 40 {
		files[fmt.Sprintf("assets/chunk-%02d.js", i)] = []byte(fmt.Sprintf("console.log(%d)", i))
	}
	f.upload(t, "1.0.0", files)
	e := startEdge(t, f, t.TempDir(), nil)
	syncEdge(t, e)
	req, _ := http.NewRequest("POST", e.url+"/updates", strings.NewReader(androidBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	a, err := capgotest.DecodeAnswer(raw)
	if err != nil || !a.IsUpdate() || len(a.Manifest) != 41 {
		t.Fatalf("answer: %v %s", err, raw)
	}
}

// TestCapgoRollbackToBuiltin: `capstan rollback --to builtin` sends Capgo
// devices back to the bundle inside the app. Both plugins go back only on
// a success-shaped {"version":"builtin"} (an answer with error or kind is
// a classified non-update to them, issue 17 item 7); plugins before 6.2.0
// cannot, and are told so as a failure.
func TestCapgoRollbackToBuiltin(t *testing.T) {
	f := newFleet(t)
	f.upload(t, "1.0.0", map[string][]byte{"index.html": []byte("v1")})
	e := startEdge(t, f, t.TempDir(), nil)
	syncEdge(t, e)
	ctx := context.Background()
	android := newDevice(t, e, "com.x", "1.0.0")
	ios := newDevice(t, e, "com.x", "1.0.0")
	ios.Info.Platform, ios.Info.DeviceID, ios.Info.VersionOS = "ios", "5B8E3F2A-1C4D-4E6F-8A9B-0C1D2E3F4A5B", "17.4"
	old := newDevice(t, e, "com.x", "1.0.0")
	old.Info.DeviceID, old.Info.PluginVersion = "6c2a9e0b-8d1f-4c5e-9a7b-2f4e6d8c1a3b", "6.1.0"
	for _, d := range []*capgotest.Device{android, ios, old} {
		if _, err := d.Install(ctx, checkUntilUpdate(t, d)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.origin.Rollback("com.x", "production", wire.Builtin); err != nil {
		t.Fatal(err)
	}
	syncEdge(t, e)
	for name, d := range map[string]*capgotest.Device{"android": android, "ios": ios} {
		a, raw, err := d.Check(ctx)
		if err != nil || !a.IsBuiltin() || string(raw) != `{"version":"builtin"}` {
			t.Fatalf("%s on 1.0.0 after rollback --to builtin: %v %s, want {\"version\":\"builtin\"}", name, err, raw)
		}
		if err := d.ResetToBuiltin(a); err != nil {
			t.Fatal(err)
		}
		// Back on builtin, it is up to date.
		a, raw, err = d.Check(ctx)
		if err != nil || a.IsUpdate() || a.IsBuiltin() || *a.Error != capgo.CodeAlreadyOnBuiltin || *a.Kind != capgo.KindUpToDate {
			t.Fatalf("%s on builtin: %v %s", name, err, raw)
		}
	}
	a, raw, err := old.Check(ctx)
	if err != nil || a.IsBuiltin() || *a.Error != capgo.CodeBuiltinTooOld || *a.Kind != capgo.KindFailed {
		t.Fatalf("plugin 6.1.0 after rollback --to builtin: %v %s", err, raw)
	}
}

// TestCapgoDownloadCountsOnce: the plugin reports one download twice —
// download_zip_complete or download_manifest_complete from the download
// worker, then download_complete (issue 17, item 8) — and retries
// batches. One download counts once per device and release, whatever
// mix a plugin version sends; older plugins send download_complete only.
func TestCapgoDownloadCountsOnce(t *testing.T) {
	f := newFleet(t)
	rec := f.upload(t, "1.0.0", map[string][]byte{"index.html": []byte("v1")})
	e := startEdge(t, f, t.TempDir(), nil)
	syncEdge(t, e)
	ctx := context.Background()
	v8 := newDevice(t, e, "com.x", "1.0.0")
	v7 := newDevice(t, e, "com.x", "1.0.0")
	v7.Info.DeviceID, v7.Info.PluginVersion = "7c2a9e0b-8d1f-4c5e-9a7b-2f4e6d8c1a3b", "7.0.35"
	stat := func(d *capgotest.Device, action string) {
		t.Helper()
		if code, err := d.Stat(ctx, action, "1.0.0", "builtin"); err != nil || code != 200 {
			t.Fatalf("%s: %d %v", action, code, err)
		}
	}
	// v8, zip then manifest download of the same release, each reported
	// both ways, and a retried batch.
	info, _ := json.Marshal(v8.Info)
	if resp, raw := postJSON(t, e.url+"/stats", "POST", withFields(t, string(info), "action", "download_zip_complete", "version_name", "1.0.0")); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, raw)
	}
	for range 2 {
		stat(v8, "download_complete")
		stat(v8, "download_manifest_complete")
	}
	stat(v8, "set")
	stat(v7, "download_complete")
	stat(v7, "set")
	if err := e.FlushEvents(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := f.origin.Stats("com.x", "production")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rep.Channels[0].Releases {
		if r.Release == rec.ID {
			found = true
			if r.Downloads != 2 || r.Installs != 2 {
				t.Fatalf("1.0.0: %d downloads and %d installs by 2 devices, want 2 and 2", r.Downloads, r.Installs)
			}
		}
	}
	if !found {
		t.Fatalf("no counters for 1.0.0: %+v", rep)
	}
}
