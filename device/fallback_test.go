package device_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/internal/fleettest"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
)

// stack is a real origin and edge in one process, with a proxy in front of
// the edge that flips a byte in the responses the test chooses.
type stack struct {
	fleet   *fleettest.Fleet
	proxy   string
	corrupt atomic.Pointer[func(path string) bool]
}

func newStack(t *testing.T) *stack {
	t.Helper()
	f := fleettest.New(t, fleettest.Config{})
	e := f.StartEdge(nil)
	s := &stack{fleet: f}
	never := func(string) bool { return false }
	s.corrupt.Store(&never)
	target, _ := url.Parse(e.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if !(*s.corrupt.Load())(resp.Request.URL.Path) || resp.StatusCode != http.StatusOK {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if len(b) > 0 {
			b[len(b)/2] ^= 0xff
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		return nil
	}
	pts := httptest.NewServer(rp)
	s.proxy = pts.URL
	t.Cleanup(pts.Close)
	return s
}

func (s *stack) upload(t *testing.T, version string, files map[string]string) {
	t.Helper()
	s.fleet.Upload(origin.UploadRequest{App: "com.x", Version: version, Channel: "production", RolloutBPS: release.FullRollout}, files)
}

func (s *stack) corruptWhen(f func(path string) bool) { s.corrupt.Store(&f) }

func assertFiles(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		rel, _ := filepath.Rel(dir, p)
		b, _ := os.ReadFile(p)
		if want[filepath.ToSlash(rel)] != string(b) {
			t.Errorf("%s differs", rel)
		}
		return nil
	})
	if n != len(want) {
		t.Errorf("%d files installed, want %d", n, len(want))
	}
}

// TestPatchFallbacks: a corrupt patch falls back to the full bundle, a
// corrupt full bundle to single files, and every install is exact.
func TestPatchFallbacks(t *testing.T) {
	s := newStack(t)
	big := strings.Repeat("function f(x){return x*2}\n", 4000)
	releases := []map[string]string{
		{"index.html": "<html>1</html>", "app.js": big},
		{"index.html": "<html>2</html>", "app.js": big + "//2\n"},
		{"index.html": "<html>3</html>", "app.js": big + "//3\n", "new.css": "body{}"},
		{"index.html": "<html>4</html>", "app.js": big + "//4\n", "new.css": "body{}"},
	}
	d, err := device.New(device.Config{Dir: t.TempDir(), Edges: []string{s.proxy}, App: "com.x", Channel: "production"})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		corrupt  func(string) bool
		wantMode string
	}{
		{func(string) bool { return false }, device.ModeFull},
		{func(string) bool { return false }, device.ModeDelta},
		{func(p string) bool {
			return strings.HasPrefix(p, "/v1/patches/") && !strings.Contains(p, "/0000000000")
		}, device.ModeFull},
		{func(p string) bool { return strings.HasPrefix(p, "/v1/patches/") }, device.ModeFiles},
	}
	for i, st := range steps {
		s.upload(t, []string{"1.0.0", "1.1.0", "1.2.0", "1.3.0"}[i], releases[i])
		s.corruptWhen(st.corrupt)
		res := d.Update(context.Background())
		if res.Status != device.StatusUpdated || res.Mode != st.wantMode {
			t.Fatalf("step %d: %+v, want mode %s", i, res, st.wantMode)
		}
		assertFiles(t, filepath.Join(device.DirOf(d), "current"), releases[i])
	}
	// Everything corrupt: the update fails and the installed bundle stays.
	s.upload(t, "1.4.0", map[string]string{"index.html": "<html>5</html>"})
	s.corruptWhen(func(p string) bool { return strings.HasPrefix(p, "/v1/patches/") || strings.HasPrefix(p, "/v1/blobs/") })
	res := d.Update(context.Background())
	if res.Status != device.StatusFailed {
		t.Fatalf("all downloads corrupt: %+v", res)
	}
	assertFiles(t, filepath.Join(device.DirOf(d), "current"), releases[3])
	if d.State().Current.Version != "1.3.0" {
		t.Fatalf("state moved to %s after a failed update", d.State().Current.Version)
	}
}
