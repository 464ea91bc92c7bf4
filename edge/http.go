package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/capstan-ota/capstan/internal/httpenc"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

func (s *Server) newHTTPServer() *fasthttp.Server {
	metricsHandler := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			start := time.Now()
			defer corsHeaders(ctx)
			if s.limited(ctx) {
				s.m.observe("limited", ctx.Response.StatusCode(), time.Since(start), 0)
				return
			}
			if preflight(ctx) {
				s.m.observe("preflight", ctx.Response.StatusCode(), time.Since(start), 0)
				return
			}
			route := s.route(ctx, metricsHandler)
			s.m.observe(route, ctx.Response.StatusCode(), time.Since(start), ctx.Response.Header.ContentLength())
		},
		Name: "capstan-edge",
		// 16 KiB of headers: room for devices behind proxies that add a few.
		ReadBufferSize:     16 << 10,
		MaxRequestBodySize: 1 << 20,
		ReadTimeout:        s.cfg.ReadTimeout,
		IdleTimeout:        s.cfg.IdleTimeout,
		Concurrency:        s.cfg.MaxConns,
		// WriteTimeout is one deadline for the whole response in fasthttp:
		// it would cut slow mobile downloads, so blob routes get a long one
		// and everything else a short one.
		HeaderReceived: func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
			if bytes.HasPrefix(h.RequestURI(), []byte("/v1/blobs/")) || bytes.HasPrefix(h.RequestURI(), []byte("/v1/patches/")) || bytes.HasPrefix(h.RequestURI(), []byte("/capgo/br/")) {
				return fasthttp.RequestConfig{WriteTimeout: 30 * time.Minute}
			}
			return fasthttp.RequestConfig{WriteTimeout: 30 * time.Second}
		},
		NoDefaultServerHeader: true,
		NoDefaultDate:         false,
		// Idle connections (never a byte, or keep-alive between requests)
		// hold no read or write buffer: 20,000 of them cost ~6 KB each
		// instead of ~17 KB, which keeps an edge flooded with idle sockets
		// under 150 MB (TestIdleConnectionFlood). Requests per second
		// measured the same within noise.
		ReduceMemoryUsage: true,
		Logger:            fasthttpLogger{s},
	}
}

type fasthttpLogger struct{ s *Server }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.s.log.Debug("fasthttp", "msg", strings.TrimSpace(sprintf(format, args...)))
}

// route dispatches a request and returns its route label for metrics.
func (s *Server) route(ctx *fasthttp.RequestCtx, metricsHandler fasthttp.RequestHandler) string {
	// The path stays fasthttp's bytes: comparing them with string(…)
	// allocates nothing.
	path := ctx.Path()
	get := ctx.IsGet() || ctx.IsHead()
	switch {
	case string(path) == "/v1/check" && get:
		s.handleCheck(ctx)
		return "check"
	case bytes.HasPrefix(path, pathBlobs) && get:
		s.handleBlob(ctx, path[len(pathBlobs):])
		return "blob"
	case bytes.HasPrefix(path, pathPatches) && get:
		s.handlePatch(ctx, path)
		return "patch"
	case bytes.HasPrefix(path, []byte("/v1/releases/")) && get:
		s.handleRelease(ctx, string(path[len("/v1/releases/"):]))
		return "release"
	case string(path) == "/v1/edges" && get:
		s.handleEdges(ctx)
		return "edges"
	case string(path) == "/v1/keys/rotations" && get:
		s.handleRotations(ctx)
		return "rotations"
	case string(path) == "/v1/events" && ctx.IsPost():
		s.handleEvents(ctx)
		return "events"
	case string(path) == "/healthz" && get:
		s.handleHealth(ctx)
		return "healthz"
	case string(path) == "/metrics" && get:
		metricsHandler(ctx)
		return "metrics"
	}
	if route, ok := s.routeCapgo(ctx, path); ok {
		return route
	}
	fail(ctx, fasthttp.StatusNotFound, "no such endpoint: "+string(path))
	return "unknown"
}

