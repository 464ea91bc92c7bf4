package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/release"
	"github.com/dgraph-io/badger/v4"
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
// concurrent use.
type capgoState struct {
	cfg       CapgoConfig
	limiter   *capgo.Limiter
	failed    *capgo.LRU[string, struct{}]       // app|device|release id
	overrides *capgo.LRU[string, string]         // app|device → channel
	answers   *capgo.LRU[string, *answer]        // encoded update answers and their compressed forms
	absent    *capgo.LRU[release.Hash, struct{}] // releases with no Capgo download
	sink      capgo.EventSink

	mu    sync.Mutex // guards apps, metas
	apps  map[string]*capgoApp
	metas map[release.Hash]*capgo.ReleaseMeta

	updates *prometheus.CounterVec
	stats   *prometheus.CounterVec
}

type capgoApp struct {
	cfg        *capgo.AppConfig
	fetched    time.Time
	refreshing bool
}

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
		cfg:       cfg,
		limiter:   &capgo.Limiter{PerWindow: cfg.RequestsPerSecond, Window: time.Second},
		failed:    capgo.NewLRU[string, struct{}](cfg.MaxDevices),
		overrides: capgo.NewLRU[string, string](cfg.MaxDevices),
		answers:   capgo.NewLRU[string, *answer](256),
		absent:    capgo.NewLRU[release.Hash, struct{}](1024),
		sink:      cfg.Events,
		apps:      map[string]*capgoApp{},
		metas:     map[release.Hash]*capgo.ReleaseMeta{},
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstan_edge_capgo_updates_total", Help: "Answers to Capgo update checks, by result (update or the error code).",
		}, []string{"result"}),
		stats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstan_edge_capgo_stats_total", Help: "Stats reported by Capgo devices, by plugin action (unknown actions as other).",
		}, []string{"action"}),
	}
	if c.sink == nil {
		c.sink = events
	}
	reg.MustRegister(c.updates, c.stats)
	return c
}

