package edge_test

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/origin"
	"github.com/valyala/fasthttp"
)

// perfCapgoBody is the body perfkit posts to /updates.
const perfCapgoBody = `{"platform":"android","device_id":"0b6c2a9e-8d1f-4c5e-9a7b-2f4e6d8c1a3b","app_id":"com.x","custom_id":"","version_build":"5.0.0","version_code":"500","version_os":"14","version_name":"5.34.0","plugin_version":"8.51.14","is_emulator":false,"is_prod":true,"defaultChannel":""}`

// hotEdge is an edge holding swagger-ui 5.34.0 and 5.34.1 with every
// answer warm, and the requests perfkit measures, called in process.
type hotEdge struct {
	h    fasthttp.RequestHandler
	reqs map[string]*fasthttp.Request
}

// hotRows are perfkit's rows, in its order.
var hotRows = []string{"check_uptodate", "check_update", "patch", "full", "zip", "capgo_updates"}

func newHotEdge(tb testing.TB) *hotEdge {
	tb.Helper()
	f := newFleet(tb, func(c *origin.Config) { c.CapgoBrotliQuality = 1 })
	r0 := uploadFixture(tb, f, "com.x", "5.34.0", "swagger-ui/www-5.34.0.zip", "production", nil, nil)
	r1 := uploadFixture(tb, f, "com.x", "5.34.1", "swagger-ui/www-5.34.1.zip", "production", nil, nil)
	e := startEdge(tb, f, tb.TempDir(), func(c *edge.Config) { c.Capgo.RequestsPerSecond = -1 })
	syncEdge(tb, e)
	he := &hotEdge{h: e.HTTPHandler(), reqs: map[string]*fasthttp.Request{}}
	get := func(uri string) *fasthttp.Request {
		r := &fasthttp.Request{}
		r.SetRequestURI(uri)
		r.Header.SetHost("edge.test")
		return r
	}
	id0, id1 := r0.ID.String(), r1.ID.String()
	he.reqs["check_uptodate"] = get("/v1/check?app=com.x&device=dev-1&current=" + id1 + "&version=5.34.1")
	he.reqs["check_update"] = get("/v1/check?app=com.x&device=dev-1&current=" + id0 + "&version=5.34.0")
	he.reqs["patch"] = get("/v1/patches/" + id0 + "/" + id1)
	he.reqs["full"] = get("/v1/patches/" + strings.Repeat("0", 64) + "/" + id1)
	post := &fasthttp.Request{}
	post.Header.SetMethod("POST")
	post.SetRequestURI("/updates")
	post.Header.SetHost("edge.test")
	post.Header.SetContentType("application/json")
	post.SetBodyString(perfCapgoBody)
	he.reqs["capgo_updates"] = post
	// Warm every answer (the first ones pull from the origin, which may
	// still be building the patch).
	for _, row := range hotRows {
		if row == "zip" {
			continue
		}
		var body []byte
		testutil.Eventually(tb, 2*time.Minute, row+" answered", func() bool {
			ctx := he.do(row)
			body = append(body[:0], ctx.Response.Body()...)
			return ctx.Response.StatusCode() == 200 && (row != "check_update" || bytes.Contains(body, []byte(`"update"`))) &&
				(row != "capgo_updates" || bytes.Contains(body, []byte(`"url"`)))
		})
		if row == "capgo_updates" {
			i := bytes.Index(body, []byte(`"url":"http://edge.test`))
			if i < 0 {
				tb.Fatalf("capgo answer without a zip URL: %.300s", body)
			}
			u := body[i+len(`"url":"http://edge.test`):]
			he.reqs["zip"] = get(string(u[:bytes.IndexByte(u, '"')]))
		}
	}
	if c := he.do("zip"); c.Response.StatusCode() != 200 {
		tb.Fatalf("zip: %d", c.Response.StatusCode())
	}
	return he
}

// do runs one request through the handler, as fasthttp would on a
// keep-alive connection from loopback.
func (he *hotEdge) do(row string) *fasthttp.RequestCtx {
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(he.reqs[row], &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	he.h(ctx)
	return ctx
}

// BenchmarkHotPaths measures the handler of each request perfkit sends,
// without the network: go test -bench HotPaths -benchmem ./edge.
func BenchmarkHotPaths(b *testing.B) {
	he := newHotEdge(b)
	for _, row := range hotRows {
		b.Run(row, func(b *testing.B) {
			ctx := &fasthttp.RequestCtx{}
			ctx.Init(he.reqs[row], &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
			b.ReportAllocs()
			for b.Loop() {
				ctx.Response.Reset()
				he.h(ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatalf("%s: %d %s", row, ctx.Response.StatusCode(), ctx.Response.Body())
				}
			}
		})
	}
}

// TestHotPathAllocs bounds the heap allocations of each hot handler, as
// `go test -bench HotPaths -benchmem` reports them: allocation is what
// costs an edge most under load (garbage collection on every core). Checks
// and patches allocate nothing; a Capgo check copies its body once (the
// info object's fields point into it); a large blob opens its file (the os.File and its name).
func TestHotPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocations; make test runs this without it")
	}
	he := newHotEdge(t)
	limits := map[string]float64{"check_uptodate": 0, "check_update": 0, "patch": 0, "full": 4, "zip": 4, "capgo_updates": 1}
	for _, accept := range []string{"", "gzip, deflate, br"} {
		for _, row := range hotRows {
			req := he.reqs[row]
			if accept != "" {
				req.Header.Set("Accept-Encoding", accept)
			}
			ctx := &fasthttp.RequestCtx{}
			ctx.Init(req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
			run := func() {
				ctx.Response.Reset()
				he.h(ctx)
				if f, ok := ctx.Response.BodyStream().(io.Closer); ok {
					f.Close()
				}
			}
			run() // compressed forms are built on first use
			n := testing.AllocsPerRun(200, run)
			if ctx.Response.StatusCode() != 200 || n > limits[row] {
				t.Errorf("%s (Accept-Encoding %q): %d, %.1f allocations per request, want at most %.0f", row, accept, ctx.Response.StatusCode(), n, limits[row])
			}
			req.Header.Del("Accept-Encoding")
		}
	}
}
