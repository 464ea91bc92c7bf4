// Package testutil holds helpers shared by Capstan's tests: locating the
// fixture bundles, polling with a deadline instead of sleeping, and
// building the capstan binary once for end-to-end tests.
package testutil

import (
	"archive/zip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// RepoRoot returns the folder holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testutil: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Fixture returns the path of a file in ../shared/fixtures beside the
// repository. It fails the test in CI (where shared/ is always laid out)
// and skips it elsewhere when the fixtures are missing.
func Fixture(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(RepoRoot(t), "..", "shared", "fixtures", rel)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("fixture %s missing: %v", p, err)
		}
		t.Skipf("fixture %s missing (expected ../shared/fixtures beside the repository)", p)
	}
	return p
}

// Eventually polls cond every 10 ms until it is true or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds ./cmd/capstan once per test process and returns its path.
// It is built without the race detector even under -race: the packages it
// wires are race-tested in-process, and a race-instrumented binary makes
// patch builds in end-to-end tests several times slower.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "capstan-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "capstan")
		args := []string{"build", "-o", binPath, "./cmd/capstan"}
		cmd := exec.Command("go", args...)
		cmd.Dir = RepoRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = err
			binPath = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build capstan: %v\n%s", buildErr, binPath)
	}
	return binPath
}

// ZipFiles reads every regular file of the zip at path into a map from its
// name to its content.
func ZipFiles(t testing.TB, path string) map[string][]byte {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	out := map[string][]byte{}
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[f.Name] = b
	}
	return out
}
