package edge

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/internal/kv"
	"github.com/capstan-ota/capstan/internal/lifetime"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/stats"
	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"
)

// Config configures an edge. Zero values mean the documented defaults.
type Config struct {
	// DataDir holds the cached blobs (one file each, under blobs/) and the
	// edge's Badger store (channel records, manifests, patch names).
	DataDir string
	// CacheSize caps the bytes of blobs kept on disk (default 1 GiB).
	// The least recently used blobs are evicted beyond it.
	CacheSize int64
	// MemCacheSize is the memory budget for the hottest small blobs
	// (default 32 MiB); MemCacheObject is the largest blob kept there
	// (default 1 MiB).
	MemCacheSize   int64
	MemCacheObject int64
	// Origins returns the base URLs of the origins the operator named,
	// trusted as given, in the order to try them. It is called on every
	// miss.
	Origins func() []string
	// ClusterOrigins returns the URLs gossip members announce as origins.
	// The edge uses one only after it showed an origin statement signed
	// by OriginKeys naming that URL (see origins.go); nil means none.
	ClusterOrigins func() []string
	// FetchTimeout bounds one pull from an origin (default 2 minutes);
	// ConnectTimeout bounds reaching it (default 3 s), so that a dead
	// origin costs a device a fast 503, never a hang.
	FetchTimeout   time.Duration
	ConnectTimeout time.Duration
	// Fleet lists the fleet's alive edges (this one included) for
	// GET /v1/edges; it is called at most once a second. Nil means the
	// edge knows no fleet and answers an empty list.
	Fleet func() []Peer
	// Region is this edge's region label, as announced in gossip; empty
	// means none.
	Region string
	// OriginKeys, if set, are the origin public keys whose signature every
	// channel record must carry before the edge stores or serves it (the
	// edge follows the origin's key rotations from there). Empty means
	// the edge takes any well-formed record and leaves checking to devices.
	OriginKeys []release.PublicKey
	// InsecureGossip says the edge's gossip runs without the cluster key
	// (--insecure-gossip): /healthz then says so, so that the operator
	// sees it wherever health is watched.
	InsecureGossip bool
	// RateLimit bounds requests per client address on device endpoints;
	// the zero value means DefaultRateLimit().
	RateLimit RateLimitConfig
	// PatchPullsPerMinute and PatchPullBurst bound, per client address,
	// the patches a device may ask for that the edge does not hold, each
	// of which costs an origin pull and maybe a build (default 2 a
	// minute, 5 at once; negative rate: no limit). Loopback is exempt
	// unless RateLimit.LimitLoopback.
	PatchPullsPerMinute float64
	PatchPullBurst      int
	// ConnsPerAddress caps the open connections of one client address
	// (IPv4, or IPv6 /64); more are closed at once with a 429 (default
	// DefaultConnsPerAddress; negative: no cap). Loopback clients are
	// exempt unless RateLimit.LimitLoopback. MaxConns caps all open
	// connections (default DefaultMaxConns); beyond it fasthttp answers
	// 503 and closes.
	ConnsPerAddress int
	MaxConns        int
	// ReadTimeout bounds reading one request, headers and body, so slow
	// clients (slowloris) cannot hold connections open (default 30 s).
	// IdleTimeout closes keep-alive connections idle this long (default
	// 2 minutes).
	ReadTimeout time.Duration
	IdleTimeout time.Duration
	// EventQueue bounds the device events held for forwarding (default
	// 20000, spread over 16 shards); past it new events are dropped and
	// counted. EventFlush is how often they
	// are forwarded to an origin (default 2 s). EventsPerSecond limits
	// POST /v1/events per client address (default 100, generous because
	// carrier NAT puts many devices behind one address; negative: no
	// limit). EventsToken is sent to the origin as a bearer token.
	EventQueue      int
	EventFlush      time.Duration
	EventsPerSecond int
	EventsToken     string
	// EventsTokenFunc, if set, returns the token to send instead of
	// EventsToken, each time (it follows a cluster key rotation).
	EventsTokenFunc func() string
	// Capgo configures the endpoints for @capgo/capacitor-updater devices.
	Capgo CapgoConfig
	// URL is the base URL devices use to reach this edge. When set, the
	// edge reports its health and figures to every origin each
	// ReportEvery (default 10 s; negative: never), for the console's
	// fleet view.
	URL         string
	ReportEvery time.Duration
	// PollEvery is how often a serving edge pulls the whole state of an
	// origin (GET /v1/state), first when Serve starts: the bootstrap, and
	// the last resort behind gossip (default 1 minute; negative: never).
	PollEvery time.Duration
	// Join, if set, joins the edge's cluster (a gossip node whose records
	// the caller hands to Apply) and returns what leaves it. A serving
	// edge calls it, and again every few seconds until it succeeds,
	// serving what it holds meanwhile; Shutdown calls leave first.
	Join func(ctx context.Context) (leave func(context.Context), err error)
	// Logger receives the edge's log; nil discards it.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults for a data folder.
func DefaultConfig(dataDir string) Config {
	return Config{
		DataDir:        dataDir,
		CacheSize:      1 << 30,
		MemCacheSize:   32 << 20,
		MemCacheObject: 1 << 20,
		FetchTimeout:   2 * time.Minute,
		ConnectTimeout: 3 * time.Second,
		ReadTimeout:    30 * time.Second,
		IdleTimeout:    2 * time.Minute,
	}
}

// Server is an edge node. Its methods are safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	db     *badger.DB
	cache  *blobCache
	mem    *memCache
	state  *state
	client *http.Client
	flight singleflight.Group
	reg    *prometheus.Registry
	m      *metrics
	srv    *fasthttp.Server // guarded by srvMu
	fleet  fleetCache
	trust  trustState
	capgo  *capgoState

	originChecks originChecks // statement checks of announced origins
	patchLimit   *ipLimiter   // uncached patch pulls per client address
	pulling      sync.Map     // alias path → struct{}: pulls under way

	// manifests holds the release documents fetched, read by every check
	// that offers an update.
	manifests *cowMap[release.Hash, *manifestEntry]
	// apps is the per-app index of the records (appIndex).
	apps atomic.Pointer[appIndex]
	// offers memoises the record's rules per kind of device (checkOffer).
	offers offerMemo

	synced   chan struct{}
	syncOnce sync.Once

	events  *eventQueue
	evLimit *windowLimiter
	flushMu sync.Mutex    // one forward of events at a time; guards pending
	pending []stats.Event // a batch no origin took yet

	acceptLogged atomic.Int64 // unix nanos of the last failed-accept log line

	srvMu sync.Mutex // guards srv, shut: Serve and Shutdown run in different goroutines
	shut  bool

	started time.Time // for the fleet report

	// life is the edge's lifetime, cancelled by Shutdown: every
	// background task and every pull from an origin derives from it.
	life     context.Context // lt's context
	lt       *lifetime.Lifetime
	netOnce  sync.Once  // Serve starts the cluster join and the polling once
	leaveMu  sync.Mutex // guards leave, left
	leave    func(context.Context)
	left     bool // Shutdown has taken leave: a late join leaves at once
	shutOnce sync.Once
	shutErr  error
}

