package console

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBundleFresh fails when web/dist/app.js is not what the TypeScript in
// web/src compiles to: the committed bundle is what `go build` embeds, so a
// change to the source must come with its build (npm run build in web/).
// It skips only where npm is not installed; CI has npm.
func TestBundleFresh(t *testing.T) {
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not installed: cannot check that web/dist/app.js is built from web/src")
	}
	web, _ := filepath.Abs("web")
	tsc := filepath.Join(web, "node_modules", "typescript", "bin", "tsc")
	if _, err := os.Stat(tsc); err != nil {
		// The compiler pinned by package-lock.json.
		out, err := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--prefix", web).CombinedOutput()
		if err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", web, err, out)
		}
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("npm without node")
	}
	outFile := filepath.Join(t.TempDir(), "app.js")
	cmd := exec.Command(node, tsc, "-p", filepath.Join(web, "tsconfig.json"), "--outFile", outFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tsc: %v\n%s", err, out)
	}
	want, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(web, "dist", "app.js"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("origin/console/web/dist/app.js is stale: run `npm ci && npm run build` in origin/console/web and commit dist/app.js")
	}
}

// TestAssetsNeedNoNetwork: the page loads nothing from outside the origin
// (no CDN, no fonts, no analytics), which the CSP enforces in the browser.
func TestAssetsNeedNoNetwork(t *testing.T) {
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	for name, a := range files {
		body := strings.ReplaceAll(string(a.body), "http://www.w3.org/2000/svg", "") // the SVG namespace, not a fetch
		if m := url.FindString(body); m != "" {
			t.Errorf("%s refers to %s: the console must work without a network", name, m)
		}
	}
}

func TestHandlerServesPageWithPolicy(t *testing.T) {
	h := Handler()
	for path, ctype := range map[string]string{"/console": "text/html", "/console/": "text/html", "/console/app.js": "text/javascript", "/console/app.css": "text/css"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), ctype) {
			t.Fatalf("%s: %d %s", path, w.Code, w.Header().Get("Content-Type"))
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Fatalf("%s: CSP %q", path, csp)
		}
		r := httptest.NewRequest("GET", path, nil)
		r.Header.Set("If-None-Match", w.Header().Get("ETag"))
		w2 := httptest.NewRecorder()
		h.ServeHTTP(w2, r)
		if w2.Code != http.StatusNotModified {
			t.Fatalf("%s revalidation: %d", path, w2.Code)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/console/../origin.key", nil))
	if w.Code != 404 {
		t.Fatalf("unknown file: %d", w.Code)
	}
}
