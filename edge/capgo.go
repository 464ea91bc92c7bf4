package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/release"
	capstanstats "github.com/capstan-ota/capstan/stats"
	"github.com/dgraph-io/badger/v4"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// CapgoConfig configures the edge's endpoints for devices running the
// @capgo/capacitor-updater plugin (POST /updates, POST /stats,
// /channel_self). See docs/capgo.md.
type CapgoConfig struct {
	// Disabled turns the Capgo endpoints off (they answer 404).
	Disabled bool
	// PublicURL is the base of every URL put in answers, e.g.
	// https://ota.example.com. Empty means: built per request from
	// X-Forwarded-Proto/X-Forwarded-Host when a proxy sets them, else from
	// the Host header and whether the connection is TLS.
	PublicURL string
	// DefaultChannel is the channel devices follow when the app's Capgo
	// settings name none (default "production").
	DefaultChannel string
	// ConfigTTL is how long an app's Capgo settings fetched from the origin
	// are used before they are fetched again (default 30 s). A stale copy
	// keeps serving while the refresh runs, and when origins are away.
	ConfigTTL time.Duration
	// MaxDevices bounds each per-device table (default 100,000 entries):
	// the (device, release) pairs reported failed, and the channel
	// overrides set by plugins older than v8's device-side channel store.
	// The least recently used entries are forgotten first.
	MaxDevices int
	// RequestsPerSecond limits each client address (the last
	// X-Forwarded-For hop behind a proxy) across the Capgo endpoints
	// (default 50; negative: no limit). Over it, devices get 429 with
	// Retry-After, which the plugin honours for all its calls.
	RequestsPerSecond int
	// Events receives device stats mapped onto Capstan device events; nil
	// means the edge's own event pipeline (forwarded to an origin like
	// POST /v1/events, feeding per-release stats and auto-pause).
	Events capgo.EventSink
}

const (
	defaultCapgoChannel   = "production"
	defaultCapgoConfigTTL = 30 * time.Second
	defaultCapgoDevices   = 100_000
	defaultCapgoRate      = 50
	// maxCapgoMetas bounds the release metadata held in memory; past it the
	// map is cleared (entries are cheap to reload from Badger).
	maxCapgoMetas = 10_000
	pfxCapgoMeta  = "g/" // g/<release id> → capgo.ReleaseMeta
)

// capgoState is the edge's Capgo front end. Its methods are safe for
// concurrent use. What POST /updates reads on every request is either
// immutable, behind an atomic pointer, or sharded: no lock is shared by
// all requests (decision 081).
type capgoState struct {
	cfg       CapgoConfig
	limiter   *windowLimiter
	failed    *shardedLRU[failedKey, struct{}]
	overrides *shardedLRU[deviceKey, string]
	// downloads holds the (device, version) downloads already counted:
	// the plugin reports one download with two stats (download_complete
	// and, since late 2025, download_zip_complete or
	// download_manifest_complete), and retries batches.
	downloads *shardedLRU[downloadKey, struct{}]
	absent    *lru.Cache[release.Hash, struct{}] // releases with no Capgo download
	sink      capgo.EventSink
	ownSink   bool // sink is the edge's own event queue: push without copies

	// decisions holds the outcome of the rules for each kind of device
	// (channel record, settings, target, and the info fields the rules
	// read), so a check repeats none of the version parsing or encoding.
	decisions *slotCache[decisionKey, *capgoDecision]

	appsMu sync.Mutex                           // serialises writers of apps
	apps   atomic.Pointer[map[string]*capgoApp] // copied on write

	mu       sync.Mutex // guards metas, releases
	metas    map[release.Hash]*capgo.ReleaseMeta
	releases map[release.Hash]*capgoRelease

	updates      *labeledCounters
	stats        *prometheus.CounterVec
	noNewVersion *shardedCounter
}

type capgoApp struct {
	cfg        *capgo.AppConfig
	fetched    time.Time
	refreshing atomic.Bool
}

// failedKey names a release that failed on a device; deviceKey a device.
type (
	failedKey struct {
		app, device string
		id          release.Hash
	}
	deviceKey   struct{ app, device string }
	downloadKey struct{ app, device, version string }
)

