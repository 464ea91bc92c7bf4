package origin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/internal/lifetime"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// Garbage collection (decision 095). What the origin keeps forever: every
// release (its files, file list, sealed index and ciphertext, Capgo zip) —
// a rollback may name any version. What it keeps while useful: derived
// blobs (patches, Capgo zips and payloads) whose target is a live release
// and whose base a device could hold. Everything else in the blob store —
// patches no device will ask for, blobs of uploads that were killed or
// refused — is deleted, as are upload temp files.
//
// A blob is deleted only under the sweep lock (gc/lock), which is taken
// only while no upload or build is under way (gw/ registrations, l/ build
// leases) and keeps new ones waiting: so a writer never reuses a blob the
// sweep is about to delete. The referenced set is computed under the lock,
// and any error while computing it deletes nothing.

// GCConfig is the retention policy and the background pass.
type GCConfig struct {
	// Interval is how often the background pass runs (default 1 h;
	// negative: only `capstan gc`).
	Interval time.Duration
	// Grace keeps blobs and upload temp files younger than this (default
	// 1 h), whatever refers to them.
	Grace time.Duration
	// KeepReleases is how many of the newest distinct releases each
	// channel served count as live (default 10): their patches and Capgo
	// payloads are kept and built on demand.
	KeepReleases int
}

// Defaults of GCConfig.
const (
	DefaultGCInterval   = time.Hour
	DefaultGCGrace      = time.Hour
	DefaultKeepReleases = 10
)

func (c GCConfig) withDefaults() GCConfig {
	if c.Interval == 0 {
		c.Interval = DefaultGCInterval
	}
	if c.Grace <= 0 {
		c.Grace = DefaultGCGrace
	}
	if c.KeepReleases <= 0 {
		c.KeepReleases = DefaultKeepReleases
	}
	return c
}

// GCOptions change one pass.
type GCOptions struct {
	// Grace overrides GCConfig.Grace when non-nil (0: no grace).
	Grace *time.Duration
	// DryRun reports what would be deleted and deletes nothing.
	DryRun bool
}

// Records of the sweep lock and of writers under way.
const (
	keyGCLock = "gc/lock" // → gcLock, while a sweep deletes blobs
	pfxWriter = "gw/"     // gw/<node>/<id> → gcLock, an upload under way
)

// Lock timing. A sweep renews its lock while it runs; an upload renews its
// registration. Either is ignored once expired (its origin died).
var (
	gcLockTTL    = 2 * time.Minute
	writerTTL    = 2 * time.Hour
	writerRenew  = 10 * time.Minute
	writerPoll   = 250 * time.Millisecond
	gcWriterWait = 2 * time.Minute
)

type gcLock struct {
	Node  string    `json:"node"`
	Until time.Time `json:"until"`
}

// gcMu makes one pass at a time on this origin.
var gcMu sync.Mutex

// beginWrite registers an upload that is about to write blobs and then
// records that refer to them. It waits (up to gcWriterWait) while a sweep
// holds the lock. Call end when the records are committed or the upload
// failed.
func (s *Server) beginWrite(ctx context.Context) (end func(), err error) {
	var b [8]byte
	rand.Read(b[:])
	key := pfxWriter + s.node + "/" + hex.EncodeToString(b[:])
	deadline := time.Now().Add(gcWriterWait)
	for {
		busy := false
		err := s.db.Update(func(txn store.Txn) error {
			busy = false
			var l gcLock
			switch err := getJSON(txn, keyGCLock, &l); {
			case err == nil && l.Node != s.node && time.Now().Before(l.Until):
				busy = true
				return nil
			case err != nil && !errors.Is(err, ErrNotFound):
				return err
			}
			return setJSON(txn, key, &gcLock{Node: s.node, Until: time.Now().Add(writerTTL)})
		})
		if err != nil {
			return nil, fmt.Errorf("origin: register upload: %w", err)
		}
		if !busy {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: garbage collection is deleting blobs; retry in a minute", store.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(writerPoll):
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(writerRenew)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.db.Update(func(txn store.Txn) error {
					return setJSON(txn, key, &gcLock{Node: s.node, Until: time.Now().Add(writerTTL)})
				})
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			if err := s.db.Update(func(txn store.Txn) error { return txn.Delete(key) }); err != nil {
				s.log.Warn("unregister upload (it expires on its own)", "err", err)
			}
		})
	}, nil
}

