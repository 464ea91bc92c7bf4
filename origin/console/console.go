// Package console is the operator console: a single page served by the
// origin at /console, built from the TypeScript in web/src into web/dist
// (committed, so building Capstan needs no npm; TestBundleFresh fails when
// it is stale). The page holds no data and no secrets: it calls the
// origin's API with the key the operator types, so the API's roles and
// app scopes decide what it may show and do.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed web/index.html web/dist/app.js web/app.css
var assets embed.FS

// contentSecurityPolicy lets the page load only its own files and talk
// only to the origin that served it: no inline script, no third party,
// and no framing (clickjacking of the action buttons).
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type asset struct {
	body  []byte
	ctype string
	etag  string
}

// files maps a request path under /console/ to its asset.
var files = func() map[string]asset {
	out := map[string]asset{}
	for name, ctype := range map[string]string{
		"web/index.html":  "text/html; charset=utf-8",
		"web/dist/app.js": "text/javascript; charset=utf-8",
		"web/app.css":     "text/css; charset=utf-8",
	} {
		b, err := fs.ReadFile(assets, name)
		if err != nil {
			panic("console: embedded asset missing: " + name)
		}
		sum := sha256.Sum256(b)
		out[path.Base(name)] = asset{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return out
}()

// Handler serves the console: GET /console (and /console/) is the page,
// /console/app.js and /console/app.css its code and style.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/console"), "/")
		if name == "" {
			name = "index.html"
		}
		a, ok := files[name]
		if !ok {
			http.Error(w, "no such console file", http.StatusNotFound)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		// Revalidate every load: a new binary brings a new page at once.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("Content-Type", a.ctype)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	})
}