func fail(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(map[string]string{"error": msg})
	ctx.SetBody(b)
}

func (s *Server) failFetch(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		fail(ctx, fasthttp.StatusNotFound, err.Error())
	case errors.Is(err, ErrOriginUnavailable):
		// 503 with Retry-After: the device moves on to its next edge.
		fail(ctx, fasthttp.StatusServiceUnavailable, err.Error())
		ctx.Response.Header.Set("Retry-After", "5")
	default:
		s.log.Warn("edge request failed", "path", string(ctx.Path()), "err", err)
		fail(ctx, fasthttp.StatusBadGateway, err.Error())
	}
}

func (s *Server) handleHealth(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	last := s.state.lastUpdate()
	body := map[string]any{"role": "edge", "channels": len(s.state.all()), "synced": s.isSynced()}
	if !last.IsZero() {
		body["state_age_seconds"] = time.Since(last).Seconds()
	}
	stale := s.expiredChannels()
	body["expired_channels"] = stale
	if s.cfg.InsecureGossip {
		body["insecure_gossip"] = true
		body["warnings"] = []string{"gossip is not authenticated (--insecure-gossip): anyone who reaches the gossip port can join the cluster"}
	}
	switch {
	case !s.isSynced():
		body["status"] = "waiting for state"
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
	case stale > 0:
		// Devices refuse expired records as a freeze; an edge holding one
		// has lost the origin's fresh records and says so.
		body["status"] = "stale"
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
	default:
		body["status"] = "ok"
	}
	b, _ := json.Marshal(body)
	ctx.SetBody(b)
}

