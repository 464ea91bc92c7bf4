package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/testutil"
)

const e2eAdminKey = "e2e-admin-key-0123456789abcdef0123456789"

// runCLI runs a client command against an origin and returns stdout.
func runCLI(t *testing.T, server string, wantOK bool, args ...string) string {
	t.Helper()
	cmd := exec.Command(testutil.Binary(t), args...)
	cmd.Env = append(os.Environ(), "CAPSTAN_SERVER="+server, "CAPSTAN_API_KEY="+e2eAdminKey)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if wantOK && err != nil {
		t.Fatalf("capstan %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	if !wantOK && err == nil {
		t.Fatalf("capstan %s succeeded, want failure\nstdout: %s", strings.Join(args, " "), stdout.String())
	}
	if !wantOK && strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
		t.Errorf("failure reason should be one line, got:\n%s", stderr.String())
	}
	return stdout.String()
}

func startDev(t *testing.T, data string) (*testutil.Proc, string, string) {
	t.Helper()
	p := testutil.Start(t, []string{"CAPSTAN_ADMIN_KEY=" + e2eAdminKey}, testutil.Binary(t),
		"dev", "--data", data, "--api", "127.0.0.1:0", "--edge", "127.0.0.1:0", "--gossip", "127.0.0.1:0")
	m := p.WaitFor(t, 60*time.Second, testutil.DevAddrs)
	return p, m[1], m[2]
}

// zipFiles reads every file of a zip into a map.
func zipFiles(t *testing.T, path string) map[string][]byte { return testutil.ZipFiles(t, path) }

// assertTreeEquals checks that dir holds exactly the files of want, byte
// for byte.
func assertTreeEquals(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	var got []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		got = append(got, rel)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if w, ok := want[rel]; !ok {
			t.Errorf("unexpected file %s in %s", rel, dir)
		} else if !bytes.Equal(b, w) {
			t.Errorf("%s differs from the bundle", rel)
		}
		return nil
	})
	if len(got) != len(want) {
		var names []string
		for n := range want {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Errorf("%s holds %d files, the bundle %d", dir, len(got), len(want))
	}
}

type deviceJSON struct {
	Status string `json:"status"`
	From   string `json:"from"`
	To     string `json:"to"`
	Mode   string `json:"mode"`
	Bytes  int64  `json:"bytes"`
	MS     int64  `json:"ms"`
	Error  string `json:"error"`
}

func runDevice(t *testing.T, edgeURL, dir string, extra ...string) deviceJSON {
	t.Helper()
	return runDeviceExpect(t, true, edgeURL, dir, extra...)
}

// runDeviceExpect runs `capstan device --json`, expecting it to succeed
// or fail, and decodes its one JSON object.
func runDeviceExpect(t *testing.T, wantOK bool, edgeURL, dir string, extra ...string) deviceJSON {
	t.Helper()
	args := append([]string{"device", "--edge", edgeURL, "--app", "com.example.swagger", "--channel", "production", "--dir", dir, "--json"}, extra...)
	if !slices.Contains(extra, "--public-key") {
		// These tests upload unsigned releases: the device checks no
		// signature, and must be told so.
		args = append(args, "--insecure-no-verify")
	}
	out := runCLI(t, "", wantOK, args...)
	var r deviceJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("device output %q: %v", out, err)
	}
	return r
}

