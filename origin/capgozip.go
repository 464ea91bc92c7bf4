package origin

import (
	"archive/zip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"github.com/klauspost/compress/flate"
)

// Capgo devices download either one full zip of a release or, per file, the
// file's bytes (Brotli-compressed from 8 KiB). Both are derived from the
// release's blobs once, stored as blobs themselves (so they are
// content-addressed and served with Range like any blob), and indexed:
//
//	z/<release id> → zip blob hash
//	b/<file sha256> → Brotli blob hash
const (
	pfxCapgoZip    = "z/"
	pfxCapgoBrotli = "b/"
)

// capgoZipEpoch is the modification time of every zip entry, so that the
// same release always zips to the same bytes.
var capgoZipEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// defaultBrotliQuality trades build time for size: 9 is within ~2 % of 11
// on JavaScript at a twentieth of the CPU, and each payload is built once
// per file content for the whole fleet.
const defaultBrotliQuality = 9

func (s *Server) brotliQuality() int {
	if q := s.cfg.CapgoBrotliQuality; q >= 1 && q <= 11 {
		return q
	}
	return defaultBrotliQuality
}

func (s *Server) indexedBlob(key string) (release.Hash, bool) {
	var h release.Hash
	err := s.db.View(func(txn store.Txn) error {
		b, err := txn.Get(key)
		if err != nil {
			return err
		}
		if len(b) != len(h) {
			return errors.New("bad index entry")
		}
		copy(h[:], b)
		return nil
	})
	return h, err == nil && s.blobs.has(h)
}

// derived returns the blob indexed at key, building it with build once if
// it is missing; concurrent callers share one build.
func (s *Server) derived(ctx context.Context, key string, build func(ctx context.Context) (release.Hash, error)) (release.Hash, error) {
	if h, ok := s.indexedBlob(key); ok {
		return h, nil
	}
	v, err, _ := s.flight.Do(key, func() (any, error) {
		if h, ok := s.indexedBlob(key); ok {
			return h, nil
		}
		// The build outlives the request that started it: callers that
		// give up (an edge's timeout) and ask again join the same flight
		// instead of restarting it. Only shutdown stops it.
		bctx, cancel := context.WithTimeout(s.life, 30*time.Minute)
		defer cancel()
		// Origins sharing a store build each blob once: under a lease.
		h, err := s.buildLeased(bctx, key, build)
		if err != nil {
			return nil, err
		}
		return h, nil
	})
	if err != nil {
		return release.Hash{}, err
	}
	return v.(release.Hash), nil
}

// precomputeCapgo prepares a new release of an app that serves Capgo
// devices in the background, so that the first device to ask does not
// wait.
func (s *Server) precomputeCapgo(id release.Hash) {
	s.background(func(ctx context.Context) {
		if err := s.PrepareCapgo(ctx, id); err != nil && ctx.Err() == nil {
			s.log.Warn("prepare release for capgo devices", "release", id, "err", err)
		}
	})
}

// PrepareCapgo builds what Capgo devices download for a release, unless
// it exists: the full zip (for plain releases) and the Brotli payload of
// every file of 8 KiB and more. Builds already running are joined.
func (s *Server) PrepareCapgo(ctx context.Context, id release.Hash) error {
	meta, err := s.CapgoRelease(ctx, id)
	if err != nil || meta.Encrypted != nil {
		return err
	}
	rec, err := s.st.releaseByID(id)
	if err != nil {
		return err
	}
	m, err := s.manifestOf(rec)
	if err != nil {
		return err
	}
	for _, f := range m.Files {
		if !capgo.WantsBrotli(f.Path, f.Size) {
			continue
		}
		if _, err := s.capgoBrotli(ctx, f.SHA256); err != nil {
			return err
		}
	}
	return nil
}

// capgoZip returns the blob of the full zip of a release.
func (s *Server) capgoZip(ctx context.Context, id release.Hash) (release.Hash, error) {
	return s.derived(ctx, pfxCapgoZip+id.String(), func(ctx context.Context) (release.Hash, error) {
		if err := s.checkPatchable(id); err != nil {
			return release.Hash{}, err
		}
		rec, err := s.st.releaseByID(id)
		if err != nil {
			return release.Hash{}, err
		}
		m, err := s.manifestOf(rec)
		if err != nil {
			return release.Hash{}, err
		}
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(s.writeZip(ctx, m, pw)) }()
		// Deflate never grows a file by more than a few bytes per 64 KiB;
		// headers cost ~100 bytes per file.
		limit := m.TotalSize() + m.TotalSize()/64 + int64(len(m.Files))*256 + 1<<20
		h, size, err := s.blobs.put(pr, limit, release.Hash{})
		pr.CloseWithError(err)
		if err != nil {
			return release.Hash{}, fmt.Errorf("origin: build zip of %s: %w", id, err)
		}
		s.log.Info("capgo zip built", "app", rec.App, "version", rec.Version, "bytes", size)
		return h, nil
	})
}

