package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/internal/testutil"
)

// runAs runs a client command with a given API key and reports stdout,
// stderr and whether it succeeded.
func runAs(t *testing.T, server, apiKey string, args ...string) (string, string, bool) {
	t.Helper()
	cmd := exec.Command(testutil.Binary(t), args...)
	cmd.Env = append(os.Environ(), "CAPSTAN_SERVER="+server, "CAPSTAN_API_KEY="+apiKey)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err == nil
}

// TestTrustThroughTheBinary drives the trust features as an operator and a
// CI pipeline would: keys, app policy, API keys, signed and encrypted
// uploads, a device that verifies, a release-key rotation and an origin-key
// rotation, all through `capstan` commands.
func TestTrustThroughTheBinary(t *testing.T) {
	data := t.TempDir()
	_, api, edgeURL := startDev(t, data)
	k := t.TempDir()
	key := func(name string) string { return filepath.Join(k, name) }
	runCLI(t, api, true, "keys", "gen", "--out", key("rel.key"))
	runCLI(t, api, true, "keys", "gen", "--encryption", "--out", key("box.key"))
	runCLI(t, api, true, "app", "set", "--app", "com.trust", "--release-key", key("rel.key.pub"), "--require-signing", "--encrypt-key", key("box.key.pub"))

	var created struct {
		Key string `json:"key"`
		ID  string `json:"id"`
	}
	out := runCLI(t, api, true, "keys", "create", "--role", "publisher", "--app", "com.trust", "--name", "ci", "--expires", "30d", "--json")
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Key == "" {
		t.Fatalf("keys create: %q %v", out, err)
	}
	www := filepath.Join(t.TempDir(), "www")
	os.MkdirAll(filepath.Join(www, "js"), 0o755)
	files := map[string][]byte{"index.html": []byte("<h1>trust v1</h1>"), "js/app.js": []byte("console.log('v1')")}
	for p, b := range files {
		os.WriteFile(filepath.Join(www, p), b, 0o644)
	}
	// CI with its publisher key: unsigned refused, signed accepted.
	if _, stderr, ok := runAs(t, api, created.Key, "upload", "--app", "com.trust", "--version", "1.0.0", "--channel", "production", www); ok || !strings.Contains(stderr, "only releases one of them signed") {
		t.Fatalf("unsigned upload: ok=%v %s", ok, stderr)
	}
	if _, stderr, ok := runAs(t, api, created.Key, "upload", "--app", "com.trust", "--version", "1.0.0", "--channel", "production", "--sign-key", key("rel.key"), www); !ok {
		t.Fatalf("signed upload: %s", stderr)
	}
	// The publisher key cannot change trust settings or make keys.
	if _, stderr, ok := runAs(t, api, created.Key, "app", "set", "--app", "com.trust", "--no-require-signing"); ok || !strings.Contains(stderr, "403") {
		t.Fatalf("publisher changed trust settings: ok=%v %s", ok, stderr)
	}
	if _, _, ok := runAs(t, api, created.Key, "keys", "create", "--role", "admin"); ok {
		t.Fatal("publisher created an admin key")
	}

	trust := filepath.Join(k, "trust.pem")
	rel, _ := os.ReadFile(key("rel.key.pub"))
	org, err := os.ReadFile(filepath.Join(data, "origin", "origin.key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(trust, append(rel, org...), 0o644)
	phone := t.TempDir()
	devArgs := []string{"device", "--edge", edgeURL, "--app", "com.trust", "--channel", "production", "--dir", phone,
		"--public-key", trust, "--decrypt-key", key("box.key"), "--json"}
	var res deviceJSON
	json.Unmarshal([]byte(runCLI(t, "", true, devArgs...)), &res)
	if res.Status != "updated" || res.To != "1.0.0" {
		t.Fatalf("device: %+v", res)
	}
	assertTreeEquals(t, filepath.Join(phone, "current"), files)

	// Rotate the release key; the device follows with only the old key.
	runCLI(t, api, true, "keys", "gen", "--out", key("rel2.key"))
	runCLI(t, api, true, "keys", "rotate", "--old", key("rel.key"), "--new", key("rel2.key.pub"), "--app", "com.trust", "--publish")
	files["index.html"] = []byte("<h1>trust v2</h1>")
	os.WriteFile(filepath.Join(www, "index.html"), files["index.html"], 0o644)
	if _, stderr, ok := runAs(t, api, created.Key, "upload", "--app", "com.trust", "--version", "1.1.0", "--channel", "production", "--sign-key", key("rel.key"), www); ok {
		t.Fatal("upload signed with the retired key accepted")
	} else if !strings.Contains(stderr, "does not verify") {
		t.Fatalf("retired key refusal: %s", stderr)
	}
	if _, stderr, ok := runAs(t, api, created.Key, "upload", "--app", "com.trust", "--version", "1.1.0", "--channel", "production", "--sign-key", key("rel2.key"), www); !ok {
		t.Fatalf("upload signed with the new key: %s", stderr)
	}
	json.Unmarshal([]byte(runCLI(t, "", true, devArgs...)), &res)
	if res.Status != "updated" || res.To != "1.1.0" {
		t.Fatalf("device after release key rotation: %+v", res)
	}
	assertTreeEquals(t, filepath.Join(phone, "current"), files)

	// Rotate the origin key through the admin API; the device follows.
	if _, stderr, ok := runAs(t, api, created.Key, "keys", "rotate", "--origin"); ok || !strings.Contains(stderr, "403") {
		t.Fatalf("publisher rotated the origin key: ok=%v %s", ok, stderr)
	}
	runCLI(t, api, true, "keys", "rotate", "--origin")
	json.Unmarshal([]byte(runCLI(t, "", true, devArgs...)), &res)
	if res.Status != "up-to-date" {
		t.Fatalf("device after origin key rotation: %+v", res)
	}

	// Revoke the CI key: it stops working at once.
	if !strings.Contains(runCLI(t, api, true, "keys", "list"), created.ID) {
		t.Fatal("keys list does not show the CI key")
	}
	runCLI(t, api, true, "keys", "revoke", created.ID)
	if _, stderr, ok := runAs(t, api, created.Key, "upload", "--app", "com.trust", "--version", "1.2.0", "--sign-key", key("rel2.key"), www); ok || !strings.Contains(stderr, "401") {
		t.Fatalf("revoked key: ok=%v %s", ok, stderr)
	}
}