func newCapgoState(cfg CapgoConfig, reg *prometheus.Registry, events capgo.EventSink) *capgoState {
	if cfg.DefaultChannel == "" {
		cfg.DefaultChannel = defaultCapgoChannel
	}
	if cfg.ConfigTTL <= 0 {
		cfg.ConfigTTL = defaultCapgoConfigTTL
	}
	if cfg.MaxDevices <= 0 {
		cfg.MaxDevices = defaultCapgoDevices
	}
	if cfg.RequestsPerSecond == 0 {
		cfg.RequestsPerSecond = defaultCapgoRate
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	c := &capgoState{
		cfg:     cfg,
		limiter: newWindowLimiter(cfg.RequestsPerSecond, 100_000),
		failed: newShardedLRU[failedKey, struct{}](cfg.MaxDevices, func(seed maphash.Seed, k failedKey) uint64 {
			return maphash.String(seed, k.device) ^ maphash.Bytes(seed, k.id[:8])
		}),
		overrides: newShardedLRU[deviceKey, string](cfg.MaxDevices, func(seed maphash.Seed, k deviceKey) uint64 {
			return maphash.String(seed, k.device) ^ maphash.String(seed, k.app)<<1
		}),
		downloads: newShardedLRU[downloadKey, struct{}](cfg.MaxDevices, func(seed maphash.Seed, k downloadKey) uint64 {
			return maphash.String(seed, k.device) ^ maphash.String(seed, k.version)<<1
		}),
		absent:    newLRU[release.Hash, struct{}](1024),
		decisions: newSlotCache[decisionKey, *capgoDecision](4096, hashDecisionKey),
		sink:      cfg.Events,
		metas:     map[release.Hash]*capgo.ReleaseMeta{},
		releases:  map[release.Hash]*capgoRelease{},
		updates:   newLabeledCounters("capstan_edge_capgo_updates_total", "Answers to Capgo update checks, by result (update or the error code).", "result"),
		stats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstan_edge_capgo_stats_total", Help: "Stats reported by Capgo devices, by plugin action (unknown actions as other).",
		}, []string{"action"}),
	}
	c.apps.Store(&map[string]*capgoApp{})
	c.noNewVersion = c.updates.with(capgo.CodeNoNewVersion)
	if c.sink == nil {
		c.sink, c.ownSink = events, true
	}
	reg.MustRegister(c.updates, c.stats)
	return c
}

// routeCapgo serves the Capgo device endpoints. It reports false when path
// is not one of them.
func (s *Server) routeCapgo(ctx *fasthttp.RequestCtx, path []byte) (string, bool) {
	if s.capgo == nil || s.capgo.cfg.Disabled {
		return "", false
	}
	var route string
	switch {
	case string(path) == "/updates" && ctx.IsPost():
		route = "capgo_updates"
	case string(path) == "/stats" && ctx.IsPost():
		route = "capgo_stats"
	case string(path) == "/channel_self":
		route = "capgo_channel"
	case bytes.HasPrefix(path, []byte("/capgo/br/")) && (ctx.IsGet() || ctx.IsHead()):
		s.handleCapgoBrotli(ctx, path[len("/capgo/br/"):])
		return "capgo_br", true
	default:
		return "", false
	}
	if ok, retry := s.capgo.limiter.allow(clientAddr(ctx), s.cfg.Now()); !ok {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(retry))
		writeCapgoJSON(ctx, fasthttp.StatusTooManyRequests, &capgo.Refusal{
			Error: capgo.CodeTooManyRequests, Message: "too many requests from this address; retry later",
			Kind: capgo.KindFailed, RetryAfterSeconds: retry,
		})
		return route, true
	}
	switch route {
	case "capgo_updates":
		s.handleCapgoUpdates(ctx)
	case "capgo_stats":
		s.handleCapgoStats(ctx)
	default:
		s.handleCapgoChannel(ctx)
	}
	return route, true
}

// clientAddr is the address a request is rate-limited by: the last
// X-Forwarded-For hop when a proxy sets one (the address the proxy saw; the
// edge is meant to sit behind a TLS proxy, where every connection comes
// from the proxy), else the connection's address. A client can only add
// hops in front of that one, not replace it.
func clientAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	if xff := ctx.Request.Header.Peek("X-Forwarded-For"); len(xff) > 0 {
		if i := bytes.LastIndexByte(xff, ','); i >= 0 {
			xff = xff[i+1:]
		}
		if xff = bytes.TrimSpace(xff); len(xff) > 0 && len(xff) <= 64 {
			if a, err := netip.ParseAddr(string(xff)); err == nil {
				return a.Unmap()
			}
		}
	}
	return connAddr(ctx)
}

func writeCapgoJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = fasthttp.StatusInternalServerError, []byte(`{"error":"server_error","message":"encode answer","kind":"failed"}`)
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetBody(b)
}

// refuse answers a check with HTTP 200 and a classified non-update, as
// Capgo's backend does: the plugin reads error and kind whatever the
// status, and a 200 keeps older plugins from counting a network failure.
func (s *Server) capgoRefuse(ctx *fasthttp.RequestCtx, r *capgo.Refusal) {
	s.capgo.updates.with(r.Error).Inc()
	writeCapgoJSON(ctx, fasthttp.StatusOK, r)
}