// routeCapgo serves the Capgo device endpoints. It reports false when path
// is not one of them.
func (s *Server) routeCapgo(ctx *fasthttp.RequestCtx, path string) (string, bool) {
	if s.capgo == nil || s.capgo.cfg.Disabled {
		return "", false
	}
	var route string
	switch {
	case path == "/updates" && ctx.IsPost():
		route = "capgo_updates"
	case path == "/stats" && ctx.IsPost():
		route = "capgo_stats"
	case path == "/channel_self":
		route = "capgo_channel"
	case strings.HasPrefix(path, "/capgo/br/") && (ctx.IsGet() || ctx.IsHead()):
		s.handleCapgoBrotli(ctx, path[len("/capgo/br/"):])
		return "capgo_br", true
	default:
		return "", false
	}
	if ok, retry := s.capgo.limiter.Allow(clientAddr(ctx), s.cfg.Now()); !ok {
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
func clientAddr(ctx *fasthttp.RequestCtx) string {
	if xff := ctx.Request.Header.Peek("X-Forwarded-For"); len(xff) > 0 {
		s := string(xff)
		if i := strings.LastIndexByte(s, ','); i >= 0 {
			s = s[i+1:]
		}
		if s = strings.TrimSpace(s); s != "" && len(s) <= 64 {
			return s
		}
	}
	return ctx.RemoteIP().String()
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
	s.capgo.updates.WithLabelValues(r.Error).Inc()
	writeCapgoJSON(ctx, fasthttp.StatusOK, r)
}

// baseURL is the scheme and host devices reach this edge at.
func (s *Server) baseURL(ctx *fasthttp.RequestCtx) string {
	if s.capgo.cfg.PublicURL != "" {
		return s.capgo.cfg.PublicURL
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
	if !validHost(host) {
		host = ctx.LocalAddr().String()
	}
	return scheme + "://" + host
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
func (s *Server) appKnown(app string) bool {
	for _, cs := range *s.state.cur.Load() {
		if cs.ch.App == app {
			return true
		}
	}
	return false
}

// capgoAppConfig returns an app's Capgo settings: from memory while fresh,
// refreshed in the background when stale, fetched (briefly) on first use.
// When no origin answers, the defaults are used and retried soon.
func (s *Server) capgoAppConfig(app string) *capgo.AppConfig {
	c := s.capgo
	now := s.cfg.Now()
	c.mu.Lock()
	e, ok := c.apps[app]
	if ok && (now.Sub(e.fetched) < c.cfg.ConfigTTL || e.refreshing) {
		c.mu.Unlock()
		return e.cfg
	}
	if ok {
		e.refreshing = true
		c.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.fetchCapgoConfig(app, e.cfg)
		}()
		return e.cfg
	}
	c.mu.Unlock()
	return s.fetchCapgoConfig(app, &capgo.AppConfig{})
}

func (s *Server) fetchCapgoConfig(app string, fallback *capgo.AppConfig) *capgo.AppConfig {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
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
	s.capgo.mu.Lock()
	s.capgo.apps[app] = &capgoApp{cfg: cfg, fetched: fetched}
	s.capgo.mu.Unlock()
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
	def := s.capgoDefaultChannel(app, cfg)
	name := string(in.DefaultChannel)
	if name == "" {
		name, _ = s.capgo.overrides.Get(app + "|" + string(in.DeviceID))
	}
	if name != "" && name != def {
		if cs, ok := s.state.get(app + "/" + name); ok && s.capgoSelfAssignable(cs, cfg) {
			return cs, name
		}
	}
	cs, ok := s.state.get(app + "/" + def)
	if !ok {
		return nil, def
	}
	return cs, def
}

// capgoDefaultChannel is the app's default channel name.
func (s *Server) capgoDefaultChannel(app string, cfg *capgo.AppConfig) string {
	if cfg != nil && cfg.DefaultChannel != "" {
		return cfg.DefaultChannel
	}
	if name := defaultChannelOf(s, app); name != "" {
		return name
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

// handleCapgoUpdates answers POST /updates, the plugin's update check.
func (s *Server) handleCapgoUpdates(ctx *fasthttp.RequestCtx) {
	in, err := capgo.ParseInfo(ctx.PostBody())
	if err != nil {
		s.capgoRefuse(ctx, &capgo.Refusal{Error: capgo.CodeMissingInfo, Message: err.Error(), Kind: capgo.KindFailed})
		return
	}
	app := string(in.AppID)
	if !s.appKnown(app) {
		s.capgoRefuse(ctx, &capgo.Refusal{Error: capgo.CodeNoChannel, Message: "app " + app + " has no channel on this server", Kind: capgo.KindFailed})
		return
	}
	cfg := s.capgoAppConfig(app)
	cs, chName := s.capgoChannel(in, cfg)
	if cs == nil {
		s.capgoRefuse(ctx, &capgo.Refusal{Error: capgo.CodeNoChannel, Message: "app " + app + " has no channel " + chName, Kind: capgo.KindFailed})
		return
	}
	ch := cs.ch
	current := currentRelease(ch, string(in.VersionName))
	check := capgo.Event{Action: capgo.EventCheck, App: app, Channel: ch.Channel, Device: string(in.DeviceID), Release: current}
	if !current.IsZero() {
		check.Version = string(in.VersionName)
	}
	s.capgo.sink.DeviceEvents([]capgo.Event{check})
	target, ok := ch.Target(string(in.DeviceID), current)
	if !ok || !target.ID.IsZero() && target.Version == string(in.VersionName) {
		s.capgoRefuse(ctx, &capgo.Refusal{Error: capgo.CodeNoNewVersion, Message: "No new version available", Kind: capgo.KindUpToDate})
		return
	}
	t := capgo.Target{Ref: target}
	var me *manifestEntry
	var meta *capgo.ReleaseMeta
	if !target.ID.IsZero() {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		me, err = s.manifest(rctx, target.ID)
		if err == nil {
			meta, err = s.capgoMeta(rctx, target.ID)
		}
		cancel()
		if errors.Is(err, ErrNotFound) {
			// The origin has no Capgo download for it (a release encrypted
			// for Capstan devices only): nothing a retry would change.
			s.capgoRefuse(ctx, &capgo.Refusal{Error: capgo.CodeNoBundle, Message: "release " + target.Version + " has no download for Capgo devices (encrypted for Capstan devices only; upload with --capgo-key)", Kind: capgo.KindBlocked})
			return
		}
		if err != nil {
			s.log.Warn("capgo check", "release", target.ID, "err", err)
			s.capgoRefuse(ctx, &capgo.Refusal{Error: capgo.CodeNoBundle, Message: "release " + target.Version + " is not available on this edge right now; retry later", Kind: capgo.KindFailed})
			return
		}
		t.MinNative = me.doc.MinNative
		if meta.Encrypted != nil {
			t.KeyID = meta.Encrypted.KeyID
		}
		_, t.Failed = s.capgo.failed.Get(app + "|" + string(in.DeviceID) + "|" + target.ID.String())
	}
	rules := capgo.Rules{Channel: ch.Channel, Flags: cfg.Flags(ch.Channel), BlockMajor: blockMajor(ch)}
	r := capgo.Check(in, t, rules)
	if r == nil || r.Error == capgo.CodeAlreadyOnBuiltin {
		if cr := capstanOfferCheck(ch, in, target); cr != nil {
			r = cr
		}
	}
	if r != nil {
		s.capgoRefuse(ctx, r)
		return
	}
	withManifest := meta.Encrypted == nil && capgo.SupportsManifest(string(in.PluginVersion))
	base := s.baseURL(ctx)
	key := target.ID.String() + "|" + base + "|" + strconv.FormatBool(withManifest)
	a, ok := s.capgo.answers.Get(key)
	if !ok {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m, err := s.fullManifest(rctx, me)
		cancel()
		var body []byte
		if err == nil {
			body, err = json.Marshal(capgoAnswer(base, m, meta, withManifest))
		}
		if err != nil {
			s.capgoRefuse(ctx, &capgo.Refusal{Error: capgo.CodeServerError, Message: err.Error(), Kind: capgo.KindFailed})
			return
		}
		a = &answer{body: body}
		s.capgo.answers.Add(key, a)
	}
	s.capgo.updates.WithLabelValues("update").Inc()
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	// Both plugins' HTTP stacks (OkHttp, URLSession) accept gzip and
	// decode it themselves.
	writeEncoded(ctx, a)
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
func (s *Server) handleCapgoBrotli(ctx *fasthttp.RequestCtx, hashStr string) {
	if _, err := release.ParseHash(hashStr); err != nil {
		fail(ctx, fasthttp.StatusBadRequest, "file hash: "+err.Error())
		return
	}
	h, size, err := s.ensureAlias("/v1/capgo/br/" + hashStr)
	if err != nil {
		s.failFetch(ctx, err)
		return
	}
	s.serveBlob(ctx, h, size)
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
			s.capgo.failed.Add(app+"|"+device+"|"+id.String(), struct{}{})
		}
		if release.ValidateChannel(channel) != nil {
			continue
		}
		e := capgo.Event{Action: ev, App: app, Channel: channel, Device: device, Release: id, Version: version, Time: st.Timestamp, Error: errorOf(ev, action)}
		if ev == capgo.EventFail {
			e.Cause = capgo.FailCause(action)
		}
		evs = append(evs, e)
	}
	if len(evs) > 0 {
		s.capgo.sink.DeviceEvents(evs)
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
	key := app + "|" + device
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
			s.capgo.overrides.Remove(key)
			writeCapgoJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "ok", "unset": true})
		case !s.capgoSelfAssignable(cs, cfg):
			writeCapgoJSON(ctx, fasthttp.StatusOK, map[string]string{"error": "channel_self_set_not_allowed", "message": "channel " + name + " does not let devices choose it (capstan channel capgo --self-assign)"})
		default:
			s.capgo.overrides.Add(key, name)
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
		s.capgo.overrides.Remove(key)
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
