package origin

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/bundle"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const trustAdminKey = "admin-secret"

func newTestServer(t *testing.T, now func() time.Time) (*Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	cfg := DefaultConfig(t.TempDir())
	cfg.AdminKey = trustAdminKey
	cfg.PublicURL = "http://origin.test:7070"
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.Now = now
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logs
}

func testZip(t *testing.T, files map[string]string) []byte {
	t.Helper()
	dir := t.TempDir()
	for p, body := range files {
		fp := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(fp), 0o755)
		if err := os.WriteFile(fp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.ZipDir(dir, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mustUpload(t *testing.T, s *Server, app, version string) *release.Record {
	t.Helper()
	z := testZip(t, map[string]string{"index.html": app + version})
	rec, err := s.Upload(context.Background(), &UploadRequest{App: app, Version: version, Channel: "production", RolloutBPS: release.FullRollout}, bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func mustKey(t *testing.T, s *Server, role wire.Role, apps ...string) (wire.APIKey, string) {
	t.Helper()
	k, secret, err := s.CreateKey(wire.CreateKeyBody{Role: role, Apps: apps})
	if err != nil {
		t.Fatal(err)
	}
	return k, secret
}

// TestAuthzMatrix calls every origin endpoint with every kind of caller and
// asserts that exactly the allowed cells succeed, and that every refusal
// of a presented key is logged.
func TestAuthzMatrix(t *testing.T) {
	s, logs := newTestServer(t, nil)
	h := s.Handler()
	a1 := mustUpload(t, s, "appA", "1.0.0")
	mustUpload(t, s, "appA", "1.1.0")
	mustUpload(t, s, "appB", "1.0.0")
	zb := testZip(t, map[string]string{"index.html": "beta"})
	if _, err := s.Upload(context.Background(), &UploadRequest{App: "appA", Version: "1.2.0", Channel: "beta", RolloutBPS: release.FullRollout, NewChannel: true}, bytes.NewReader(zb)); err != nil {
		t.Fatal(err)
	}
	relKey, _ := release.GenerateKey()
	relPEM, _ := release.EncodePublicKey(relKey.Public().(ed25519.PublicKey), release.RoleRelease)
	// Unsigned uploads stay allowed: the matrix tests roles, not signing.
	allowUnsigned := false
	if _, err := s.SetApp("appA", wire.AppSettings{AddReleaseKeys: []string{string(relPEM)}, RequireSigning: &allowUnsigned}); err != nil {
		t.Fatal(err)
	}
	m, _ := s.manifestOf(a1)
	blob := m.Files[0].SHA256

	_, pubA := mustKey(t, s, wire.RolePublisher, "appA")
	_, pubB := mustKey(t, s, wire.RolePublisher, "appB")
	_, reader := mustKey(t, s, wire.RoleReader)
	callers := []struct{ name, secret string }{
		{"admin", trustAdminKey}, {"publisherA", pubA}, {"publisherB", pubB}, {"reader", reader}, {"none", ""},
	}

	// Who may call: "public", or the callers allowed.
	all := []string{"admin", "publisherA", "publisherB", "reader", "none"}
	keyed := []string{"admin", "publisherA", "publisherB", "reader"}
	readA := []string{"admin", "publisherA", "reader"}
	writeA := []string{"admin", "publisherA"}
	admin := []string{"admin"}

	version := 10
	relKeyCur := relKey
	type endpoint struct {
		pattern string // as registered on the mux
		allowed []string
		req     func(t *testing.T) *http.Request
	}
	get := func(path string) func(*testing.T) *http.Request {
		return func(*testing.T) *http.Request { return httptest.NewRequest("GET", path, nil) }
	}
	jsonReq := func(method, path string, body any) func(*testing.T) *http.Request {
		return func(*testing.T) *http.Request {
			b, _ := json.Marshal(body)
			return httptest.NewRequest(method, path, bytes.NewReader(b))
		}
	}
	endpoints := []endpoint{
		{"GET /healthz", all, get("/healthz")},
		{"GET /metrics", all, get("/metrics")},
		{"GET /v1/state", all, get("/v1/state")},
		{"GET /v1/releases/{id}", all, get("/v1/releases/" + a1.ID.String())},
		{"GET /v1/blobs/{hash}", all, get("/v1/blobs/" + blob.String())},
		{"GET /v1/keys/origin", all, get("/v1/keys/origin")},
		{"GET /v1/patches/{base}/{target}", all, get("/v1/patches/" + release.ZeroHash.String() + "/" + a1.ID.String())},
		{"GET /v1/keys/rotations", all, get("/v1/keys/rotations")},
		// What an edge asks a member announcing itself as an origin.
		{"GET /v1/origin/statement", all, get("/v1/origin/statement")},
		// What edges fetch for Capgo devices: public like blobs and state.
		{"GET /v1/capgo/apps/{app}", all, get("/v1/capgo/apps/appA")},
		{"GET /v1/capgo/releases/{id}", all, get("/v1/capgo/releases/" + a1.ID.String())},
		{"GET /v1/capgo/zips/{id}", all, get("/v1/capgo/zips/" + a1.ID.String())},
		{"GET /v1/capgo/br/{hash}", all, get("/v1/capgo/br/" + blob.String())},
		{"GET /v1/apps/{app}/capgo", readA, get("/v1/apps/appA/capgo")},
		{"PUT /v1/apps/{app}/capgo", writeA, jsonReq("PUT", "/v1/apps/appA/capgo", map[string]any{"default_channel": "production"})},
		{"GET /v1/apps", keyed, get("/v1/apps")},
		{"GET /v1/apps/{app}", readA, get("/v1/apps/appA")},
		{"PUT /v1/apps/{app}", admin, jsonReq("PUT", "/v1/apps/appA", wire.AppSettings{})},
		{"POST /v1/apps/{app}/releases", writeA, func(t *testing.T) *http.Request {
			version++
			z := testZip(t, map[string]string{"index.html": fmt.Sprint(version)})
			return httptest.NewRequest("POST", fmt.Sprintf("/v1/apps/appA/releases?version=2.0.%d", version), bytes.NewReader(z))
		}},
		{"GET /v1/apps/{app}/releases", readA, get("/v1/apps/appA/releases")},
		{"GET /v1/apps/{app}/releases/{version}", readA, get("/v1/apps/appA/releases/1.0.0")},
		{"GET /v1/apps/{app}/channels", readA, get("/v1/apps/appA/channels")},
		{"PUT /v1/apps/{app}/channels/{channel}", writeA, jsonReq("PUT", "/v1/apps/appA/channels/production", wire.SetChannelBody{Version: "1.0.0"})},
		{"POST /v1/apps/{app}/channels/{channel}/rollback", writeA, jsonReq("POST", "/v1/apps/appA/channels/production/rollback", wire.RollbackBody{To: "1.1.0"})},
		{"POST /v1/apps/{app}/channels/{channel}/promote", writeA, jsonReq("POST", "/v1/apps/appA/channels/production/promote", wire.PromoteBody{From: "beta"})},
		{"PUT /v1/apps/{app}/channels/{channel}/policy", writeA, jsonReq("PUT", "/v1/apps/appA/channels/production/policy", wire.ChannelPolicy{})},
		{"GET /v1/apps/{app}/stats", readA, get("/v1/apps/appA/stats")},
		// Events come from edges and are authenticated by the cluster's
		// events token, not by API keys; with no token configured they are
		// open (see TestEventsNeedClusterToken).
		{"POST /v1/events", all, func(*testing.T) *http.Request {
			return httptest.NewRequest("POST", "/v1/events", strings.NewReader("[]"))
		}},
		{"POST /v1/keys", admin, jsonReq("POST", "/v1/keys", wire.CreateKeyBody{Role: wire.RoleReader})},
		{"GET /v1/keys", admin, get("/v1/keys")},
		{"GET /v1/audit", admin, get("/v1/audit")},
		{"DELETE /v1/keys/{id}", admin, func(t *testing.T) *http.Request {
			k, _ := mustKey(t, s, wire.RoleReader)
			return httptest.NewRequest("DELETE", "/v1/keys/"+k.ID, nil)
		}},
		{"POST /v1/keys/rotations", writeA, func(t *testing.T) *http.Request {
			next, _ := release.GenerateKey()
			env, err := release.NewRotation(release.RoleRelease, "appA", relKeyCur, next.Public().(ed25519.PublicKey), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(env)
			// The rotation takes effect only if allowed; the next cell
			// rotates from whichever key is current.
			r := httptest.NewRequest("POST", "/v1/keys/rotations", bytes.NewReader(b))
			r = r.WithContext(context.WithValue(r.Context(), nextKeyCtx{}, next))
			return r
		}},
		// The console page is static and holds no data; what it shows
		// comes from the API below, under the callers' roles.
		{"GET /console", all, get("/console")},
		{"GET /console/{file...}", all, get("/console/app.js")},
		{"GET /v1/whoami", keyed, get("/v1/whoami")},
		{"GET /v1/fleet", keyed, get("/v1/fleet")},
		// Edge reports are authenticated like events (cluster token).
		{"POST /v1/edges/report", all, func(*testing.T) *http.Request {
			return httptest.NewRequest("POST", "/v1/edges/report", strings.NewReader(`{"name":"http://127.0.0.1:7080","url":"http://127.0.0.1:7080","status":"ok"}`))
		}},
		{"GET /v1/apps/{app}/release-details", readA, get("/v1/apps/appA/release-details")},
		{"GET /v1/apps/{app}/channel-details", readA, get("/v1/apps/appA/channel-details")},
		{"GET /v1/apps/{app}/channels/{channel}/policy", readA, get("/v1/apps/appA/channels/production/policy")},
		{"GET /v1/apps/{app}/channels/{channel}/timeline", readA, get("/v1/apps/appA/channels/production/timeline")},
		{"POST /v1/gc", admin, jsonReq("POST", "/v1/gc", wire.GCBody{DryRun: true})},
		{"POST /v1/keys/origin/rotate", admin, func(*testing.T) *http.Request { return httptest.NewRequest("POST", "/v1/keys/origin/rotate", nil) }},
	}
	covered := map[string]bool{}
	for _, ep := range endpoints {
		covered[ep.pattern] = true
	}
	for _, p := range registeredRoutes(t) {
		if !covered[p] {
			t.Errorf("endpoint %q is not in the authorization matrix: add it with the callers allowed", p)
		}
	}
	for _, ep := range endpoints {
		for _, c := range callers {
			t.Run(ep.pattern+"/"+c.name, func(t *testing.T) {
				r := ep.req(t)
				if c.secret != "" {
					r.Header.Set("Authorization", "Bearer "+c.secret)
				}
				before := strings.Count(logs.String(), "api refused")
				writesBefore := strings.Count(logs.String(), "msg=\"api write\"")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				allowed := false
				for _, a := range ep.allowed {
					allowed = allowed || a == c.name
				}
				ok := w.Code >= 200 && w.Code < 300
				if ok != allowed {
					t.Fatalf("%s %s as %s: %d %s (allowed: %v)", r.Method, r.URL, c.name, w.Code, strings.TrimSpace(w.Body.String()), allowed)
				}
				if !allowed && w.Code != http.StatusUnauthorized && w.Code != http.StatusForbidden {
					t.Fatalf("refusal with %d, want 401 or 403", w.Code)
				}
				if !allowed && c.secret != "" && strings.Count(logs.String(), "api refused") == before {
					t.Fatalf("refusal of %s was not logged", c.name)
				}
				isWrite := !slices.Contains(ep.allowed, "reader") && !slices.Contains(ep.allowed, "none")
				if ok && isWrite && strings.Count(logs.String(), "msg=\"api write\"") == writesBefore {
					t.Fatalf("write by %s left no audit log line", c.name)
				}
				if ok {
					if next, found := r.Context().Value(nextKeyCtx{}).(ed25519.PrivateKey); found {
						relKeyCur = next
					}
				}
			})
		}
	}
	// A scoped listing shows only the caller's apps.
	r := httptest.NewRequest("GET", "/v1/apps", nil)
	r.Header.Set("Authorization", "Bearer "+pubB)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if strings.Contains(w.Body.String(), "appA") || !strings.Contains(w.Body.String(), "appB") {
		t.Fatalf("publisher B sees %s", w.Body.String())
	}
}

type nextKeyCtx struct{}

// TestEventsNeedClusterToken: with an events token configured, no API key
// (not even an admin's) can post device events in its place.
func TestEventsNeedClusterToken(t *testing.T) {
	cfg := DefaultConfig(t.TempDir())
	cfg.AdminKey = trustAdminKey
	cfg.EventsToken = "cluster-events-token"
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct {
		bearer string
		want   int
	}{{"", 401}, {trustAdminKey, 401}, {"cluster-events-token", 200}} {
		for path, body := range map[string]string{"/v1/events": "[]", "/v1/edges/report": `{"name":"e1","status":"ok"}`} {
			r := httptest.NewRequest("POST", path, strings.NewReader(body))
			if tc.bearer != "" {
				r.Header.Set("Authorization", "Bearer "+tc.bearer)
			}
			w := httptest.NewRecorder()
			s.Handler().ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("%s with bearer %q: %d, want %d", path, tc.bearer, w.Code, tc.want)
			}
		}
	}
}

// registeredRoutes lists every pattern the origin's mux registers, read
// from the package's source, so a new endpoint cannot miss the matrix.
func registeredRoutes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`mux\.Handle(?:Func)?\("([A-Z]+ [^"]+)"`)
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			out = append(out, m[1])
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d routes: the source scan is broken", len(out))
	}
	return out
}

func TestAPIKeyLifecycle(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, _ := newTestServer(t, clock)
	h := s.Handler()
	call := func(secret, method, path string) int {
		r := httptest.NewRequest(method, path, nil)
		r.Header.Set("Authorization", "Bearer "+secret)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	k, secret, err := s.CreateKey(wire.CreateKeyBody{Role: wire.RoleReader, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(secret, k.ID) {
		t.Fatal("the key id reveals part of the secret")
	}
	if c := call(secret, "GET", "/v1/apps"); c != 200 {
		t.Fatalf("fresh key: %d", c)
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	if c := call(secret, "GET", "/v1/apps"); c != 401 {
		t.Fatalf("expired key: %d", c)
	}
	k2, secret2, _ := s.CreateKey(wire.CreateKeyBody{Role: wire.RoleReader})
	if c := call(trustAdminKey, "DELETE", "/v1/keys/"+k2.ID); c != 200 {
		t.Fatalf("revoke: %d", c)
	}
	if c := call(secret2, "GET", "/v1/apps"); c != 401 {
		t.Fatalf("revoked key: %d", c)
	}
	if c := call(trustAdminKey, "DELETE", "/v1/keys/admin"); c != 400 {
		t.Fatalf("self-revoke: %d", c)
	}
	keys, _ := s.Keys()
	for _, k := range keys {
		if k.Hash != "" {
			t.Fatal("listing shows key hashes")
		}
	}
	for _, bad := range []wire.CreateKeyBody{
		{Role: "root"},
		{Role: wire.RolePublisher},
		{Role: wire.RoleAdmin, Apps: []string{"a"}},
		{Role: wire.RoleReader, Apps: []string{"../x"}},
		{Role: wire.RoleReader, Expires: now.Add(-time.Hour)},
	} {
		if _, _, err := s.CreateKey(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