// baseURL is the scheme and host devices reach this edge at. fromHeaders
// is false when it had to fall back to the listener's address.
func (s *Server) baseURL(ctx *fasthttp.RequestCtx) (base string, fromHeaders bool) {
	if s.capgo.cfg.PublicURL != "" {
		return s.capgo.cfg.PublicURL, true
	}
	scheme := "http"
	if ctx.IsTLS() {
		scheme = "https"
	}
	if p := strings.ToLower(strings.TrimSpace(strings.Split(string(ctx.Request.Header.Peek("X-Forwarded-Proto")), ",")[0])); p == "http" || p == "https" {
		scheme = p
	}
	host := strings.TrimSpace(strings.Split(string(ctx.Request.Header.Peek("X-Forwarded-Host")), ",")[0])
	if !validHost(host) {
		host = string(ctx.Host())
	}
	fromHeaders = true
	if !validHost(host) {
		host, fromHeaders = ctx.LocalAddr().String(), false
	}
	return scheme + "://" + host, fromHeaders
}

// validHost accepts host[:port] made of the characters of DNS names and IP
// literals only, so a hostile Host header cannot bend the URLs we hand out.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".-:[]_", c) >= 0) {
			return false
		}
	}
	u, err := url.Parse("http://" + h + "/")
	return err == nil && u.Host == h
}

// appKnown reports whether the edge holds a channel of app. Only known apps
// cost an origin fetch, so random app ids from the internet cost nothing.
func (s *Server) appKnown(app string) bool { return s.appIndex().apps[app] != nil }

// capgoAppConfig returns an app's Capgo settings: from memory while fresh,
// refreshed in the background when stale, fetched (briefly) on first use.
// When no origin answers, the defaults are used and retried soon.
func (s *Server) capgoAppConfig(app string) *capgo.AppConfig {
	c := s.capgo
	e := (*c.apps.Load())[app]
	if e == nil {
		return s.fetchCapgoConfig(app, &capgo.AppConfig{})
	}
	if s.cfg.Now().Sub(e.fetched) >= c.cfg.ConfigTTL && e.refreshing.CompareAndSwap(false, true) {
		s.background(func(context.Context) { s.fetchCapgoConfig(app, e.cfg) })
	}
	return e.cfg
}

func (s *Server) fetchCapgoConfig(app string, fallback *capgo.AppConfig) *capgo.AppConfig {
	ctx, cancel := context.WithTimeout(s.life, 3*time.Second)
	defer cancel()
	v, err, _ := s.flight.Do("capgo-app/"+app, func() (any, error) {
		b, err := s.fetchSmall(ctx, "/v1/capgo/apps/"+url.PathEscape(app), 1<<20)
		if err != nil {
			return nil, err
		}
		var cfg capgo.AppConfig
		if err := json.Unmarshal(b, &cfg); err != nil {
			return nil, err
		}
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		return &cfg, nil
	})
	cfg := fallback
	fetched := s.cfg.Now()
	if err == nil {
		cfg = v.(*capgo.AppConfig)
	} else {
		s.log.Debug("capgo settings", "app", app, "err", err)
		// Try again in a few seconds rather than a whole TTL.
		fetched = fetched.Add(-s.capgo.cfg.ConfigTTL + 5*time.Second)
	}
	c := s.capgo
	c.appsMu.Lock()
	old := *c.apps.Load()
	next := make(map[string]*capgoApp, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[app] = &capgoApp{cfg: cfg, fetched: fetched}
	c.apps.Store(&next)
	c.appsMu.Unlock()
	return cfg
}

// capgoMeta returns a release's Capgo metadata (zip hash and size,
// encryption strings) from memory, the cache, or an origin.
func (s *Server) capgoMeta(ctx context.Context, id release.Hash) (*capgo.ReleaseMeta, error) {
	c := s.capgo
	c.mu.Lock()
	m, ok := c.metas[id]
	c.mu.Unlock()
	if ok {
		return m, nil
	}
	if _, gone := c.absent.Get(id); gone {
		return nil, fmt.Errorf("%w: capgo download of %s", ErrNotFound, id)
	}
	v, err, _ := s.flight.Do("capgo-meta/"+id.String(), func() (any, error) {
		var raw []byte
		_ = s.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get([]byte(pfxCapgoMeta + id.String()))
			if err != nil {
				return err
			}
			raw, err = item.ValueCopy(nil)
			return err
		})
		fromOrigin := raw == nil
		if fromOrigin {
			var err error
			if raw, err = s.fetchSmall(ctx, "/v1/capgo/releases/"+id.String(), 64<<10); err != nil {
				return nil, err
			}
		}
		var m capgo.ReleaseMeta
		if err := json.Unmarshal(raw, &m); err != nil || m.Zip.IsZero() && m.Encrypted == nil {
			return nil, ErrOriginUnavailable
		}
		if m.Encrypted != nil {
			if err := m.Encrypted.Validate(); err != nil || m.EncryptedZip.IsZero() {
				return nil, ErrOriginUnavailable
			}
		}
		if fromOrigin {
			if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(pfxCapgoMeta+id.String()), raw) }); err != nil {
				s.log.Warn("persist capgo metadata", "id", id, "err", err)
			}
		}
		c.mu.Lock()
		if len(c.metas) >= maxCapgoMetas {
			c.metas = map[release.Hash]*capgo.ReleaseMeta{}
		}
		c.metas[id] = &m
		c.mu.Unlock()
		return &m, nil
	})
	if errors.Is(err, ErrNotFound) {
		// Permanent for a release ID (it is encrypted for Capstan devices
		// only): remember it, so checks do not ask the origin each time.
		c.absent.Add(id, struct{}{})
	}
	if err != nil {
		return nil, err
	}
	return v.(*capgo.ReleaseMeta), nil
}

