package origin

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstan-ota/capstan/delta"
	"github.com/capstan-ota/capstan/internal/bundle"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/origin/store/badgerstore"
	"github.com/capstan-ota/capstan/origin/store/fileblobs"
	"github.com/capstan-ota/capstan/release"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// Publisher spreads signed channel records to the fleet (the gossip node).
type Publisher interface {
	Publish(env *release.Envelope) error
}

// PublisherFunc adapts a function to Publisher.
type PublisherFunc func(env *release.Envelope) error

// Publish calls f.
func (f PublisherFunc) Publish(env *release.Envelope) error { return f(env) }

// Config configures an origin. Zero values mean the documented defaults.
type Config struct {
	// DataDir holds the database, blobs and the origin's signing key; with
	// Records, Blobs and SigningKey set it holds only temp files.
	DataDir string
	// Records, if set, holds the origin's records instead of the Badger
	// database under DataDir: PostgreSQL shared by several origins
	// (store/pgstore). The caller opens and closes it.
	Records store.Records
	// Blobs, if set, holds the origin's blobs instead of the files under
	// DataDir: an S3-compatible bucket shared by several origins
	// (store/s3blobs). The caller opens it.
	Blobs store.Blobs
	// SigningKey, if set, signs channel records instead of the key in
	// DataDir/origin.key. Origins that share Records must share this key.
	SigningKey ed25519.PrivateKey
	// PreviousSigningKey, with SigningKey, is the key SigningKey replaces:
	// at start the origin stores the rotation statement it signs (once for
	// all origins of a store) and re-signs the records it signed.
	PreviousSigningKey ed25519.PrivateKey
	// AdminKey (CAPSTAN_ADMIN_KEY) is an admin API key: the first key of an
	// empty data folder, or added as one more admin key to a folder that
	// does not know it yet. If empty, an empty folder gets a generated key,
	// reported once through Server.AdminKeyStart. See decision 100.
	AdminKey string
	// PublicURL is the base URL edges reach this origin's API at (the one
	// it announces in gossip). It is signed into the origin statement
	// (GET /v1/origin/statement), without which edges do not believe a
	// gossip member that says it is an origin. Empty: no statement.
	PublicURL string
	// ChannelTTL is how long a signed channel record stays valid (default
	// 24 h). The origin re-signs records when half of it has passed, so a
	// device that sees an expired record knows it is being frozen.
	ChannelTTL time.Duration
	// MaxUploadBytes bounds an upload body (default 1 GiB).
	MaxUploadBytes int64
	// Limits bounds the content of an uploaded bundle.
	Limits bundle.Limits
	// EventsToken, if set, is the bearer token edges must send with
	// POST /v1/events (CAPSTAN_EVENTS_TOKEN). Empty accepts events from
	// anyone: they are bounded and only count against known releases.
	EventsToken string
	// EventsTokens, if set, returns more tokens edges may send with
	// POST /v1/events: capstan origin derives one from each cluster key
	// (decision 096), so events are authenticated without a setting.
	// Events not carrying a token are refused when any token is set; when
	// none is, they are taken, but counted as coming from the address
	// that posted them.
	EventsTokens func() []string
	// AutoPause is the origin-wide auto-pause policy; channels may
	// override it (SetChannelPolicy).
	AutoPause AutoPausePolicy
	// Publisher receives every newly signed channel record; nil for none.
	Publisher Publisher
	// Delta configures patch building (memory budget, size caps).
	Delta delta.BuildConfig
	// PrecomputeBases is how many of a channel's previous releases get a
	// patch built in the background when the channel moves to a new
	// release (default 5; the full bundle is always built). Negative
	// disables precomputing; patches are then built on first request.
	PrecomputeBases int
	// PatchBuilds bounds concurrent patch builds (default 2).
	PatchBuilds int
	// GC is the retention policy and the background garbage collection
	// pass (see gc.go).
	GC GCConfig
	// BuildBudget bounds patch builds made on request (see budget.go).
	BuildBudget BuildBudget
	// CapgoBrotliQuality is the Brotli quality (1–11) of the per-file
	// payloads served to Capgo devices (default 9: within ~2 % of 11 on
	// JavaScript at a twentieth of the CPU; each payload is built once).
	CapgoBrotliQuality int
	// Members lists the cluster's nodes as gossip sees them (for the
	// console's fleet view); nil when the origin runs without gossip.
	Members func() []Member
	// Logger receives the origin's log; nil discards it.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
}

