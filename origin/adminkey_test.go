package origin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/wire"
)

// adminKeyA and adminKeyB are CAPSTAN_ADMIN_KEY values of 32 hex digits, as
// `openssl rand -hex 16` makes them.
const (
	adminKeyA = "6f1c0a9d2b7e4c3a8d5f0e1b2c3d4e5f"
	adminKeyB = "a0b1c2d3e4f5061728394a5b6c7d8e9f"
)

// openWith opens the origin data folder dir with CAPSTAN_ADMIN_KEY = key.
func openWith(t *testing.T, dir, key string) (*Server, error) {
	t.Helper()
	cfg := DefaultConfig(dir)
	cfg.AdminKey = key
	return New(cfg)
}

// whoAmI lists the API keys with secret and returns the HTTP status.
func whoAmI(o *Server, secret string) (int, string) {
	r := httptest.NewRequest("GET", "/v1/keys", nil)
	if secret != "" {
		r.Header.Set("Authorization", "Bearer "+secret)
	}
	w := httptest.NewRecorder()
	o.Handler().ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

// TestAdminKeyOnExistingFolder is the README's first hour: `make dev` made
// the data folder with a generated key, then the README starts the same
// folder with CAPSTAN_ADMIN_KEY set. That key must work (it is added as an
// admin key; the generated one stays valid), and a revoked key must not
// come back from a stale environment.
func TestAdminKeyOnExistingFolder(t *testing.T) {
	dir := t.TempDir()
	o, err := openWith(t, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	generated := o.AdminKeyStart().Generated
	o.Close()
	if generated == "" {
		t.Fatal("no admin key generated for an empty folder")
	}

	o, err = openWith(t, dir, adminKeyA)
	if err != nil {
		t.Fatal(err)
	}
	st := o.AdminKeyStart()
	if !st.Added || st.Generated != "" || st.Others != 1 || st.ID == "" {
		t.Fatalf("CAPSTAN_ADMIN_KEY on a folder that has a key: %+v, want added beside 1 other", st)
	}
	for _, k := range []string{adminKeyA, generated} {
		if code, body := whoAmI(o, k); code != http.StatusOK {
			t.Fatalf("admin key %.8s…: %d %s", k, code, body)
		}
	}
	idA := st.ID
	o.Close()

	// The same key again is known, not added twice.
	o, err = openWith(t, dir, adminKeyA)
	if err != nil {
		t.Fatal(err)
	}
	if st := o.AdminKeyStart(); st.Added || st.ID != idA {
		t.Fatalf("second start with the same key: %+v, want known key %s", st, idA)
	}
	if keys, _ := o.Keys(); len(keys) != 2 {
		t.Fatalf("%d keys after two starts with one CAPSTAN_ADMIN_KEY, want 2", len(keys))
	}
	// The generated key revokes the environment's one.
	if err := o.RevokeKey(idA, "admin"); err != nil {
		t.Fatal(err)
	}
	o.Close()

	_, err = openWith(t, dir, adminKeyA)
	if err == nil || !strings.Contains(err.Error(), "revoked") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("start with a revoked CAPSTAN_ADMIN_KEY: %v, want a refusal naming the folder", err)
	}
	// Recovery from a lost key: a new secret is added.
	o, err = openWith(t, dir, adminKeyB)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if code, body := whoAmI(o, adminKeyB); code != http.StatusOK {
		t.Fatalf("new admin key after revocation: %d %s", code, body)
	}
	if code, _ := whoAmI(o, adminKeyA); code != http.StatusUnauthorized {
		t.Fatalf("revoked key answered %d", code)
	}
}

// TestAdminKeyMustBeAdmin: a publisher's secret given as CAPSTAN_ADMIN_KEY
// is refused at start rather than silently left a publisher.
func TestAdminKeyMustBeAdmin(t *testing.T) {
	dir := t.TempDir()
	o, err := openWith(t, dir, adminKeyA)
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := o.CreateKey(wire.CreateKeyBody{Role: wire.RolePublisher, Apps: []string{"com.example.app"}})
	o.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openWith(t, dir, secret); err == nil || !strings.Contains(err.Error(), "publisher") {
		t.Fatalf("publisher secret as CAPSTAN_ADMIN_KEY: %v", err)
	}
}

// TestUnauthenticatedSaysWhich: a 401 for a key that was sent must not
// tell the user to set the key they did set.
func TestUnauthenticatedSaysWhich(t *testing.T) {
	o, _ := newTestOrigin(t)
	for _, tc := range []struct{ secret, want, not string }{
		{"", "no API key was sent", ""},
		{"cap_not-a-key", "does not know the API key", "set CAPSTAN_API_KEY"},
	} {
		code, body := whoAmI(o, tc.secret)
		var e struct{ Error string }
		json.Unmarshal([]byte(body), &e)
		if code != http.StatusUnauthorized || !strings.Contains(e.Error, tc.want) || tc.not != "" && strings.Contains(e.Error, tc.not) {
			t.Errorf("key %q: %d %q, want 401 saying %q", tc.secret, code, e.Error, tc.want)
		}
	}
}

// TestKeyWithoutExpiryShowsNone: a key that never expires was shown with
// "expires":"0001-01-01T00:00:00Z".
func TestKeyWithoutExpiryShowsNone(t *testing.T) {
	o, _ := newTestOrigin(t)
	r := httptest.NewRequest("POST", "/v1/keys", strings.NewReader(`{"role":"reader"}`))
	r.Header.Set("Authorization", "Bearer "+testAdminKey)
	w := httptest.NewRecorder()
	o.Handler().ServeHTTP(w, r)
	if w.Code != http.StatusCreated || strings.Contains(w.Body.String(), "0001-01-01") || strings.Contains(w.Body.String(), `"expires"`) {
		t.Fatalf("%d %s", w.Code, w.Body.String())
	}
	if code, body := whoAmI(o, testAdminKey); code != http.StatusOK || strings.Contains(body, "0001-01-01") {
		t.Fatalf("keys list: %d %s", code, body)
	}
}