// capgoChannel picks the channel for a device, Capgo's order mapped onto
// Capstan: the channel the device names (defaultChannel, which v8 plugins
// persist after setChannel), else a server-side override set by an older
// plugin, else the app's default channel. A named channel is used only if
// it exists and is the default or open to self-assignment; otherwise the
// device falls back to the default (Capgo answers no_channel when a named
// channel is missing; falling back is what its users asked for, #819).
func (s *Server) capgoChannel(in *capgo.Info, cfg *capgo.AppConfig) (*channelState, string) {
	app := string(in.AppID)
	a := s.appIndex().apps[app]
	def := s.capgoDefaultChannel(app, cfg)
	if a == nil {
		return nil, def
	}
	name := string(in.DefaultChannel)
	if name == "" {
		name, _ = s.capgo.overrides.get(deviceKey{app, string(in.DeviceID)})
	}
	if name != "" && name != def {
		if cs, ok := a.channels[name]; ok && s.capgoSelfAssignable(cs, cfg) {
			return cs, name
		}
	}
	return a.channels[def], def
}

// capgoDefaultChannel is the app's default channel name.
func (s *Server) capgoDefaultChannel(app string, cfg *capgo.AppConfig) string {
	if cfg != nil && cfg.DefaultChannel != "" {
		return cfg.DefaultChannel
	}
	if a := s.appIndex().apps[app]; a != nil && a.def != "" {
		return a.def
	}
	return s.capgo.cfg.DefaultChannel
}

// capgoSelfAssignable reports whether devices may choose a channel.
func (s *Server) capgoSelfAssignable(cs *channelState, cfg *capgo.AppConfig) bool {
	return cfg.Flags(cs.ch.Channel).SelfAssign || deviceSelectable(cs.ch)
}

// currentRelease maps the version name a device runs onto a release the
// channel knows (its rollout release or its stable one). An unknown name
// is treated like the built-in bundle: the device is offered what the
// channel's rollout gives a new device.
func currentRelease(ch *release.Channel, versionName string) release.Hash {
	if versionName == "" || versionName == capgo.Builtin {
		return release.Hash{}
	}
	if ch.Release.Version == versionName {
		return ch.Release.ID
	}
	if ch.Stable != nil && ch.Stable.Version == versionName {
		return ch.Stable.ID
	}
	return release.Hash{}
}

// capgoDecision is what the rules answer one kind of device for one
// target: a refusal, encoded once, or an update from rel.
type capgoDecision struct {
	// refusal is the whole answer when it is not an update with a release:
	// a classified refusal, or the builtin answer.
	refusal      []byte
	result       *shardedCounter
	rel          *capgoRelease
	withManifest bool
}

// capgoRelease is a release as Capgo devices get it: its manifest and
// Capgo metadata, and its update answers, encoded once per answer variant
// (with or without the file manifest, and the base URL the device reached
// the edge at).
type capgoRelease struct {
	me   *manifestEntry
	meta *capgo.ReleaseMeta

	mu      sync.Mutex                         // serialises writers of answers
	answers atomic.Pointer[map[string]*answer] // copied on write
}

// maxAnswerVariants bounds the answers kept per release: a variant per
// Host header a client invents would otherwise grow without end.
const maxAnswerVariants = 32

// decisionKey is everything the update rules read, besides the device's
// target and whether the target failed on it.
type decisionKey struct {
	cs                                                        *channelState
	cfg                                                       *capgo.AppConfig
	target                                                    release.Hash
	failed, isProd, isEmulator                                bool
	versionName, versionBuild, platform, pluginVersion, keyID capgo.Str
}

func hashDecisionKey(seed maphash.Seed, k decisionKey) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	h.Write(k.target[:8])
	for _, f := range [...]capgo.Str{k.versionName, k.versionBuild, k.platform, k.pluginVersion, k.keyID} {
		h.WriteString(string(f))
		h.WriteByte(0)
	}
	h.WriteByte(b2i(k.failed) | b2i(k.isProd)<<1 | b2i(k.isEmulator)<<2)
	return h.Sum64()
}

