package edge

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// Cross-origin access for clients that run in a web page: the Capacitor
// client runs in the app's WebView, whose origin (capacitor://localhost on
// iOS, https://localhost on Android) is never the edge's, and browsers let a
// page read an answer from another origin only when the answer says so.
// Device endpoints are public and use no credentials or cookies, so any
// origin may read them ("*"); other endpoints (metrics, Capgo's) say nothing
// and stay same-origin. Requests without an Origin header (native clients,
// the Go device) get no extra header.

// corsPaths are the device endpoints (docs/protocol.md), exact or prefix.
var corsPaths = [][]byte{
	[]byte("/v1/check"), []byte("/v1/patches/"), []byte("/v1/blobs/"), []byte("/v1/events"),
	[]byte("/v1/keys/rotations"), []byte("/v1/releases/"), []byte("/v1/edges"), []byte("/healthz"),
}

func corsPath(p []byte) bool {
	for _, c := range corsPaths {
		if c[len(c)-1] == '/' && bytes.HasPrefix(p, c) || bytes.Equal(p, c) {
			return true
		}
	}
	return false
}

// corsHeaders adds the cross-origin headers to the answer to a page. It runs
// after the handler, which may have reset the response (fail does).
func corsHeaders(ctx *fasthttp.RequestCtx) {
	if len(ctx.Request.Header.Peek("Origin")) == 0 || !corsPath(ctx.Path()) {
		return
	}
	h := &ctx.Response.Header
	h.Set("Access-Control-Allow-Origin", "*")
	// Content-Length is readable anyway; the client counts compressed
	// answers by it, and needs to know they were compressed.
	h.Set("Access-Control-Expose-Headers", "Content-Encoding, ETag, Content-Range, Retry-After")
}

// preflight answers a browser's preflight (OPTIONS with
// Access-Control-Request-Method) for a device endpoint and reports whether
// it did.
func preflight(ctx *fasthttp.RequestCtx) bool {
	if !ctx.IsOptions() || len(ctx.Request.Header.Peek("Access-Control-Request-Method")) == 0 ||
		len(ctx.Request.Header.Peek("Origin")) == 0 || !corsPath(ctx.Path()) {
		return false
	}
	h := &ctx.Response.Header
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST")
	// POST /v1/events sends JSON; Range resumes a download.
	h.Set("Access-Control-Allow-Headers", "Content-Type, Range")
	h.Set("Access-Control-Max-Age", "86400")
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	return true
}