// manifestEntry is a release the edge holds: its signed envelope (what
// check answers carry), the document it signs, and, once loaded, the full
// file list (Capgo answers list every file).
type manifestEntry struct {
	id      release.Hash
	envJSON []byte
	ans     answer // envJSON as an answer to GET /v1/releases/{id}
	doc     *release.Doc
	// full is the manifest with every file: set at once for format 1
	// releases, loaded on first need from the file list blob for format 2.
	full atomic.Pointer[release.Manifest]
}

// New opens an edge's cache.
func New(cfg Config) (*Server, error) {
	d := DefaultConfig(cfg.DataDir)
	if cfg.DataDir == "" {
		return nil, errors.New("edge: DataDir is required")
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = d.CacheSize
	}
	if cfg.MemCacheSize == 0 {
		cfg.MemCacheSize = d.MemCacheSize
	}
	if cfg.MemCacheObject <= 0 {
		cfg.MemCacheObject = d.MemCacheObject
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = d.FetchTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = d.ConnectTimeout
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = d.ReadTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = d.IdleTimeout
	}
	if cfg.ConnsPerAddress == 0 {
		cfg.ConnsPerAddress = DefaultConnsPerAddress
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.Origins == nil {
		cfg.Origins = func() []string { return nil }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.EventQueue <= 0 {
		cfg.EventQueue = defaultEventQueue
	}
	if cfg.EventFlush <= 0 {
		cfg.EventFlush = defaultEventFlush
	}
	if cfg.EventsPerSecond == 0 {
		cfg.EventsPerSecond = defaultEventsPerSec
	}
	if cfg.ReportEvery == 0 {
		cfg.ReportEvery = defaultReportEvery
	}
	if cfg.PollEvery == 0 {
		cfg.PollEvery = defaultPollEvery
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("edge: create data folder: %w", err)
	}
	db, err := kv.Open(kv.Options{Dir: filepath.Join(cfg.DataDir, "cache"), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	cache, err := newBlobCache(filepath.Join(cfg.DataDir, "blobs"), db, cfg.CacheSize, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: log, db: db, cache: cache,
		mem:       newMemCache(cfg.MemCacheSize, cfg.MemCacheObject),
		state:     newState(),
		manifests: newCowMap[release.Hash, *manifestEntry](hashKey),
		synced:    make(chan struct{}),
		started:   cfg.Now(),
		events:    newEventQueue(cfg.EventQueue),
		evLimit:   newWindowLimiter(cfg.EventsPerSecond, maxLimiterClients),
		client: &http.Client{Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: cfg.ConnectTimeout}).DialContext,
			ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConnsPerHost:   16,
		}},
	}
	s.lt = lifetime.New()
	s.life = s.lt.Context()
	s.offers.seed = maphash.MakeSeed()
	s.reg = prometheus.NewRegistry()
	s.m = newMetrics(s.reg, s)
	s.initTrust()
	if cfg.PatchPullsPerMinute >= 0 {
		perMin, burst := cfg.PatchPullsPerMinute, cfg.PatchPullBurst
		if perMin == 0 {
			perMin = 2
		}
		if burst <= 0 {
			burst = 5
		}
		s.patchLimit = newIPLimiter(RateLimitConfig{PerSecond: perMin / 60, Burst: burst, Clients: 65536, LimitLoopback: cfg.RateLimit.LimitLoopback}, cfg.Now)
	}
	s.capgo = newCapgoState(cfg.Capgo, s.reg, capgo.EventSinkFunc(func(evs []capgo.Event) { s.pushCapgoEvents(0, evs) }))
	if err := s.loadState(); err != nil {
		db.Close()
		return nil, err
	}
	s.background(func(ctx context.Context) { cache.gcLoop(ctx, time.Minute) })
	s.background(s.eventLoop)
	if cfg.URL != "" && cfg.ReportEvery > 0 {
		s.background(s.reportLoop)
	}
	return s, nil
}

// background runs task for the edge's lifetime: ctx is cancelled by
// Shutdown, which waits for task to return.
func (s *Server) background(task func(ctx context.Context)) { s.lt.Go(task) }

// Registry is the edge's Prometheus registry, for adding collectors such
// as gossip membership.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// MarkSynced records that the edge has received the fleet's state (from a
// gossip push/pull or an origin snapshot), so /healthz reports ready.
func (s *Server) MarkSynced() { s.syncOnce.Do(func() { close(s.synced) }) }

func (s *Server) isSynced() bool {
	select {
	case <-s.synced:
		return true
	default:
		return false
	}
}

// Apply takes a signed channel record (from gossip or an origin snapshot).
// Records not newer than the one held are ignored, whatever order they
// arrive in. It reports whether the record was stored.
func (s *Server) Apply(env *release.Envelope) bool {
	ch, err := env.Channel()
	if err != nil {
		s.log.Warn("ignoring invalid channel record", "err", err)
		return false
	}
	verified, err := s.verifyRecord(env, ch)
	if err != nil {
		s.log.Warn("ignoring channel record", "channel", ch.Key(), "seq", ch.Seq, "err", err)
		return false
	}
	if !s.state.apply(env, ch, verified) {
		return false
	}
	s.forgetRotations()
	s.persistRecord(ch.Key(), env)
	s.log.Info("channel record", "channel", ch.Key(), "seq", ch.Seq, "version", ch.Release.Version, "rollout_bps", ch.RolloutBPS)
	// Warm the manifests so the first check after a release needs no origin
	// round trip.
	for _, ref := range []*release.Ref{&ch.Release, ch.Stable} {
		if ref == nil || ref.ID.IsZero() {
			continue
		}
		id := ref.ID
		s.background(func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
			defer cancel()
			if _, err := s.manifest(ctx, id); err != nil && ctx.Err() == nil {
				s.log.Warn("prefetch manifest", "id", id, "err", err)
			}
		})
	}
	return true
}