func b2i(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// builtinAnswer sends a device back to the bundle inside the app.
var builtinAnswer = mustJSON(&capgo.BuiltinAnswer{Version: capgo.Builtin})

// noNewVersion is the most common answer, encoded once.
var noNewVersion = mustJSON(&capgo.Refusal{Error: capgo.CodeNoNewVersion, Message: "No new version available", Kind: capgo.KindUpToDate})

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

var (
	headerCacheControl = []byte("Cache-Control")
	valueNoStore       = []byte("no-store")
	contentTypeJSON    = []byte("application/json")
)

// writeCapgoBody answers 200 with an encoded JSON body, handed to fasthttp
// without a copy (the bodies are immutable).
func writeCapgoBody(ctx *fasthttp.RequestCtx, body []byte) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	ctx.Response.Header.SetCanonical(headerCacheControl, valueNoStore)
	ctx.Response.SetBodyRaw(body)
}

// handleCapgoUpdates answers POST /updates, the plugin's update check.
func (s *Server) handleCapgoUpdates(ctx *fasthttp.RequestCtx) {
	var in capgo.Info
	if err := capgo.ParseInfoInto(ctx.PostBody(), &in); err != nil {
		s.capgoRefuse(ctx, &capgo.Refusal{Error: capgo.CodeMissingInfo, Message: err.Error(), Kind: capgo.KindFailed})
		return
	}
	app := string(in.AppID)
	if !s.appKnown(app) {
		s.capgoRefuse(ctx, &capgo.Refusal{Error: capgo.CodeNoChannel, Message: "app " + app + " has no channel on this server", Kind: capgo.KindFailed})
		return
	}
	cfg := s.capgoAppConfig(app)
	cs, chName := s.capgoChannel(&in, cfg)
	if cs == nil {
		s.capgoRefuse(ctx, &capgo.Refusal{Error: capgo.CodeNoChannel, Message: "app " + app + " has no channel " + chName, Kind: capgo.KindFailed})
		return
	}
	ch := cs.ch
	device := string(in.DeviceID)
	current := currentRelease(ch, string(in.VersionName))
	version := ""
	if !current.IsZero() {
		version = string(in.VersionName)
	}
	s.capgoCheckEvent(ctx, capgo.Event{Action: capgo.EventCheck, App: app, Channel: ch.Channel, Device: device, Release: current, Version: version})
	target, ok := ch.Target(device, current)
	if !ok || !target.ID.IsZero() && target.Version == string(in.VersionName) {
		s.capgo.noNewVersion.Inc()
		writeCapgoBody(ctx, noNewVersion)
		return
	}
	key := decisionKey{cs: cs, cfg: cfg, target: target.ID, isProd: bool(in.IsProd), isEmulator: bool(in.IsEmulator),
		versionName: in.VersionName, versionBuild: in.VersionBuild, platform: in.Platform, pluginVersion: in.PluginVersion, keyID: in.KeyID}
	if !target.ID.IsZero() {
		_, key.failed = s.capgo.failed.get(failedKey{app, device, target.ID})
	}
	d, ok := s.capgo.decisions.get(key)
	if !ok {
		var r *capgo.Refusal
		if d, r = s.capgoDecide(&in, cs, cfg, target, key.failed); d == nil {
			// Not the rules' answer but the edge's state (the release is
			// not reachable now): answered, never kept.
			s.capgoRefuse(ctx, r)
			return
		}
		s.capgo.decisions.put(key, d)
	}
	d.result.Inc()
	if d.refusal != nil {
		writeCapgoBody(ctx, d.refusal)
		return
	}
	a, err := s.capgoAnswerBody(ctx, d.rel, d.withManifest)
	if err != nil {
		s.capgoRefuse(ctx, &capgo.Refusal{Error: capgo.CodeServerError, Message: err.Error(), Kind: capgo.KindFailed})
		return
	}
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	ctx.Response.Header.SetCanonical(headerCacheControl, valueNoStore)
	// Both plugins' HTTP stacks (OkHttp, URLSession) accept gzip and
	// decode it themselves.
	writeEncoded(ctx, a)
}

// capgoCheckEvent reports a check to the event pipeline: into the edge's
// own queue, on the shard of the connection, without allocating.
func (s *Server) capgoCheckEvent(ctx *fasthttp.RequestCtx, e capgo.Event) {
	if !s.capgo.ownSink {
		s.capgo.sink.DeviceEvents([]capgo.Event{e})
		return
	}
	evs := [1]capstanstats.Event{{Action: e.Action, App: e.App, Channel: e.Channel, Device: e.Device, Release: e.Release, Version: e.Version}}
	if evs[0].Validate() == nil {
		s.events.push(ctx.ConnID(), evs[:])
		s.m.eventsIn.Inc()
	}
}