// clearWriters forgets the uploads, builds and sweep lock a crash left
// behind. Only
// an origin that owns its records (Badger in its data folder) may: with
// shared records they may belong to a live origin, and expire instead.
func (s *Server) clearWriters() error {
	return s.db.Update(func(txn store.Txn) error {
		var keys []string
		for _, pfx := range []string{pfxWriter, pfxLease} {
			if err := iterate(txn, pfx, func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
				return err
			}
		}
		keys = append(keys, keyGCLock)
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// lockSweep takes the sweep lock if no upload or build is under way. It
// returns why not otherwise.
func (s *Server) lockSweep() (why string, err error) {
	err = s.db.Update(func(txn store.Txn) error {
		why = ""
		now := time.Now()
		var l gcLock
		switch err := getJSON(txn, keyGCLock, &l); {
		case err == nil && l.Node != s.node && now.Before(l.Until):
			why = "another origin is sweeping"
			return nil
		case err != nil && !errors.Is(err, ErrNotFound):
			return err
		}
		writers, builds := 0, 0
		if err := iterate(txn, pfxWriter, func(_ string, v []byte) error {
			var w gcLock
			if json.Unmarshal(v, &w) == nil && now.Before(w.Until) {
				writers++
			}
			return nil
		}); err != nil {
			return err
		}
		if err := iterate(txn, pfxLease, func(_ string, v []byte) error {
			var b buildLease
			if json.Unmarshal(v, &b) == nil && now.Before(b.Until) {
				builds++
			}
			return nil
		}); err != nil {
			return err
		}
		if writers+builds > 0 {
			why = fmt.Sprintf("%d uploads and %d builds under way", writers, builds)
			return nil
		}
		return setJSON(txn, keyGCLock, &gcLock{Node: s.node, Until: now.Add(gcLockTTL)})
	})
	return why, err
}

func (s *Server) renewSweep() error {
	return s.db.Update(func(txn store.Txn) error {
		return setJSON(txn, keyGCLock, &gcLock{Node: s.node, Until: time.Now().Add(gcLockTTL)})
	})
}

func (s *Server) unlockSweep() {
	err := s.db.Update(func(txn store.Txn) error {
		var l gcLock
		if getJSON(txn, keyGCLock, &l) == nil && l.Node == s.node {
			return txn.Delete(keyGCLock)
		}
		return nil
	})
	if err != nil {
		s.log.Warn("release the sweep lock (it expires on its own)", "err", err)
	}
}

// sweepLocked reports whether a sweep holds the lock now (builds wait).
func sweepLocked(txn store.Txn, node string) (bool, error) {
	var l gcLock
	switch err := getJSON(txn, keyGCLock, &l); {
	case err == nil:
		return l.Node != node && time.Now().Before(l.Until), nil
	case errors.Is(err, ErrNotFound):
		return false, nil
	default:
		return false, err
	}
}

// live is what the retention policy keeps for one app: the releases its
// channels serve or served among their newest KeepReleases (targets), and
// the releases a device could hold (bases: targets, and every release
// devices reported on).
type live struct {
	targets map[release.Hash]bool
	bases   map[release.Hash]bool
}

// liveReleases computes live for app.
func (s *Server) liveReleases(app string) (*live, error) {
	keep := s.cfg.GC.withDefaults().KeepReleases
	l := &live{targets: map[release.Hash]bool{}, bases: map[release.Hash]bool{}}
	envs, err := s.st.channels(app)
	if err != nil {
		return nil, err
	}
	for _, env := range envs {
		c, err := env.Channel()
		if err != nil {
			return nil, err
		}
		for _, ref := range []*release.Ref{&c.Release, c.Stable} {
			if ref != nil && !ref.ID.IsZero() {
				l.targets[ref.ID] = true
			}
		}
		hist, err := s.st.history(app, c.Channel)
		if err != nil {
			return nil, err
		}
		seen := map[release.Hash]bool{}
		for i := len(hist) - 1; i >= 0 && len(seen) < keep; i-- {
			for _, ref := range []*release.Ref{&hist[i].Release, hist[i].Stable} {
				if ref != nil && !ref.ID.IsZero() && len(seen) < keep {
					seen[ref.ID] = true
					l.targets[ref.ID] = true
				}
			}
		}
	}
	for id := range l.targets {
		l.bases[id] = true
	}
	// The installed-base census: releases devices reported running,
	// downloading or failing (s/<app>/<channel>/<release id>).
	err = s.db.View(func(txn store.Txn) error {
		return iterate(txn, pfxStats+app+"/", func(k string, _ []byte) error {
			if h, err := release.ParseHash(k[strings.LastIndexByte(k, '/')+1:]); err == nil && !h.IsZero() {
				l.bases[h] = true
			}
			return nil
		})
	})
	return l, err
}

// patchAllowed reports whether a patch from base to target may be built
// on request: target live, and base the empty bundle or one a device could
// hold. Answers are remembered per app for a few seconds (a burst of
// requests costs one computation).
func (s *Server) patchAllowed(app string, base, target release.Hash) (bool, error) {
	s.liveMu.Lock()
	c, ok := s.liveCache[app]
	s.liveMu.Unlock()
	if !ok || time.Since(c.at) > liveCacheTTL {
		l, err := s.liveReleases(app)
		if err != nil {
			return false, err
		}
		c = liveEntry{l: l, at: time.Now()}
		s.liveMu.Lock()
		if s.liveCache == nil || len(s.liveCache) > 1024 {
			s.liveCache = map[string]liveEntry{}
		}
		s.liveCache[app] = c
		s.liveMu.Unlock()
	}
	return c.l.targets[target] && (base.IsZero() || c.l.bases[base]), nil
}

// forgetLive drops the live set remembered for app: its channels changed.
func (s *Server) forgetLive(app string) {
	s.liveMu.Lock()
	delete(s.liveCache, app)
	s.liveMu.Unlock()
}

// liveCacheTTL bounds how long a computed live set is reused.
const liveCacheTTL = 10 * time.Second

type liveEntry struct {
	l  *live
	at time.Time
}

// GC runs one garbage collection pass: drop derived-blob index entries the
// retention policy no longer keeps, then (under the sweep lock) delete
// every blob nothing refers to, then upload temp files left behind. It is
// safe to interrupt at any point (kill -9): index entries go before their
// blobs, and a blob is only ever deleted when nothing refers to it.
func (s *Server) GC(ctx context.Context, opts GCOptions) (wire.GCReport, error) {
	gcMu.Lock()
	defer gcMu.Unlock()
	start := time.Now()
	cfg := s.cfg.GC.withDefaults()
	grace := cfg.Grace
	if opts.Grace != nil {
		grace = *opts.Grace
	}
	rep := wire.GCReport{DryRun: opts.DryRun}
	if err := s.pruneDerived(&rep, opts.DryRun); err != nil {
		return rep, fmt.Errorf("origin: gc: %w", err)
	}
	if err := s.sweepBlobs(ctx, &rep, grace, opts.DryRun); err != nil {
		return rep, fmt.Errorf("origin: gc: %w", err)
	}
	if err := s.sweepTmp(&rep, grace, opts.DryRun); err != nil {
		return rep, fmt.Errorf("origin: gc: %w", err)
	}
	rep.Took = time.Since(start).Round(time.Millisecond).String()
	s.log.Info("garbage collection", "dry_run", opts.DryRun, "patches", rep.Patches, "derived", rep.Derived,
		"blobs", rep.Blobs, "bytes", rep.Bytes, "kept", rep.Kept, "leftovers", rep.Leftovers, "skipped", rep.Skipped, "took", rep.Took)
	return rep, nil
}

// pruneDerived drops the index entries of patches and Capgo zips and
// payloads the retention policy does not keep. Their blobs become
// unreferenced and go in the sweep.
func (s *Server) pruneDerived(rep *wire.GCReport, dryRun bool) error {
	apps, err := s.st.apps()
	if err != nil {
		return err
	}
	lives := map[string]*live{}
	liveFiles := map[release.Hash]bool{} // files of live releases: Capgo payloads
	for _, a := range apps {
		l, err := s.liveReleases(a.ID)
		if err != nil {
			return err
		}
		lives[a.ID] = l
		for id := range l.targets {
			rec, err := s.st.releaseByID(id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			m, err := s.manifestOf(rec)
			if err != nil {
				return err
			}
			for _, f := range m.Files {
				liveFiles[f.SHA256] = true
			}
		}
	}
	appOf := func(id release.Hash) string {
		name, err := s.releaseName(id)
		if err != nil {
			return ""
		}
		app, _, _ := strings.Cut(name, "/")
		return app
	}
	var drop []string
	err = s.db.View(func(txn store.Txn) error {
		if err := iterate(txn, pfxPatch, func(k string, _ []byte) error {
			// p/<base>/<target>[/<codecs>]
			parts := strings.Split(strings.TrimPrefix(k, pfxPatch), "/")
			if len(parts) < 2 {
				return nil
			}
			base, err1 := release.ParseHash(parts[0])
			target, err2 := release.ParseHash(parts[1])
			if err1 != nil || err2 != nil {
				return nil
			}
			l := lives[appOf(target)]
			if l == nil || !l.targets[target] || (!base.IsZero() && !l.bases[base]) {
				drop = append(drop, k)
				rep.Patches++
			}
			return nil
		}); err != nil {
			return err
		}
		if err := iterate(txn, pfxCapgoZip, func(k string, _ []byte) error {
			id, err := release.ParseHash(strings.TrimPrefix(k, pfxCapgoZip))
			if err != nil {
				return nil
			}
			if l := lives[appOf(id)]; l == nil || !l.targets[id] {
				drop = append(drop, k)
				rep.Derived++
			}
			return nil
		}); err != nil {
			return err
		}
		return iterate(txn, pfxCapgoBrotli, func(k string, _ []byte) error {
			h, err := release.ParseHash(strings.TrimPrefix(k, pfxCapgoBrotli))
			if err == nil && !liveFiles[h] {
				drop = append(drop, k)
				rep.Derived++
			}
			return nil
		})
	})
	if err != nil || dryRun || len(drop) == 0 {
		return err
	}
	// In batches: one transaction stays small on any store.
	for len(drop) > 0 {
		n := min(len(drop), 500)
		batch := drop[:n]
		drop = drop[n:]
		if err := s.db.Update(func(txn store.Txn) error {
			for _, k := range batch {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// releaseName returns "<app>/<version>" of a release ID.
func (s *Server) releaseName(id release.Hash) (string, error) {
	var name string
	err := s.db.View(func(txn store.Txn) error {
		b, err := txn.Get(pfxReleaseID + id.String())
		name = string(b)
		return err
	})
	return name, err
}

// referenced returns every blob a record refers to: each release's files,
// file list, sealed index and ciphertext, Capgo zip; and every derived blob
// still indexed. Any error means the set is incomplete: nothing may be
// deleted then.
func (s *Server) referenced() (map[release.Hash]bool, error) {
	refs := map[release.Hash]bool{}
	var recs []release.Record
	err := s.db.View(func(txn store.Txn) error {
		if err := iterate(txn, pfxRelease, func(_ string, v []byte) error {
			var r release.Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			recs = append(recs, r)
			return nil
		}); err != nil {
			return err
		}
		for _, pfx := range []string{pfxPatch, pfxCapgoZip, pfxCapgoBrotli} {
			if err := iterate(txn, pfx, func(k string, v []byte) error {
				var h release.Hash
				if len(v) != len(h) {
					return fmt.Errorf("index %s holds no hash", k)
				}
				copy(h[:], v)
				refs[h] = true
				return nil
			}); err != nil {
				return err
			}
		}
		if err := iterate(txn, pfxCapgoRelease, func(k string, v []byte) error {
			var c capgoRelease
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			if !c.EncryptedZip.IsZero() {
				refs[c.EncryptedZip] = true
			}
			return nil
		}); err != nil {
			return err
		}
		return iterate(txn, pfxSealed, func(k string, v []byte) error {
			var sr sealedRecord
			if err := json.Unmarshal(v, &sr); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			refs[sr.Index] = true
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for i := range recs {
		rec := &recs[i]
		doc, m, err := rec.Envelope.Release()
		if err != nil {
			return nil, fmt.Errorf("release %s %s: %w", rec.App, rec.Version, err)
		}
		if m == nil {
			refs[doc.Files.SHA256] = true
			if m, err = s.manifestOf(rec); err != nil {
				return nil, err
			}
		}
		for _, f := range m.Files {
			refs[f.SHA256] = true
		}
	}
	// Sealed indexes name the ciphertext blobs of encrypted releases.
	err = s.db.View(func(txn store.Txn) error {
		return iterate(txn, pfxSealed, func(k string, v []byte) error {
			var sr sealedRecord
			if err := json.Unmarshal(v, &sr); err != nil {
				return err
			}
			f, err := s.blobs.open(sr.Index)
			if err != nil {
				return fmt.Errorf("%s: index %s: %w", k, sr.Index, err)
			}
			defer f.Close()
			b, err := io.ReadAll(io.LimitReader(f, release.MaxSealedIndexBytes+1))
			if err != nil {
				return err
			}
			idx, err := release.DecodeSealedIndex(b)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			for _, sf := range idx.Files {
				refs[sf.Blob] = true
			}
			return nil
		})
	})
	return refs, err
}

// sweepBlobs deletes, under the sweep lock, every blob older than grace
// that nothing refers to.
func (s *Server) sweepBlobs(ctx context.Context, rep *wire.GCReport, grace time.Duration, dryRun bool) error {
	sw, ok := s.blobs.b.(store.Sweeper)
	if !ok {
		rep.Skipped = "the blob store cannot delete"
		return nil
	}
	if !dryRun {
		why, err := s.lockSweep()
		if err != nil {
			return err
		}
		if why != "" {
			rep.Skipped = why
			return nil
		}
		defer s.unlockSweep()
	}
	refs, err := s.referenced()
	if err != nil {
		return err
	}
	cutoff := time.Now().Add(-grace)
	var doomed []release.Hash
	var sizes []int64
	err = sw.List(ctx, func(h release.Hash, size int64, written time.Time) error {
		if refs[h] || written.After(cutoff) {
			rep.Kept++
			return nil
		}
		doomed = append(doomed, h)
		sizes = append(sizes, size)
		return nil
	})
	if err != nil {
		return err
	}
	renewed := time.Now()
	for i, h := range doomed {
		if !dryRun {
			if time.Since(renewed) > gcLockTTL/4 {
				if err := s.renewSweep(); err != nil {
					return err
				}
				renewed = time.Now()
			}
			if err := sw.Delete(ctx, h); err != nil {
				return err
			}
		}
		rep.Blobs++
		rep.Bytes += sizes[i]
	}
	return nil
}

// sweepTmp deletes upload temp files older than grace: what an upload
// killed mid-way (or a crash) left behind. An upload under way writes its
// file continuously, so it stays young.
func (s *Server) sweepTmp(rep *wire.GCReport, grace time.Duration, dryRun bool) error {
	ents, err := os.ReadDir(s.blobs.tmp)
	if err != nil {
		return err
	}
	cutoff := time.Now().Add(-grace)
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			continue
		}
		if !dryRun {
			os.Remove(filepath.Join(s.blobs.tmp, e.Name()))
		}
		rep.Leftovers++
	}
	return nil
}

// gcLoop runs a pass every GCConfig.Interval.
func (s *Server) gcLoop(ctx context.Context) {
	every := s.cfg.GC.withDefaults().Interval
	if every < 0 {
		return
	}
	lifetime.Every(ctx, every, func(ctx context.Context) {
		if _, err := s.GC(ctx, GCOptions{}); err != nil {
			s.log.Error("garbage collection", "err", err)
		}
	})
}

// handleGC runs one pass now (admin): POST /v1/gc.
func (s *Server) handleGC(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authorize(r, wire.RoleAdmin, ""); err != nil {
		s.fail(w, err)
		return
	}
	var body wire.GCBody
	if r.ContentLength != 0 {
		if err := decodeBody(r, &body); err != nil {
			s.fail(w, err)
			return
		}
	}
	opts := GCOptions{DryRun: body.DryRun}
	if body.Grace != "" {
		g, err := time.ParseDuration(body.Grace)
		if err != nil || g < 0 {
			s.fail(w, badRequest("grace %q: want a duration such as 1h or 0s", body.Grace))
			return
		}
		opts.Grace = &g
	}
	rep, err := s.GC(r.Context(), opts)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
