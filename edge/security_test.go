package edge_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/release"
)

// provenFleet is an origin that knows its public URL (so it signs an
// origin statement), behind a proxy the test can make tamper (fleet.tamper).
type provenFleet struct {
	*fleet
}

func newProvenFleet(t *testing.T) *provenFleet {
	t.Helper()
	return &provenFleet{fleet: newFleet(t)}
}

func (f *provenFleet) keys() []release.PublicKey {
	return []release.PublicKey{{Key: f.origin.PublicKey(), Role: release.RoleOrigin}}
}

// rogueOrigin is a gossip member that says it is an origin: it counts the
// events and patch requests it gets and answers every patch with garbage.
type rogueOrigin struct {
	srv     *httptest.Server
	events  atomic.Int64
	patches atomic.Int64
}

func newRogue(t *testing.T, statement func(url string) []byte) *rogueOrigin {
	t.Helper()
	r := &rogueOrigin{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.URL.Path == "/v1/origin/statement":
			if b := statement(r.srv.URL); b != nil {
				w.Write(b)
				return
			}
			http.NotFound(w, req)
		case req.URL.Path == "/v1/events":
			r.events.Add(1)
			io.WriteString(w, `{"accepted":1}`)
		case strings.HasPrefix(req.URL.Path, "/v1/patches/"):
			r.patches.Add(1)
			garbage := []byte("garbage patch")
			w.Header().Set("ETag", `"`+release.Sum(garbage).String()+`"`)
			w.Write(garbage)
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// TestAnnouncedOriginsMustProveTheirRole is finding 1 of issue 16 at the
// edge: gossip members that announce role "origin" with their own URL —
// one replaying the real origin's statement, one signing its own, one with
// none — get no device events (which carry the events token) and serve the
// edge no patch; the real origin, whose statement verifies, gets both.
func TestAnnouncedOriginsMustProveTheirRole(t *testing.T) {
	f := newProvenFleet(t)
	v1 := f.upload(t, "1.0.0", map[string][]byte{"index.html": []byte("v1"), "app.js": randomBytes(4000)})
	v2 := f.upload(t, "1.0.1", map[string][]byte{"index.html": []byte("v2"), "app.js": randomBytes(4000)})

	resp, real := get(t, f.originURL+"/v1/origin/statement")
	if resp.StatusCode != 200 {
		t.Fatalf("origin statement: %d %s", resp.StatusCode, real)
	}
	own, _ := release.GenerateKey()
	replay := newRogue(t, func(string) []byte { return real })
	selfSigned := newRogue(t, func(url string) []byte {
		b, _ := (&release.Origin{URL: url, Issued: time.Now(), Expires: time.Now().Add(time.Hour)}).Encode()
		out, _ := json.Marshal(release.Seal(b, own))
		return out
	})
	silent := newRogue(t, func(string) []byte { return nil })
	rogues := []*rogueOrigin{replay, selfSigned, silent}

	e := startEdge(t, f.fleet, t.TempDir(), func(c *edge.Config) {
		c.Origins = nil
		c.OriginKeys = f.keys()
		c.ClusterOrigins = func() []string {
			return []string{replay.srv.URL, selfSigned.srv.URL, silent.srv.URL, f.originURL}
		}
	})
	if err := e.SyncFromOrigin(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, e.url+"/v1/patches/"+v1.ID.String()+"/"+v2.ID.String())
	if resp.StatusCode != 200 || resp.Header.Get("ETag") == `"`+release.Sum([]byte("garbage patch")).String()+`"` {
		t.Fatalf("patch through the edge: %d %q", resp.StatusCode, body)
	}
	ev := fmt.Sprintf(`[{"action":"fail","app":"com.x","channel":"production","device":"d1","release":%q,"cause":"install"}]`, v2.ID)
	if r, err := http.Post(e.url+"/v1/events", "application/json", strings.NewReader(ev)); err != nil || r.StatusCode != 200 {
		t.Fatalf("post event: %v %v", err, r)
	}
	if err := e.FlushEvents(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := f.origin.Stats("com.x", "production")
	if err != nil || st.Totals.Failures != 1 {
		t.Fatalf("the real origin did not get the event: %+v %v", st, err)
	}
	for i, r := range rogues {
		if n, p := r.events.Load(), r.patches.Load(); n != 0 || p != 0 {
			t.Errorf("rogue %d got %d event batches and %d patch requests", i, n, p)
		}
	}
}

// TestEdgeVerifiesWhatItCaches is the tampering-origin finding of issue
// 16: whatever an origin URL answers (a hijacked address, a proxy), an
// edge caches a blob only if it hashes to its name and a patch only if it
// hashes to what the origin key signed for that pair; refused answers are
// a 503 (the device moves on) and leave nothing behind.
func TestEdgeVerifiesWhatItCaches(t *testing.T) {
	f := newProvenFleet(t)
	v1 := f.upload(t, "1.0.0", map[string][]byte{"index.html": []byte("v1"), "app.js": randomBytes(4000)})
	v2 := f.upload(t, "1.0.1", map[string][]byte{"index.html": []byte("v2"), "app.js": randomBytes(4000)})
	e := startEdge(t, f.fleet, t.TempDir(), func(c *edge.Config) { c.OriginKeys = f.keys() })
	patchPath := "/v1/patches/" + v1.ID.String() + "/" + v2.ID.String()
	fullPath := "/v1/patches/" + release.Hash{}.String() + "/" + v2.ID.String()
	_, wantPatch := get(t, f.originURL+patchPath)
	resp, _ := get(t, f.originURL+fullPath)
	otherStatement := resp.Header.Get(release.DerivedHeader)
	blob := release.Sum([]byte("v2"))

	garbage := []byte("garbage, the same length as nothing in particular")
	cases := map[string]func(w http.ResponseWriter, r *http.Request) bool{
		"garbage patch with its own ETag, real statement dropped": func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != patchPath {
				return false
			}
			w.Header().Set("ETag", `"`+release.Sum(garbage).String()+`"`)
			w.Write(garbage)
			return true
		},
		"garbage patch under the real statement": func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != patchPath {
				return false
			}
			rec := httptest.NewRecorder()
			f.origin.Handler().ServeHTTP(rec, r)
			w.Header().Set(release.DerivedHeader, rec.Header().Get(release.DerivedHeader))
			body := append([]byte(nil), rec.Body.Bytes()...)
			body[len(body)/2] ^= 1
			w.Header().Set("ETag", `"`+release.Sum(body).String()+`"`)
			w.Write(body)
			return true
		},
		"the statement of another pair": func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != patchPath {
				return false
			}
			w.Header().Set(release.DerivedHeader, otherStatement)
			w.Write(garbage)
			return true
		},
		"a statement signed by another key": func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != patchPath {
				return false
			}
			k, _ := release.GenerateKey()
			b, _ := (&release.Derived{Path: patchPath, SHA256: release.Sum(garbage), Size: int64(len(garbage))}).Encode()
			env, _ := json.Marshal(release.Seal(b, k))
			w.Header().Set(release.DerivedHeader, base64.StdEncoding.EncodeToString(env))
			w.Write(garbage)
			return true
		},
		"a blob that does not hash to its name": func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/v1/blobs/"+blob.String() {
				return false
			}
			w.Header().Set("Content-Length", "2")
			w.Write([]byte("v3"))
			return true
		},
	}
	for name, tamper := range cases {
		f.tamper.Store(&tamper)
		path := patchPath
		if strings.Contains(name, "blob") {
			path = "/v1/blobs/" + blob.String()
		}
		resp, body := get(t, e.url+path)
		if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: edge answered %d %q, want 503 or 502", name, resp.StatusCode, body)
		}
	}
	f.tamper.Store(nil)
	resp, body := get(t, e.url+patchPath)
	if resp.StatusCode != 200 || string(body) != string(wantPatch) {
		t.Fatalf("after the tampering stopped: %d, %d bytes (want %d)", resp.StatusCode, len(body), len(wantPatch))
	}
	resp, body = get(t, e.url+"/v1/blobs/"+blob.String())
	if resp.StatusCode != 200 || string(body) != "v2" {
		t.Fatalf("blob after the tampering stopped: %d %q", resp.StatusCode, body)
	}
}