// capgoDecide runs the update rules for one kind of device. It returns
// nil and a refusal when the answer depends on the edge's state rather
// than on the rules (the release's metadata cannot be had now), which must
// not be kept.
func (s *Server) capgoDecide(in *capgo.Info, cs *channelState, cfg *capgo.AppConfig, target release.Ref, failed bool) (*capgoDecision, *capgo.Refusal) {
	ch := cs.ch
	t := capgo.Target{Ref: target, Failed: failed}
	var rel *capgoRelease
	if !target.ID.IsZero() {
		var err error
		rel, err = s.capgoRelease(target.ID)
		if errors.Is(err, ErrNotFound) {
			// The origin has no Capgo download for it (a release encrypted
			// for Capstan devices only): nothing a retry would change.
			return s.capgoRefusal(&capgo.Refusal{Error: capgo.CodeNoBundle, Message: "release " + target.Version + " has no download for Capgo devices (encrypted for Capstan devices only; upload with --capgo-key)", Kind: capgo.KindBlocked}), nil
		}
		if err != nil {
			s.log.Warn("capgo check", "release", target.ID, "err", err)
			return nil, &capgo.Refusal{Error: capgo.CodeNoBundle, Message: "release " + target.Version + " is not available on this edge right now; retry later", Kind: capgo.KindFailed}
		}
		t.MinNative = rel.me.doc.MinNative
		if rel.meta.Encrypted != nil {
			t.KeyID = rel.meta.Encrypted.KeyID
		}
	}
	rules := capgo.Rules{Channel: ch.Channel, Flags: cfg.Flags(ch.Channel), BlockMajor: blockMajor(ch)}
	r := capgo.Check(in, t, rules)
	if r == nil {
		r = capstanOfferCheck(ch, in, target)
	}
	if r != nil {
		return s.capgoRefusal(r), nil
	}
	if rel == nil {
		// Back to the bundle inside the app (a rollback to builtin): the
		// success-shaped answer both plugins act on.
		return &capgoDecision{refusal: builtinAnswer, result: s.capgo.updates.with(capgo.Builtin)}, nil
	}
	return &capgoDecision{result: s.capgo.updates.with("update"), rel: rel,
		withManifest: rel.meta.Encrypted == nil && capgo.SupportsManifest(string(in.PluginVersion))}, nil
}

func (s *Server) capgoRefusal(r *capgo.Refusal) *capgoDecision {
	b, err := json.Marshal(r)
	if err != nil {
		b = []byte(`{"error":"server_error","message":"encode answer","kind":"failed"}`)
	}
	return &capgoDecision{refusal: b, result: s.capgo.updates.with(r.Error)}
}