// DefaultConfig returns the defaults for a data folder.
func DefaultConfig(dataDir string) Config {
	return Config{
		DataDir:         dataDir,
		ChannelTTL:      24 * time.Hour,
		MaxUploadBytes:  1 << 30,
		Limits:          bundle.DefaultLimits(),
		Delta:           delta.DefaultBuildConfig(),
		PrecomputeBases: 5,
		PatchBuilds:     2,
	}
}

// Server is an origin node. Its methods are safe for concurrent use.
type Server struct {
	cfg   Config
	log   *slog.Logger
	db    *records
	st    *recordStore
	blobs *blobStore
	// ownDB is the embedded database New opened (nil when Config.Records
	// was given); Shutdown closes it.
	ownDB *badgerstore.Store
	// life is the server's lifetime, cancelled by Shutdown: every
	// background task (the loops, precomputed builds, a patch build that
	// outlives the request that started it) and every store call derives
	// from it, so one cancel stops them all.
	life    context.Context
	endLife context.CancelFunc
	bgMu    sync.Mutex     // orders background's wg.Add before Shutdown's Wait
	wg      sync.WaitGroup // the background tasks started by the server
	keyMu   sync.RWMutex   // guards key (swapped by RotateKey)
	key     ed25519.PrivateKey
	reg     *prometheus.Registry
	m       metrics

	adminStart AdminKeyStart
	node       string       // names this process in build leases and the audit trail
	auditSeq   atomic.Int64 // orders audit entries within one clock tick

	started  time.Time // for the console's fleet view
	fleet    fleet     // the latest report of each edge
	timeline *timeline // adoption and failure history for the console
	sizes    sizeCache // blob sizes the console shows

	chanMu  sync.Mutex // serialises channel record changes so Seq only grows
	statsMu sync.Mutex // serialises read-modify-write of stats records

	statement statementCache // the signed origin statement

	liveMu    sync.Mutex // guards liveCache
	liveCache map[string]liveEntry
	budget    *buildBudget

	flight   singleflight.Group // one build per patch pair
	buildSem chan struct{}      // bounds concurrent patch builds

	shutOnce sync.Once
	shutErr  error
}

// New opens (or creates) an origin's data folder.
func New(cfg Config) (*Server, error) {
	d := DefaultConfig(cfg.DataDir)
	if cfg.DataDir == "" {
		return nil, errors.New("origin: DataDir is required")
	}
	if cfg.ChannelTTL <= 0 {
		cfg.ChannelTTL = d.ChannelTTL
	}
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = d.MaxUploadBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PrecomputeBases == 0 {
		cfg.PrecomputeBases = d.PrecomputeBases
	}
	if cfg.PatchBuilds <= 0 {
		cfg.PatchBuilds = d.PatchBuilds
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("origin: create data folder: %w", err)
	}
	tmp := filepath.Join(cfg.DataDir, "tmp")
	if err := cleanTmp(tmp); err != nil {
		return nil, fmt.Errorf("origin: temp folder: %w", err)
	}
	blobs := cfg.Blobs
	if blobs == nil {
		fb, err := fileblobs.New(filepath.Join(cfg.DataDir, "blobs"), tmp)
		if err != nil {
			return nil, fmt.Errorf("origin: %w", err)
		}
		blobs = fb
	}
	key := cfg.SigningKey
	if key == nil {
		k, err := loadOrCreateKey(filepath.Join(cfg.DataDir, "origin.key"))
		if err != nil {
			return nil, err
		}
		key = k
	}
	var own *badgerstore.Store
	recs := cfg.Records
	if recs == nil {
		db, err := badgerstore.Open(filepath.Join(cfg.DataDir, "db"), log)
		if err != nil {
			return nil, fmt.Errorf("origin: %w", err)
		}
		own, recs = db, db
	}
	life, endLife := context.WithCancel(context.Background())
	db := &records{r: recs, ctx: life}
	s := &Server{cfg: cfg, log: log, db: db, st: &recordStore{db: db}, blobs: &blobStore{b: blobs, tmp: tmp, ctx: life},
		ownDB: own, life: life, endLife: endLife, key: key, node: newNodeID(),
		buildSem: make(chan struct{}, cfg.PatchBuilds), started: cfg.Now(), timeline: newTimeline()}
	s.reg = prometheus.NewRegistry()
	s.m = newMetrics(s.reg, s)
	s.reg.MustRegister(statsCollector{s})
	if err := s.bootstrapAdmin(); err != nil {
		s.closeStores()
		return nil, err
	}
	if err := s.finishRotation(); err != nil {
		s.closeStores()
		return nil, err
	}
	if cfg.PreviousSigningKey != nil {
		if cfg.SigningKey == nil {
			s.closeStores()
			return nil, errors.New("origin: PreviousSigningKey needs SigningKey")
		}
		if err := s.adoptRotation(life, cfg.PreviousSigningKey); err != nil {
			s.closeStores()
			return nil, err
		}
	}
	if own != nil {
		// Nobody else uses this database: uploads and a sweep that were
		// under way when the process died are gone with it.
		if err := s.clearWriters(); err != nil {
			s.closeStores()
			return nil, fmt.Errorf("origin: %w", err)
		}
	}
	s.budget = newBuildBudget(cfg.BuildBudget)
	s.background(s.gcLoop)
	s.background(s.resignLoop)
	if err := s.loadTimeline(); err != nil {
		s.log.Warn("console timeline: not restored", "err", err)
	}
	s.background(s.timelineLoop)
	return s, nil
}

