package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/capstan-ota/capstan/delta"
	"github.com/capstan-ota/capstan/release"
	"github.com/dgraph-io/badger/v4"
)

// blobSource lets the delta builder read file contents from the store.
type blobSource struct{ b *blobStore }

func (s blobSource) Open(_ context.Context, h release.Hash) (io.ReadCloser, error) {
	f, err := s.b.open(h)
	if err != nil {
		return nil, fmt.Errorf("origin: blob %s: %w", h, err)
	}
	return f, nil
}

func patchKey(base, target release.Hash) string {
	return pfxPatch + base.String() + "/" + target.String()
}

// patch returns the blob holding the patch from base to target (the zero
// hash for a full bundle), building and storing it once if needed.
// Concurrent requests for the same pair share one build.
func (s *Server) patch(ctx context.Context, base, target release.Hash) (release.Hash, error) {
	if err := s.checkPatchable(target); err != nil {
		return release.Hash{}, err
	}
	if h, ok := s.storedPatch(base, target); ok {
		return h, nil
	}
	v, err, _ := s.flight.Do(patchKey(base, target), func() (any, error) {
		if h, ok := s.storedPatch(base, target); ok {
			return h, nil
		}
		return s.buildPatch(ctx, base, target)
	})
	if err != nil {
		return release.Hash{}, err
	}
	return v.(release.Hash), nil
}

func (s *Server) storedPatch(base, target release.Hash) (release.Hash, bool) {
	var h release.Hash
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(patchKey(base, target)))
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error {
			if len(b) != len(h) {
				return errors.New("bad patch index entry")
			}
			copy(h[:], b)
			return nil
		})
	})
	return h, err == nil && s.blobs.has(h)
}

func (s *Server) buildPatch(ctx context.Context, baseID, targetID release.Hash) (release.Hash, error) {
	target, err := s.st.releaseByID(targetID)
	if err != nil {
		return release.Hash{}, err
	}
	tm, err := target.Envelope.Manifest()
	if err != nil {
		return release.Hash{}, fmt.Errorf("origin: stored manifest %s: %w", targetID, err)
	}
	var bm *release.Manifest
	if !baseID.IsZero() {
		base, err := s.st.releaseByID(baseID)
		if err != nil {
			return release.Hash{}, err
		}
		if base.App != target.App {
			return release.Hash{}, badRequest("base %s is a release of %s, target of %s", baseID, base.App, target.App)
		}
		if bm, err = base.Envelope.Manifest(); err != nil {
			return release.Hash{}, fmt.Errorf("origin: stored manifest %s: %w", baseID, err)
		}
	}
	// Builds are CPU and memory heavy: a few at a time, the rest wait.
	select {
	case s.buildSem <- struct{}{}:
	case <-ctx.Done():
		return release.Hash{}, ctx.Err()
	}
	defer func() { <-s.buildSem }()
	start := time.Now()
	pr, pw := io.Pipe()
	var st delta.Stats
	dcfg := s.cfg.Delta
	if bm == nil {
		// A full bundle is all literals: brotli's best level would take
		// seconds per 10 MB (≈0.6 MB/s) to save ≈10 %, and zstd's best level
		// is still slow; a device installing for the first time waits for
		// this build, so it gets zstd's "better" level.
		dcfg.BrotliMaxBytes = 0
		dcfg.FastLiterals = true
	}
	go func() {
		var err error
		st, err = delta.Build(ctx, dcfg, bm, baseID, tm, targetID, blobSource{s.blobs}, pw)
		pw.CloseWithError(err)
	}()
	limit := tm.TotalSize() + tm.TotalSize()/8 + 1<<20
	h, size, err := s.blobs.put(pr, limit, release.Hash{})
	pr.CloseWithError(err)
	if err != nil {
		s.m.patches.WithLabelValues("failed").Inc()
		return release.Hash{}, fmt.Errorf("origin: build patch %s → %s: %w", baseID, targetID, err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(patchKey(baseID, targetID)), h[:]) }); err != nil {
		return release.Hash{}, fmt.Errorf("origin: index patch: %w", err)
	}
	s.m.patches.WithLabelValues("built").Inc()
	s.log.Info("patch built", "app", target.App, "base", baseID, "target", target.Version, "bytes", size,
		"target_bytes", st.TargetBytes, "copies", st.Copies, "deltas", st.Deltas+st.BSDiffs, "renames", st.Renames,
		"literals", st.Literals, "took", time.Since(start).Round(time.Millisecond))
	return h, nil
}

func (s *Server) handlePatch(w http.ResponseWriter, r *http.Request) {
	base, err := release.ParseHash(r.PathValue("base"))
	if err != nil {
		s.fail(w, badRequest("patch base: %v", err))
		return
	}
	target, err := release.ParseHash(r.PathValue("target"))
	if err != nil {
		s.fail(w, badRequest("patch target: %v", err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
	defer cancel()
	h, err := s.patch(ctx, base, target)
	if err != nil {
		s.fail(w, err)
		return
	}
	f, err := s.blobs.open(h)
	if err != nil {
		s.fail(w, err)
		return
	}
	defer f.Close()
	immutable(w, h.String())
	w.Header().Set("Content-Type", "application/vnd.capstan.patch")
	http.ServeContent(w, r, "", time.Time{}, f)
}

// precompute builds, in the background, the patches devices of a channel
// will ask for once it serves target: from each of the last releases the
// channel served, and the full bundle.
func (s *Server) precompute(c *release.Channel) {
	if c.Release.ID.IsZero() || !c.Release.Sealed.IsZero() || s.cfg.PrecomputeBases < 0 {
		return
	}
	// Most devices run the release the channel served just before: their
	// patch comes first, then older bases, then the full bundle (only new
	// devices and failed patches need it).
	var bases []release.Hash
	if hist, err := s.st.history(c.App, c.Channel); err == nil {
		for i := len(hist) - 1; i >= 0 && len(bases) < s.cfg.PrecomputeBases; i-- {
			id := hist[i].Release.ID
			if id.IsZero() || id == c.Release.ID || containsHash(bases, id) {
				continue
			}
			bases = append(bases, id)
		}
	}
	bases = append(bases, release.Hash{})
	target := c.Release.ID
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-s.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		for _, b := range bases {
			if _, err := s.patch(ctx, b, target); err != nil && ctx.Err() == nil {
				s.log.Warn("precompute patch", "base", b, "target", target, "err", err)
			}
		}
	}()
}

func containsHash(hs []release.Hash, h release.Hash) bool {
	for _, x := range hs {
		if x == h {
			return true
		}
	}
	return false
}