// capgoRelease returns a release's manifest and Capgo metadata, from
// memory or fetched once.
func (s *Server) capgoRelease(id release.Hash) (*capgoRelease, error) {
	c := s.capgo
	c.mu.Lock()
	rel, ok := c.releases[id]
	c.mu.Unlock()
	if ok {
		return rel, nil
	}
	rctx, cancel := context.WithTimeout(s.life, 10*time.Second)
	defer cancel()
	me, err := s.manifest(rctx, id)
	if err != nil {
		return nil, err
	}
	meta, err := s.capgoMeta(rctx, id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if rel, ok := c.releases[id]; ok {
		return rel, nil
	}
	if len(c.releases) >= maxCapgoMetas {
		c.releases = map[release.Hash]*capgoRelease{}
	}
	rel = &capgoRelease{me: me, meta: meta}
	rel.answers.Store(&map[string]*answer{})
	c.releases[id] = rel
	return rel, nil
}

// capgoAnswerBody returns the update answer of rel for this request, with
// its compressed forms: the variant is whether it lists files, and the
// base URL (fixed by PublicURL, else read from the request's headers,
// which key the variant as they came, so a hit reads no header twice and
// builds nothing).
func (s *Server) capgoAnswerBody(ctx *fasthttp.RequestCtx, rel *capgoRelease, withManifest bool) (*answer, error) {
	var kb [256]byte
	k := append(kb[:0], b2i(withManifest))
	if s.capgo.cfg.PublicURL == "" {
		k = append(k, b2i(ctx.IsTLS()))
		k = append(k, ctx.Request.Header.Peek("X-Forwarded-Proto")...)
		k = append(k, 0)
		k = append(k, ctx.Request.Header.Peek("X-Forwarded-Host")...)
		k = append(k, 0)
		k = append(k, ctx.Host()...)
	}
	if a, ok := (*rel.answers.Load())[string(k)]; ok {
		return a, nil
	}
	base, fromHeaders := s.baseURL(ctx)
	rctx, cancel := context.WithTimeout(s.life, 10*time.Second)
	m, err := s.fullManifest(rctx, rel.me)
	cancel()
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(capgoAnswer(base, m, rel.meta, withManifest))
	if err != nil {
		return nil, err
	}
	a := &answer{body: body}
	if !fromHeaders {
		// Built from the listener's address: not what the key says.
		return a, nil
	}
	rel.mu.Lock()
	defer rel.mu.Unlock()
	old := *rel.answers.Load()
	if len(old) >= maxAnswerVariants {
		return a, nil
	}
	next := make(map[string]*answer, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[string(k)] = a
	rel.answers.Store(&next)
	return a, nil
}

// capgoAnswer builds the update answer for a release. Plain releases point
// url at the full zip (a blob: Range, ETag, Content-Length) and list every
// file, Brotli-wrapped from 8 KiB, so the plugin fetches only the files it
// does not hold. Encrypted releases are served as the encrypted zip only.
func capgoAnswer(base string, m *release.Manifest, meta *capgo.ReleaseMeta, withManifest bool) *capgo.UpdateAnswer {
	if meta.Encrypted != nil {
		return &capgo.UpdateAnswer{
			Version: m.Version, URL: base + "/v1/blobs/" + meta.EncryptedZip.String(),
			Checksum: meta.Encrypted.Checksum, SessionKey: meta.Encrypted.SessionKey,
		}
	}
	a := &capgo.UpdateAnswer{Version: m.Version, URL: base + "/v1/blobs/" + meta.Zip.String(), Checksum: meta.Zip.String()}
	if withManifest {
		paths := make([]string, len(m.Files))
		for i, f := range m.Files {
			paths[i] = f.Path
		}
		prefix := capgo.FolderPrefix(paths)
		a.Manifest = make([]capgo.ManifestEntry, 0, len(m.Files))
		for _, f := range m.Files {
			e := capgo.ManifestEntry{FileName: strings.TrimPrefix(f.Path, prefix), FileHash: f.SHA256.String(), DownloadURL: base + "/v1/blobs/" + f.SHA256.String()}
			if capgo.WantsBrotli(f.Path, f.Size) {
				e.FileName += ".br"
				e.DownloadURL = base + "/capgo/br/" + f.SHA256.String()
			}
			a.Manifest = append(a.Manifest, e)
		}
	}
	return a
}

// handleCapgoBrotli serves GET /capgo/br/{file sha256}: the file's Brotli
// payload, built once by the origin and cached like any blob.
func (s *Server) handleCapgoBrotli(ctx *fasthttp.RequestCtx, hash []byte) {
	if _, ok := parseHashBytes(hash); !ok {
		fail(ctx, fasthttp.StatusBadRequest, "file hash: "+release.ErrBadHash.Error())
		return
	}
	// The origin's name for it, built on the stack.
	var nb [80]byte
	e, err := s.ensureAlias(append(append(nb[:0], "/v1/capgo/br/"...), hash...))
	if err != nil {
		s.failFetch(ctx, err)
		return
	}
	s.serveBlob(ctx, e)
}

// releaseByVersion finds the release of an app by version name among the
// channels the edge holds (rollout and stable releases).
func (s *Server) releaseByVersion(app, channel, version string) (release.Hash, bool) {
	if cs, ok := s.state.get(app + "/" + channel); ok {
		if h := currentRelease(cs.ch, version); !h.IsZero() {
			return h, true
		}
	}
	for _, cs := range *s.state.cur.Load() {
		if cs.ch.App == app {
			if h := currentRelease(cs.ch, version); !h.IsZero() {
				return h, true
			}
		}
	}
	return release.Hash{}, false
}

// handleCapgoStats takes POST /stats: one event object or an array. Every
// action is counted; update_fail stops the release being offered to that
// device (at this edge); installs, failures, reverts and downloads go to
// the event sink as Capstan device events.
func (s *Server) handleCapgoStats(ctx *fasthttp.RequestCtx) {
	stats, dropped, err := capgo.ParseStats(ctx.PostBody())
	if err != nil {
		// 4xx (not 408/429) makes the plugin drop the batch instead of
		// retrying a body that will never parse.
		writeCapgoJSON(ctx, fasthttp.StatusBadRequest, map[string]string{"error": "invalid_stats", "message": err.Error()})
		return
	}
	var evs []capgo.Event
	for i := range stats {
		st := &stats[i]
		action := string(st.Action)
		s.capgo.stats.WithLabelValues(capgo.MetricAction(action)).Inc()
		app, device := string(st.AppID), string(st.DeviceID)
		version, _, _ := strings.Cut(string(st.VersionName), ":")
		ev := capgo.EventAction(action)
		if ev == "" || !s.appKnown(app) {
			continue
		}
		channel := string(st.DefaultChannel)
		if channel == "" {
			channel = s.capgoDefaultChannel(app, s.capgoAppConfig(app))
		}
		id, _ := s.releaseByVersion(app, channel, version)
		if action == "update_fail" && !id.IsZero() {
			s.capgo.failed.set(failedKey{app, device, id}, struct{}{})
		}
		if release.ValidateChannel(channel) != nil {
			continue
		}
		// One download counts once per device and version, whichever mix
		// of the three completion stats the plugin version sends.
		if ev == capgo.EventDownload && !s.capgo.downloads.addNew(downloadKey{app, device, version}, struct{}{}) {
			continue
		}
		e := capgo.Event{Action: ev, App: app, Channel: channel, Device: device, Release: id, Version: version, Time: st.Timestamp, Error: errorOf(ev, action)}
		if ev == capgo.EventFail {
			e.Cause = capgo.FailCause(action)
		}
		if ev == capgo.EventFail || ev == capgo.EventRevert {
			e.Addr = capstanstats.AddrOf(connAddr(ctx))
		}
		evs = append(evs, e)
	}
	if len(evs) > 0 {
		if s.capgo.ownSink {
			s.pushCapgoEvents(ctx.ConnID(), evs)
		} else {
			s.capgo.sink.DeviceEvents(evs)
		}
	}
	writeCapgoJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "ok", "accepted": len(stats), "dropped": dropped})
}