// background runs task for the server's lifetime: ctx is cancelled by
// Shutdown, which waits for task to return.
func (s *Server) background(task func(ctx context.Context)) {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.life.Err() != nil {
		return // shutting down: nothing new starts
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		task(s.life)
	}()
}

// PublicKey is the origin's channel-signing public key.
func (s *Server) PublicKey() ed25519.PublicKey { return s.signingKey().Public().(ed25519.PublicKey) }

// Registry is the origin's Prometheus registry.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Shutdown ends the server's lifetime: background work and store calls
// in flight are cancelled, and it waits for the background tasks to
// return, until ctx is done. Then it saves the console timeline (within
// ctx) and closes the database New opened. The HTTP API (Handler) should
// be shut down first. Later calls return the first call's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() {
		s.bgMu.Lock()
		s.endLife()
		s.bgMu.Unlock()
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.shutErr = fmt.Errorf("origin: shutdown: background work still running: %w", ctx.Err())
			s.log.Warn("shutdown: background work still running", "err", ctx.Err())
		}
		s.saveTimeline(&records{r: s.db.r, ctx: ctx})
		if err := s.closeStores(); s.shutErr == nil {
			s.shutErr = err
		}
	})
	return s.shutErr
}

// Close is Shutdown without a deadline.
func (s *Server) Close() error { return s.Shutdown(context.Background()) }

func (s *Server) closeStores() error {
	s.endLife()
	if s.ownDB != nil {
		return s.ownDB.Close()
	}
	return nil
}

func loadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := release.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("origin: signing key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("origin: read signing key: %w", err)
	}
	k, err := release.GenerateKey()
	if err != nil {
		return nil, err
	}
	pemBytes, err := release.EncodePrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(path, pemBytes, 0o600); err != nil {
		return nil, fmt.Errorf("origin: write signing key: %w", err)
	}
	pub, _ := release.EncodePublicKey(k.Public().(ed25519.PublicKey), release.RoleOrigin)
	if err := writeFileAtomic(path+".pub", pub, 0o644); err != nil {
		return nil, fmt.Errorf("origin: write public key: %w", err)
	}
	return k, nil
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// newAPIKey returns a random key with a recognisable prefix.
func newAPIKey() string {
	var b [24]byte
	rand.Read(b[:])
	return "cap_" + base64.RawURLEncoding.EncodeToString(b[:])
}

func hashKey(k string) string {
	s := sha256.Sum256([]byte(k))
	return fmt.Sprintf("%x", s)
}

// Records returns the newest signed record of every channel of every app.
func (s *Server) Records() ([]*release.Envelope, error) { return s.st.channels("") }
