package origin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/capstan-ota/capstan/delta"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
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

// Patch variants (?codecs= on GET /v1/patches): the default uses every
// codec of the format; codecsZstd builds the same records with no brotli
// frame, for clients that have no brotli decoder (WebViews: no
// DecompressionStream("brotli"); a JavaScript brotli decoder carries a 122 KB
// dictionary). Decision 131.
const (
	codecsAll  = ""
	codecsZstd = "zstd"
)

func patchKey(base, target release.Hash) string {
	return pfxPatch + base.String() + "/" + target.String()
}

// patchVariantKey is where the patch of a variant is indexed: patchKey for
// the default one and for every full bundle, which has no brotli frame.
func patchVariantKey(base, target release.Hash, codecs string) string {
	k := patchKey(base, target)
	if codecs == codecsZstd && !base.IsZero() {
		k += "/" + codecsZstd
	}
	return k
}

// patch returns the blob holding the patch from base to target (the zero
// hash for a full bundle), building and storing it once if needed.
// Concurrent requests for the same pair share one build. codecs is
// codecsAll or codecsZstd; a full bundle has no brotli frame either way, so
// both name the same blob.
func (s *Server) patch(ctx context.Context, base, target release.Hash, codecs string) (release.Hash, error) {
	if err := s.checkPatchable(target); err != nil {
		return release.Hash{}, err
	}
	return s.derived(ctx, patchVariantKey(base, target, codecs), func(ctx context.Context) (release.Hash, error) {
		return s.buildPatch(ctx, base, target, codecs)
	})
}

func (s *Server) buildPatch(ctx context.Context, baseID, targetID release.Hash, codecs string) (release.Hash, error) {
	target, err := s.st.releaseByID(targetID)
	if err != nil {
		return release.Hash{}, err
	}
	tm, err := s.manifestOf(target)
	if err != nil {
		return release.Hash{}, err
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
		if bm, err = s.manifestOf(base); err != nil {
			return release.Hash{}, err
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
	var st delta.BuildStats
	dcfg := s.cfg.Delta
	if bm == nil {
		// A full bundle is all literals: brotli's best level would take
		// seconds per 10 MB (≈0.6 MB/s) to save ≈10 %, and zstd's best level
		// is still slow; a device installing for the first time waits for
		// this build, so it gets zstd's "better" level.
		dcfg.BrotliMaxBytes = -1 // zstd only
		dcfg.FastLiterals = true
	}
	if codecs == codecsZstd {
		dcfg.BrotliMaxBytes = -1 // zstd only
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
	codecs := r.URL.Query().Get("codecs")
	if codecs != codecsAll && codecs != codecsZstd {
		s.fail(w, badRequest("patch codecs %q: want zstd or nothing", codecs))
		return
	}
	if _, built := s.indexedBlob(patchVariantKey(base, target, codecs)); !built {
		if ok, err := s.mayBuildPatch(w, r, base, target); !ok {
			if err != nil {
				s.fail(w, err)
			}
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
	defer cancel()
	h, err := s.patch(ctx, base, target, codecs)
	if err != nil {
		s.fail(w, err)
		return
	}
	// The edge caches the variant under its path with the query: the signed
	// statement must name that, so one variant cannot fill the other's place.
	path := r.URL.Path
	if patchVariantKey(base, target, codecs) != patchKey(base, target) {
		path += "?codecs=" + codecs
	}
	s.serveDerivedAt(w, r, path, h, "application/vnd.capstan.patch")
}

// mayBuildPatch decides whether a request may start the build of a patch
// the origin does not hold (issue 16, finding 5: any pair of releases
// could be asked for, each build costing seconds of CPU and the disk of a
// release, never deleted). Only pairs a device could need are built: the
// target a release a channel serves or recently served, the base one a
// device could hold (such a release, or one devices reported running).
// Then the caller's and the origin's build budget must allow it. A caller
// with a publisher key of the app may build any pair. When it answers
// false with a nil error it has answered the request (429).
func (s *Server) mayBuildPatch(w http.ResponseWriter, r *http.Request, base, target release.Hash) (bool, error) {
	rec, err := s.st.releaseByID(target)
	if err != nil {
		return false, err
	}
	// A publisher of the app (CI warming a release before it is
	// promoted, a benchmark) is accountable: its builds are not limited.
	if r.Header.Get("Authorization") != "" || r.Header.Get("X-Api-Key") != "" {
		if _, err := s.authorize(r, wire.RolePublisher, rec.App); err == nil {
			return true, nil
		}
	}
	ok, err := s.patchAllowed(rec.App, base, target)
	if err != nil {
		return false, err
	}
	if !ok {
		s.m.patches.WithLabelValues("refused").Inc()
		return false, fmt.Errorf("%w: no patch from %s to %s %s: no channel serves that target or no device can hold that base (the full bundle always works)", ErrNotFound, base, rec.App, rec.Version)
	}
	if ok, wait := s.budget.allow(r, s.cfg.Now()); !ok {
		s.m.patches.WithLabelValues("over_budget").Inc()
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(wait.Seconds()+0.999))))
		writeJSON(w, http.StatusTooManyRequests, wire.Error{Error: "patch build budget spent; retry later or use the full bundle"})
		return false, nil
	}
	return true, nil
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
	s.background(func(ctx context.Context) {
		// Both variants of each patch: Capstan's TypeScript client in a
		// WebView that has no brotli decoder asks for ?codecs=zstd, and
		// should not wait for a build either (decision 131). The full
		// bundle has no brotli frame: one build serves both.
		for _, b := range bases {
			for _, codecs := range []string{codecsAll, codecsZstd} {
				if b.IsZero() && codecs == codecsZstd {
					continue
				}
				if _, err := s.patch(ctx, b, target, codecs); err != nil && ctx.Err() == nil {
					s.log.Warn("precompute patch", "base", b, "target", target, "codecs", codecs, "err", err)
				}
			}
		}
	})
}

func containsHash(hs []release.Hash, h release.Hash) bool {
	for _, x := range hs {
		if x == h {
			return true
		}
	}
	return false
}