// Records returns the newest record of every channel the edge holds.
func (s *Server) Records() []*release.Envelope {
	var out []*release.Envelope
	for _, cs := range s.state.all() {
		out = append(out, cs.env)
	}
	return out
}

// Serve serves HTTP on ln until Shutdown, then returns nil. Accept errors
// that pass (out of descriptors) are retried with backoff; if serving
// stops for any other reason Serve returns the error, and the caller
// should stop the process (capstan edge exits non-zero). It may run in its
// own goroutine while Shutdown is called from another.
func (s *Server) Serve(ln net.Listener) error {
	srv := s.newHTTPServer()
	guard := s.guardListener(ln)
	srv.ConnState = func(c net.Conn, st fasthttp.ConnState) {
		if st == fasthttp.StateClosed || st == fasthttp.StateHijacked {
			guard.connClosed(c)
		}
	}
	s.srvMu.Lock()
	if s.shut {
		s.srvMu.Unlock()
		ln.Close()
		return errors.New("edge: serve after shutdown")
	}
	s.srv = srv
	s.srvMu.Unlock()
	s.netOnce.Do(s.startNetwork)
	err := srv.Serve(guard)
	s.srvMu.Lock()
	shut := s.shut
	s.srvMu.Unlock()
	if shut {
		return nil
	}
	// The listener failed in a way retrying cannot mend (or was closed
	// by someone else): the edge answers nothing any more. Say so, so
	// that the process exits and a supervisor restarts it, rather than
	// linger in gossip, listed in /v1/edges.
	if err == nil {
		err = errors.New("listener closed")
	}
	return fmt.Errorf("edge: serving stopped: %w", err)
}

// Shutdown ends the edge's lifetime: it leaves the cluster, stops serving
// (waiting for requests in flight), cancels the context every background
// task derives from and waits for them, then forwards the events still
// queued and closes the cache — all within ctx: past its deadline it stops
// waiting. Later calls return the first call's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() { s.shutErr = s.shutdown(ctx) })
	return s.shutErr
}

func (s *Server) shutdown(ctx context.Context) error {
	s.leaveMu.Lock()
	leave := s.leave
	s.leave, s.left = nil, true
	s.leaveMu.Unlock()
	if leave != nil {
		leave(ctx)
	}
	var errs []error
	s.srvMu.Lock()
	srv := s.srv
	s.shut = true
	s.srvMu.Unlock()
	if srv != nil {
		errs = append(errs, srv.ShutdownWithContext(ctx))
	}
	if err := s.lt.Stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("edge: shutdown: %w", err))
	} else {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := s.FlushEvents(fctx); err != nil {
			s.log.Warn("events lost at shutdown", "queued", s.events.len(), "err", err)
		}
		cancel()
	}
	errs = append(errs, s.db.Close())
	return errors.Join(errs...)
}