// writeZip writes a deterministic zip of m's files: manifest order (sorted
// paths), fixed timestamps, the manifest's permission bits.
func (s *Server) writeZip(ctx context.Context, m *release.Manifest, w io.Writer) error {
	zw := zip.NewWriter(w)
	// klauspost's Deflate at level 5 is ~3× faster than the standard
	// library's default level for a zip within ~1 % of its size.
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) { return flate.NewWriter(w, 5) })
	for _, f := range m.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr := &zip.FileHeader{Name: f.Path, Method: zip.Deflate, Modified: capgoZipEpoch}
		mode := fs.FileMode(f.Mode & 0o777)
		if mode == 0 {
			mode = 0o644
		}
		hdr.SetMode(mode)
		fw, err := zw.CreateHeader(hdr)
		if err != nil {
			return err
		}
		b, err := s.blobs.open(f.SHA256)
		if err != nil {
			return fmt.Errorf("blob %s of %s: %w", f.SHA256, f.Path, err)
		}
		_, err = io.Copy(fw, b)
		b.Close()
		if err != nil {
			return err
		}
	}
	return zw.Close()
}

// capgoBrotli returns the blob of the Brotli payload of a file blob.
func (s *Server) capgoBrotli(ctx context.Context, file release.Hash) (release.Hash, error) {
	return s.derived(ctx, pfxCapgoBrotli+file.String(), func(ctx context.Context) (release.Hash, error) {
		f, err := s.blobs.open(file)
		if err != nil {
			return release.Hash{}, fmt.Errorf("blob %s: %w", file, ErrNotFound)
		}
		defer f.Close()
		pr, pw := io.Pipe()
		go func() {
			bw := brotli.NewWriterLevel(pw, s.brotliQuality())
			_, err := io.Copy(bw, f)
			if err == nil {
				err = bw.Close()
			}
			pw.CloseWithError(err)
		}()
		h, _, err := s.blobs.put(pr, f.Size()+f.Size()/16+1<<16, release.Hash{})
		pr.CloseWithError(err)
		if err != nil {
			return release.Hash{}, fmt.Errorf("origin: brotli %s: %w", file, err)
		}
		return h, nil
	})
}

// serveDerived answers with a derived blob under a strong ETag naming its
// content hash and the origin-signed statement of that hash, which edges
// verify when they pull it by path.
func (s *Server) serveDerived(w http.ResponseWriter, r *http.Request, h release.Hash, contentType string) {
	s.serveDerivedAt(w, r, r.URL.Path, h, contentType)
}

// serveDerivedAt is serveDerived for an object an edge caches under path,
// which names a variant its URL path alone does not (a patch's ?codecs=).
func (s *Server) serveDerivedAt(w http.ResponseWriter, r *http.Request, path string, h release.Hash, contentType string) {
	f, err := s.blobs.open(h)
	if err != nil {
		s.fail(w, fmt.Errorf("blob %s: %w", h, ErrNotFound))
		return
	}
	defer f.Close()
	// Signed, so an edge can check the bytes before caching them under
	// this path (decision 091).
	if err := s.setDerivedStatement(w, path, h, f.Size()); err != nil {
		s.fail(w, err)
		return
	}
	immutable(w, h.String())
	w.Header().Set("Content-Type", contentType)
	http.ServeContent(w, r, "", time.Time{}, f)
}

func (s *Server) handleCapgoZip(w http.ResponseWriter, r *http.Request) {
	id, err := release.ParseHash(r.PathValue("id"))
	if err != nil {
		s.fail(w, badRequest("release id: %v", err))
		return
	}
	if _, built := s.indexedBlob(pfxCapgoZip + id.String()); !built && !s.mayBuildDerived(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
	defer cancel()
	h, err := s.capgoZip(ctx, id)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.serveDerived(w, r, h, "application/zip")
}

func (s *Server) handleCapgoBrotli(w http.ResponseWriter, r *http.Request) {
	file, err := release.ParseHash(r.PathValue("hash"))
	if err != nil {
		s.fail(w, badRequest("file hash: %v", err))
		return
	}
	if !s.blobs.has(file) {
		s.fail(w, fmt.Errorf("blob %s: %w", file, ErrNotFound))
		return
	}
	if _, built := s.indexedBlob(pfxCapgoBrotli + file.String()); !built && !s.mayBuildDerived(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
	defer cancel()
	h, err := s.capgoBrotli(ctx, file)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.serveDerived(w, r, h, "application/octet-stream")
}