// handleCheck answers GET /v1/check?app=&channel=&device=&current=&native=
// from memory: the channel's signed record, plus the target release's
// signed manifest when there is something to install. A check of a known
// kind of device allocates nothing: the query is read as fasthttp's bytes,
// the rules' outcome comes from the offer memo and the answer was built
// once for the record and target.
func (s *Server) handleCheck(ctx *fasthttp.RequestCtx) {
	q := ctx.QueryArgs()
	app, channel := q.Peek("app"), q.Peek("channel")
	if len(app) == 0 || len(app) > release.MaxAppLen || len(channel) > release.MaxAppLen {
		fail(ctx, fasthttp.StatusBadRequest, "app is required; app and channel are at most 128 bytes")
		return
	}
	device := q.Peek("device")
	if len(device) > 128 {
		fail(ctx, fasthttp.StatusBadRequest, "device id is over 128 bytes")
		return
	}
	var current release.Hash
	if c := q.Peek("current"); len(c) > 0 {
		h, ok := parseHashBytes(c)
		if !ok {
			_, err := release.ParseHash(string(c))
			fail(ctx, fasthttp.StatusBadRequest, "current: "+err.Error())
			return
		}
		current = h
	}
	cs, code, msg := s.resolveChannel(app, channel)
	if cs == nil {
		fail(ctx, code, msg)
		return
	}
	failedIDs := q.Peek("failed")
	if _, err := checkFailed(failedIDs, release.Hash{}); err != nil {
		fail(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	ctx.Response.Header.SetCanonical(headerCacheControl, valueNoStore)
	// The device id only feeds the rollout hash, which keeps nothing.
	target, ok := cs.ch.Target(unsafe.String(unsafe.SliceData(device), len(device)), current)
	if !ok || target.ID == current {
		s.writeCheck(ctx, wire.StatusUpToDate, cs, nil)
		return
	}
	var me *manifestEntry
	if !target.ID.IsZero() {
		// Back to the bundle inside the app needs no release document.
		var err error
		if me, err = s.manifestFor(target.ID); err != nil {
			s.failFetch(ctx, err)
			return
		}
	}
	failed, _ := checkFailed(failedIDs, target.ID)
	if r := s.checkOffer(cs, target, me, failed, q.Peek("version"), q.Peek("native")); r != nil {
		writeRefusal(ctx, cs, r)
		return
	}
	s.writeCheck(ctx, wire.StatusUpdate, cs, me)
}

// manifestFor returns a release's document from memory, or fetches it.
func (s *Server) manifestFor(id release.Hash) (*manifestEntry, error) {
	if me, ok := s.manifests.get(id); ok {
		return me, nil
	}
	ctx, cancel := context.WithTimeout(s.life, 10*time.Second)
	defer cancel()
	return s.manifest(ctx, id)
}

// offerKey is what release.Channel.CheckOffer reads, besides the record
// and the release document (both fixed by cs and target).
type offerKey struct {
	cs              *channelState
	target          release.Hash
	failed          bool
	version, native string
}

// offerMemo keeps CheckOffer's outcome per kind of device in a
// direct-mapped, lock-free table, so that the version parsing of the
// rules runs once per record, target and versions, not per check.
type offerMemo struct {
	seed  maphash.Seed
	slots [4096]atomic.Pointer[offerResult]
}

type offerResult struct {
	key     offerKey
	refusal *release.Refusal
}

func (m *offerMemo) slot(cs *channelState, target release.Hash, failed bool, version, native []byte) *atomic.Pointer[offerResult] {
	h := maphash.Bytes(m.seed, version) ^ maphash.Bytes(m.seed, native)<<1 ^ hashKey(m.seed, target)
	if failed {
		h = ^h
	}
	return &m.slots[h%uint64(len(m.slots))]
}

// checkOffer applies the record's rules to an offer of target, from the
// memo when this kind of device was seen before.
func (s *Server) checkOffer(cs *channelState, target release.Ref, me *manifestEntry, failed bool, version, native []byte) *release.Refusal {
	slot := s.offers.slot(cs, target.ID, failed, version, native)
	if r := slot.Load(); r != nil && r.key.cs == cs && r.key.target == target.ID && r.key.failed == failed &&
		r.key.version == string(version) && r.key.native == string(native) {
		return r.refusal
	}
	o := release.OfferCheck{Target: target, CurrentVersion: string(version), Native: string(native)}
	if failed {
		o.Failed = []release.Hash{target.ID}
	}
	if me != nil {
		o.Release = me.doc
	}
	r := cs.ch.CheckOffer(o)
	slot.Store(&offerResult{key: offerKey{cs, target.ID, failed, o.CurrentVersion, o.Native}, refusal: r})
	return r
}

// answerKey names a check answer of one record: its status and target.
type answerKey struct {
	status string
	target release.Hash
}

// writeCheck sends one of the answers built once per channel record and
// target (with their compressed forms), handed to fasthttp without a
// copy: a check is then a map lookup, a hash for the rollout and a write.
func (s *Server) writeCheck(ctx *fasthttp.RequestCtx, status string, cs *channelState, me *manifestEntry) {
	key := answerKey{status: status}
	if me != nil {
		key.target = me.id
	}
	if a, ok := (*cs.answers.Load())[key]; ok {
		writeEncoded(ctx, a)
		return
	}
	var buf bytes.Buffer
	buf.WriteString(`{"status":"` + status + `","channel":`)
	buf.Write(cs.envJSON)
	if me != nil {
		buf.WriteString(`,"release":`)
		buf.Write(me.envJSON)
	}
	buf.WriteString("}")
	a := &answer{body: buf.Bytes()}
	cs.answersMu.Lock()
	old := *cs.answers.Load()
	if prev, ok := old[key]; ok {
		a = prev
	} else {
		next := make(map[answerKey]*answer, len(old)+1)
		for k, v := range old {
			next[k] = v
		}
		next[key] = a
		cs.answers.Store(&next)
	}
	cs.answersMu.Unlock()
	writeEncoded(ctx, a)
}

// answer is a finished JSON answer and its compressed forms.
type answer struct {
	body []byte
	enc  httpenc.Variants
	// fast marks an answer built for one request: compressed at a fast
	// level, not kept.
	fast bool
}

// writeEncoded sends a JSON answer compressed with what the client accepts
// (docs/decisions/014): an answer built once (a check answer, per channel
// record and target) in its smallest accepted form, computed once, whatever
// its size; an answer built for this request, over httpenc.MinSize, at a
// fast level.
func writeEncoded(ctx *fasthttp.RequestCtx, a *answer) {
	accept := ctx.Request.Header.Peek("Accept-Encoding")
	if a.fast {
		if len(a.body) > httpenc.MinSize {
			ctx.Response.Header.Set("Vary", "Accept-Encoding")
			if enc := httpenc.ChooseBytes(accept); enc != "" {
				ctx.Response.Header.Set("Content-Encoding", enc)
				ctx.Response.SetBodyRaw(httpenc.Encode(enc, a.body, httpenc.Fast))
				return
			}
		}
		ctx.Response.SetBodyRaw(a.body)
		return
	}
	ctx.Response.Header.Set("Vary", "Accept-Encoding")
	enc, body := a.enc.Smallest(httpenc.AcceptedBytes(accept), a.body)
	if enc != "" {
		ctx.Response.Header.Set("Content-Encoding", enc)
	}
	ctx.Response.SetBodyRaw(body)
}

func (s *Server) handleRelease(ctx *fasthttp.RequestCtx, idStr string) {
	id, err := release.ParseHash(idStr)
	if err != nil {
		fail(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	rctx, cancel := context.WithTimeout(s.life, s.cfg.FetchTimeout)
	me, err := s.manifest(rctx, id)
	cancel()
	if err != nil {
		s.failFetch(ctx, err)
		return
	}
	ctx.SetContentType("application/json")
	immutableHeaders(ctx, id)
	writeEncoded(ctx, &me.ans)
}

func immutableHeaders(ctx *fasthttp.RequestCtx, etag release.Hash) {
	ctx.Response.Header.Set("Cache-Control", "public, max-age=31536000, immutable")
	ctx.Response.Header.Set("ETag", `"`+etag.String()+`"`)
}

var (
	pathBlobs   = []byte("/v1/blobs/")
	pathPatches = []byte("/v1/patches/")
	zeroHex     = release.ZeroHash.String()
)

func (s *Server) handleBlob(ctx *fasthttp.RequestCtx, hash []byte) {
	h, ok := parseHashBytes(hash)
	if !ok {
		fail(ctx, fasthttp.StatusBadRequest, "blob hash: "+release.ErrBadHash.Error())
		return
	}
	e, err := s.ensureBlob(h)
	if err != nil {
		s.failFetch(ctx, err)
		return
	}
	s.serveBlob(ctx, e)
}

// handlePatch serves GET /v1/patches/{base}/{target}: the delta between two
// releases (base all zeros for a full bundle), built by the origin.
func (s *Server) handlePatch(ctx *fasthttp.RequestCtx, path []byte) {
	rest := path[len(pathPatches):]
	if len(rest) != 129 || rest[64] != '/' {
		fail(ctx, fasthttp.StatusBadRequest, "want /v1/patches/{base}/{target}")
		return
	}
	if _, ok := parseHashBytes(rest[:64]); !ok {
		fail(ctx, fasthttp.StatusBadRequest, "patch: "+release.ErrBadHash.Error())
		return
	}
	if _, ok := parseHashBytes(rest[65:]); !ok {
		fail(ctx, fasthttp.StatusBadRequest, "patch: "+release.ErrBadHash.Error())
		return
	}
	// ?codecs=zstd asks for the variant without brotli frames (clients with
	// no brotli decoder, decision 131); it is another object at the origin,
	// cached under its own alias. A full bundle has no brotli frame either
	// way, so that variant shares the plain one.
	alias := path
	switch codecs := ctx.QueryArgs().Peek("codecs"); {
	case string(codecs) == "zstd" && string(rest[:64]) != zeroHex:
		var kb [160]byte
		alias = append(append(kb[:0], path...), "?codecs=zstd"...)
	case len(codecs) != 0 && string(codecs) != "zstd":
		fail(ctx, fasthttp.StatusBadRequest, "patch codecs: want zstd or nothing")
		return
	}
	// A patch the edge does not hold costs an origin pull (and maybe a
	// build): each address gets a few (issue 16, finding 5); beyond them
	// the device is told to come back, and meanwhile falls back to the
	// full bundle.
	if s.patchLimit != nil && s.aliasMissCosts(alias) {
		if ip := ctx.RemoteIP(); !ip.IsLoopback() || s.patchLimit.cfg.LimitLoopback {
			if ok, wait := s.patchLimit.allow(clientKey(ip)); !ok {
				fail(ctx, fasthttp.StatusServiceUnavailable, "too many patches this edge does not hold asked from this address; use the full bundle or retry later")
				ctx.Response.Header.Set("Retry-After", strconv.Itoa(max(1, int(wait.Seconds()+0.999))))
				s.trust.rateLimited.Inc()
				return
			}
		}
	}
	e, err := s.ensureAlias(alias)
	if err != nil {
		s.failFetch(ctx, err)
		return
	}
	s.serveBlob(ctx, e)
}

// Response header names and values of blobs, as bytes: fasthttp takes
// them without normalising or allocating.
var (
	headerETag         = []byte("ETag")
	headerAcceptRanges = []byte("Accept-Ranges")
	valueBytes         = []byte("bytes")
	valueImmutable     = []byte("public, max-age=31536000, immutable")
	contentTypeOctets  = []byte("application/octet-stream")
)

// serveBlob writes a cached blob with strong ETag, Content-Length and
// single-range support. Small blobs are written from memory; the others
// go from the blob's file to the socket with sendfile (fasthttp takes
// that path for an *os.File body). Both keep the route's long write
// deadline for slow readers.
func (s *Server) serveBlob(ctx *fasthttp.RequestCtx, e *blobEntry) {
	h := &ctx.Response.Header
	h.SetCanonical(headerCacheControl, valueImmutable)
	h.SetCanonical(headerETag, e.etag)
	h.SetCanonical(headerAcceptRanges, valueBytes)
	h.SetContentTypeBytes(contentTypeOctets)
	if inm := ctx.Request.Header.Peek("If-None-Match"); len(inm) > 0 && bytes.Contains(inm, e.hexHash) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	size := e.size
	start, end := int64(0), size-1
	if rng := ctx.Request.Header.Peek("Range"); len(rng) > 0 && size > 0 {
		st, en, err := fasthttp.ParseByteRange(rng, int(size))
		if err != nil {
			fail(ctx, fasthttp.StatusRequestedRangeNotSatisfiable, "bad range: "+string(rng))
			ctx.Response.Header.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			return
		}
		start, end = int64(st), int64(en)
		ctx.SetStatusCode(fasthttp.StatusPartialContent)
		ctx.Response.Header.SetContentRange(st, en, int(size))
	}
	length := end - start + 1
	if size == 0 {
		length = 0
	}
	if ctx.IsHead() {
		ctx.Response.Header.SetContentLength(int(length))
		ctx.Response.SkipBody = true
		return
	}
	s.m.bytesServed.Add(float64(length))
	if size <= s.cfg.MemCacheObject {
		data, ok := s.mem.get(e.hash)
		if !ok {
			data = make([]byte, size)
			if _, err := s.cache.readAt(e.hash, data, 0); err != nil && size > 0 {
				s.failFetch(ctx, err)
				return
			}
			s.mem.add(e.hash, data)
		}
		ctx.Response.SetBodyRaw(data[start : end+1])
		return
	}
	f, err := s.cache.open(e)
	if err == nil && start > 0 {
		_, err = f.Seek(start, io.SeekStart)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		if errors.Is(err, errMiss) {
			// Evicted under our feet: the device retries at once.
			err = fmt.Errorf("%w: blob %s was just evicted", ErrOriginUnavailable, e.hash)
		}
		s.failFetch(ctx, err)
		return
	}
	// fasthttp closes the file once the body is written.
	ctx.SetBodyStream(f, int(length))
}