func errorOf(ev, action string) string {
	if ev == capgo.EventFail || ev == capgo.EventRevert {
		return action
	}
	return ""
}

// handleCapgoChannel serves /channel_self: POST sets (validates) the
// device's channel, PUT reports it, GET lists the channels devices may
// choose, DELETE clears a server-side override.
func (s *Server) handleCapgoChannel(ctx *fasthttp.RequestCtx) {
	if ctx.IsGet() {
		s.handleCapgoListChannels(ctx)
		return
	}
	in, err := capgo.ParseInfo(ctx.PostBody())
	if err != nil {
		writeCapgoJSON(ctx, fasthttp.StatusBadRequest, map[string]string{"error": "missing_info", "message": err.Error()})
		return
	}
	app, device := string(in.AppID), string(in.DeviceID)
	known := s.appKnown(app)
	var cfg *capgo.AppConfig
	if known {
		cfg = s.capgoAppConfig(app)
	}
	def := s.capgoDefaultChannel(app, cfg)
	key := deviceKey{app, device}
	switch {
	case ctx.IsPost():
		name := string(in.Channel)
		if name == "" {
			writeCapgoJSON(ctx, fasthttp.StatusOK, map[string]string{"error": "missing_channel", "message": "channel is required"})
			return
		}
		cs, ok := s.state.get(app + "/" + name)
		switch {
		case !known || !ok:
			writeCapgoJSON(ctx, fasthttp.StatusOK, map[string]string{"error": "channel_not_found", "message": "app " + app + " has no channel " + name})
		case name == def:
			// Choosing the default channel is leaving any override: the
			// plugin clears its stored channel on "unset".
			s.capgo.overrides.remove(key)
			writeCapgoJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "ok", "unset": true})
		case !s.capgoSelfAssignable(cs, cfg):
			writeCapgoJSON(ctx, fasthttp.StatusOK, map[string]string{"error": "channel_self_set_not_allowed", "message": "channel " + name + " does not let devices choose it (capstan channel capgo --self-assign)"})
		default:
			s.capgo.overrides.set(key, name)
			writeCapgoJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "ok", "allowSet": true})
		}
	case ctx.IsPut():
		if !known {
			writeCapgoJSON(ctx, fasthttp.StatusBadRequest, map[string]string{"error": "channel_not_found", "message": "app " + app + " has no channel on this server"})
			return
		}
		cs, name := s.capgoChannel(in, cfg)
		if cs == nil {
			writeCapgoJSON(ctx, fasthttp.StatusBadRequest, map[string]string{"error": "channel_not_found", "message": "app " + app + " has no channel " + name})
			return
		}
		status := "default"
		if name != def {
			status = "override"
		}
		writeCapgoJSON(ctx, fasthttp.StatusOK, map[string]any{"channel": name, "status": status, "allowSet": true})
	case ctx.IsDelete():
		s.capgo.overrides.remove(key)
		writeCapgoJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ok"})
	default:
		writeCapgoJSON(ctx, fasthttp.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed", "message": "use GET, POST, PUT or DELETE"})
	}
}

// handleCapgoListChannels answers GET /channel_self (listChannels): a bare
// array of the channels devices may choose, the default one included.
func (s *Server) handleCapgoListChannels(ctx *fasthttp.RequestCtx) {
	q, err := url.ParseQuery(string(ctx.QueryArgs().QueryString()))
	if err != nil {
		writeCapgoJSON(ctx, fasthttp.StatusBadRequest, map[string]string{"error": "missing_info", "message": err.Error()})
		return
	}
	in, err := capgo.InfoFromQuery(q)
	if err != nil {
		writeCapgoJSON(ctx, fasthttp.StatusBadRequest, map[string]string{"error": "missing_info", "message": err.Error()})
		return
	}
	app := string(in.AppID)
	out := []capgo.ChannelListItem{}
	if s.appKnown(app) {
		cfg := s.capgoAppConfig(app)
		def := s.capgoDefaultChannel(app, cfg)
		for _, cs := range *s.state.cur.Load() {
			if cs.ch.App != app {
				continue
			}
			public := cs.ch.Channel == def
			self := s.capgoSelfAssignable(cs, cfg)
			if public || self {
				out = append(out, capgo.ChannelListItem{ID: capgo.ChannelID(app, cs.ch.Channel), Name: cs.ch.Channel, Public: public, AllowSelfSet: self})
			}
		}
		sortChannels(out)
	}
	writeCapgoJSON(ctx, fasthttp.StatusOK, out)
}