// TestReleaseFromCIToDevice is the walking skeleton end to end: the binary
// as a user runs it, the real fixture bundles, a restart on the same data.
func TestReleaseFromCIToDevice(t *testing.T) {
	z1 := testutil.Fixture(t, "swagger-ui/www-5.34.0.zip")
	z2 := testutil.Fixture(t, "swagger-ui/www-5.34.1.zip")
	data := t.TempDir()
	phone := filepath.Join(t.TempDir(), "phone")

	dev, api, edgeURL := startDev(t, data)

	out := runCLI(t, api, true, "upload", "--app", "com.example.swagger", "--version", "5.34.0", "--channel", "production", "--json", z1)
	var up struct {
		Version string `json:"version"`
		Files   int    `json:"files"`
	}
	if err := json.Unmarshal([]byte(out), &up); err != nil || up.Version != "5.34.0" || up.Files != 32 {
		t.Fatalf("upload answer %q (%v)", out, err)
	}

	r := runDevice(t, edgeURL, phone)
	if r.Status != "updated" || r.To != "5.34.0" || r.Mode != "full" {
		t.Fatalf("first device run: %+v", r)
	}
	if zi, _ := os.Stat(z1); r.Bytes >= zi.Size() {
		t.Errorf("full download of %d bytes is not smaller than the zip (%d)", r.Bytes, zi.Size())
	}
	assertTreeEquals(t, filepath.Join(phone, "current"), zipFiles(t, z1))

	r = runDevice(t, edgeURL, phone)
	if r.Status != "up-to-date" {
		t.Fatalf("second device run: %+v", r)
	}

	runCLI(t, api, true, "upload", "--app", "com.example.swagger", "--version", "5.34.1", "--channel", "production", z2)
	check := runDevice(t, edgeURL, phone, "--check")
	if check.Status != "available" || check.To != "5.34.1" {
		t.Fatalf("--check: %+v", check)
	}
	assertTreeEquals(t, filepath.Join(phone, "current"), zipFiles(t, z1)) // --check installs nothing
	r = runDevice(t, edgeURL, phone)
	if r.Status != "updated" || r.From != "5.34.0" || r.To != "5.34.1" || r.Mode != "delta" {
		t.Fatalf("update to 5.34.1: %+v", r)
	}
	// The patch is ≈20 KB; the check answer with the signed manifest adds a
	// few KB. C bsdiff of the uncompressed tar is 21,910 B (SPEC §4).
	if r.Bytes > 40_000 {
		t.Errorf("delta update downloaded %d bytes", r.Bytes)
	}
	assertTreeEquals(t, filepath.Join(phone, "current"), zipFiles(t, z2))

	// Restart on the same data: releases and channels survive.
	dev.Stop(t)
	_, api, edgeURL = startDev(t, data)
	runCLI(t, api, false, "upload", "--app", "com.example.swagger", "--version", "5.34.1", z2) // still exists
	phone2 := filepath.Join(t.TempDir(), "phone2")
	r = runDevice(t, edgeURL, phone2)
	if r.Status != "updated" || r.To != "5.34.1" {
		t.Fatalf("fresh device after restart: %+v", r)
	}
	assertTreeEquals(t, filepath.Join(phone2, "current"), zipFiles(t, z2))

	// Rollback moves devices back, as a new record.
	runCLI(t, api, true, "rollback", "--app", "com.example.swagger", "--channel", "production")
	r = runDevice(t, edgeURL, phone)
	if r.Status != "updated" || r.To != "5.34.0" {
		t.Fatalf("after rollback: %+v", r)
	}
	assertTreeEquals(t, filepath.Join(phone, "current"), zipFiles(t, z1))
}

// TestUploadFolderIsDeterministic uploads a folder twice under two versions
// and checks the device installs exactly its files.
func TestUploadFolder(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "assets", "js"), 0o755)
	files := map[string][]byte{
		"index.html":            []byte("<html>hi</html>"),
		"assets/js/app-3f9c.js": bytes.Repeat([]byte("console.log(1);\n"), 100),
		"assets/empty.txt":      {},
	}
	for p, b := range files {
		if err := os.WriteFile(filepath.Join(src, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, api, edgeURL := startDev(t, t.TempDir())
	runCLI(t, api, true, "upload", "--app", "com.example.swagger", "--version", "1.0.0", "--channel", "production", src)
	phone := filepath.Join(t.TempDir(), "phone")
	if r := runDevice(t, edgeURL, phone); r.Status != "updated" {
		t.Fatalf("device: %+v", r)
	}
	assertTreeEquals(t, filepath.Join(phone, "current"), files)
}
