package edge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/capstan-ota/capstan/release"
	"github.com/dgraph-io/badger/v4"
)

// Errors of a pull from the origins.
var (
	// ErrNotFound means an origin answered that it does not have the object.
	ErrNotFound = errors.New("edge: not found at the origin")
	// ErrOriginUnavailable means no origin could be reached or answered.
	ErrOriginUnavailable = errors.New("edge: no origin available")
)

const (
	pfxRecord   = "s/" // s/<app/channel> → newest channel envelope
	pfxManifest = "r/" // r/<release id> → signed manifest envelope
)

func (s *Server) persistRecord(key string, env *release.Envelope) {
	b, err := json.Marshal(env)
	if err == nil {
		err = s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(pfxRecord+key), b) })
	}
	if err != nil {
		s.log.Warn("persist channel record", "channel", key, "err", err)
	}
}

// loadState restores the records and manifests held before a restart, so an
// edge serves at once even while every origin is away.
func (s *Server) loadState() error {
	return s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(pfxRecord)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			err := it.Item().Value(func(b []byte) error {
				env, err := release.DecodeEnvelope(b)
				if err != nil {
					return nil
				}
				ch, err := env.Channel()
				if err != nil {
					return nil
				}
				// Checked again: keys may have changed since it was
				// stored, and a record refused now must not be served
				// (or raise the staleness alarm).
				verified, err := s.verifyRecord(env, ch)
				if err != nil {
					s.log.Warn("dropping a stored channel record that no longer verifies", "channel", ch.Key(), "err", err)
					return nil
				}
				s.state.apply(env, ch, verified)
				return nil
			})
			if err != nil {
				return fmt.Errorf("edge: load state: %w", err)
			}
		}
		return nil
	})
}

// manifest returns a release's signed manifest from memory, the cache, or
// an origin (verified against its ID, which is the hash of its signed bytes).
func (s *Server) manifest(ctx context.Context, id release.Hash) (*manifestEntry, error) {
	if me, ok := s.manifests.get(id); ok {
		return me, nil
	}
	v, err, _ := s.flight.Do("manifest/"+id.String(), func() (any, error) {
		var raw []byte
		_ = s.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get([]byte(pfxManifest + id.String()))
			if err != nil {
				return err
			}
			raw, err = item.ValueCopy(nil)
			return err
		})
		fromOrigin := false
		if raw == nil {
			var err error
			raw, err = s.fetchSmall(ctx, "/v1/releases/"+id.String(), release.MaxManifestBytes)
			if err != nil {
				return nil, err
			}
			fromOrigin = true
		}
		env, err := release.DecodeEnvelope(raw)
		if err != nil {
			return nil, fmt.Errorf("edge: manifest %s: %w", id, err)
		}
		if env.ID() != id {
			return nil, fmt.Errorf("edge: manifest %s: content hashes to %s", id, env.ID())
		}
		doc, m, err := env.Release()
		if err != nil {
			return nil, fmt.Errorf("edge: manifest %s: %w", id, err)
		}
		if fromOrigin {
			if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(pfxManifest+id.String()), raw) }); err != nil {
				s.log.Warn("persist manifest", "id", id, "err", err)
			}
		}
		me := &manifestEntry{id: id, envJSON: raw, ans: answer{body: raw}, doc: doc}
		if m != nil {
			me.full.Store(m)
		}
		s.manifests.set(id, me)
		return me, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*manifestEntry), nil
}

// fullManifest returns a release's manifest with every file. A format 2
// release's file list is a blob named by its signed document: pulled and
// cached like any blob, checked against the document's hash.
func (s *Server) fullManifest(ctx context.Context, me *manifestEntry) (*release.Manifest, error) {
	if m := me.full.Load(); m != nil {
		return m, nil
	}
	h := me.doc.Files.SHA256
	e, err := s.ensureBlob(h)
	if err != nil {
		return nil, fmt.Errorf("edge: file list of %s: %w", me.id, err)
	}
	size := e.size
	if size > me.doc.Files.MaxListBytes() {
		return nil, fmt.Errorf("edge: file list of %s is %d bytes", me.id, size)
	}
	b := make([]byte, size)
	if _, err := s.cache.readAt(h, b, 0); err != nil && size > 0 {
		return nil, fmt.Errorf("edge: file list of %s: %w", me.id, err)
	}
	files, err := release.DecodeFileList(b)
	if err != nil {
		return nil, fmt.Errorf("edge: file list of %s: %w", me.id, err)
	}
	m, err := me.doc.WithFiles(files)
	if err != nil {
		return nil, fmt.Errorf("edge: file list of %s: %w", me.id, err)
	}
	me.full.Store(m)
	return m, nil
}

// get asks each origin in turn for path, returning the first 200 answer.
// A 404 from every origin that answered is ErrNotFound; no answer at all
// is ErrOriginUnavailable.
func (s *Server) get(ctx context.Context, path string) (*http.Response, error) {
	return s.getFrom(ctx, s.origins(), path)
}

// getFrom is get over the given origins.
func (s *Server) getFrom(ctx context.Context, origins []string, path string) (*http.Response, error) {
	if len(origins) == 0 {
		return nil, fmt.Errorf("%w: none known yet", ErrOriginUnavailable)
	}
	notFound := false
	var lastErr error
	for _, o := range origins {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(o, "/")+path, nil)
		if err != nil {
			lastErr = err
			continue
		}
		s.m.originFetches.Inc()
		resp, err := s.client.Do(req)
		if err != nil {
			lastErr = err
			s.log.Warn("origin unreachable", "origin", o, "err", err)
			continue
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			return resp, nil
		case resp.StatusCode == http.StatusNotFound:
			notFound = true
		default:
			lastErr = fmt.Errorf("origin %s answered %s", o, resp.Status)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
	if notFound {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, path)
	}
	return nil, fmt.Errorf("%w: %v", ErrOriginUnavailable, lastErr)
}

func (s *Server) fetchSmall(ctx context.Context, path string, limit int64) ([]byte, error) {
	return s.fetchFrom(ctx, s.origins(), path, limit)
}

// fetchFrom is fetchSmall over the given origins.
func (s *Server) fetchFrom(ctx context.Context, origins []string, path string, limit int64) ([]byte, error) {
	resp, err := s.getFrom(ctx, origins, path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %v", ErrOriginUnavailable, path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("edge: %s is over %d bytes", path, limit)
	}
	return b, nil
}

// ensureBlob makes sure the cache holds blob h, pulling it from an origin
// once however many callers ask at the same moment.
func (s *Server) ensureBlob(h release.Hash) (*blobEntry, error) {
	if e, ok := s.cache.lookup(h); ok {
		s.m.cacheHits.Inc()
		return e, nil
	}
	s.m.cacheMisses.Inc()
	v, err, _ := s.flight.Do("blob/"+h.String(), func() (any, error) {
		// Check again inside the flight: an earlier flight may have just
		// filled it (groupcache's load() interleaving).
		if e, ok := s.cache.lookup(h); ok {
			return e, nil
		}
		ctx, cancel := context.WithTimeout(s.life, s.cfg.FetchTimeout)
		defer cancel()
		if _, err := s.pull(ctx, "/v1/blobs/"+h.String(), h); err != nil {
			return nil, err
		}
		e, ok := s.cache.lookup(h)
		if !ok {
			return nil, fmt.Errorf("%w: blob %s was evicted as soon as it was fetched", ErrOriginUnavailable, h)
		}
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*blobEntry), nil
}

// ensureAlias makes sure the cache holds the object an origin serves at
// path (a patch, named by base and target rather than its own hash). The
// origin's strong ETag names the content hash, which the edge verifies. A
// hit reads only memory and allocates nothing.
func (s *Server) ensureAlias(path []byte) (*blobEntry, error) {
	if h, ok := s.cache.aliasBytes(path); ok {
		if e, ok := s.cache.lookup(h); ok {
			s.m.cacheHits.Inc()
			return e, nil
		}
	}
	s.m.cacheMisses.Inc()
	name := string(path)
	v, err, _ := s.flight.Do("alias"+name, func() (any, error) {
		if h, ok := s.cache.alias(name); ok {
			if e, ok := s.cache.lookup(h); ok {
				return e, nil
			}
		}
		s.pulling.Store(name, struct{}{})
		defer s.pulling.Delete(name)
		ctx, cancel := context.WithTimeout(s.life, s.cfg.FetchTimeout)
		defer cancel()
		var h release.Hash
		if _, err := s.pullInto(ctx, name, &h); err != nil {
			return nil, err
		}
		if err := s.cache.setAlias(name, h); err != nil {
			return nil, fmt.Errorf("edge: cache %s: %w", name, err)
		}
		e, ok := s.cache.lookup(h)
		if !ok {
			return nil, fmt.Errorf("%w: %s was evicted as soon as it was fetched", ErrOriginUnavailable, name)
		}
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*blobEntry), nil
}

// aliasMissCosts reports whether a request for the object at path would
// make the edge pull it from an origin: it is not cached and no pull of it
// is under way (a request that joins one costs nothing).
func (s *Server) aliasMissCosts(path []byte) bool {
	if h, ok := s.cache.aliasBytes(path); ok {
		if _, ok := s.cache.lookup(h); ok {
			return false
		}
	}
	_, joining := s.pulling.Load(string(path))
	return !joining
}

func (s *Server) pull(ctx context.Context, path string, h release.Hash) (int64, error) {
	return s.pullInto(ctx, path, &h)
}

// pullInto fetches path into the cache. If *h is zero it is taken from the
// origin's ETag; either way the content must hash to it.
func (s *Server) pullInto(ctx context.Context, path string, h *release.Hash) (int64, error) {
	resp, err := s.get(ctx, path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	size := resp.ContentLength
	if size < 0 {
		return 0, fmt.Errorf("%w: %s: origin sent no Content-Length", ErrOriginUnavailable, path)
	}
	if h.IsZero() {
		want, err := s.derivedHash(resp, path, size)
		if err != nil {
			s.m.refusedPulls.Inc()
			s.log.Warn("refusing an object from an origin", "path", path, "err", err)
			return 0, fmt.Errorf("%w: %s: %v", ErrOriginUnavailable, path, err)
		}
		*h = want
	}
	if err := s.cache.put(*h, size, resp.Body); err != nil {
		return 0, err
	}
	s.m.originBytes.Add(float64(size))
	return size, nil
}

// derivedHash returns the content hash an object named by path (a patch,
// a Capgo payload) must have. With origin keys it is the hash in the
// origin-signed statement the answer carries, which must name path and
// size; the cache then checks the bytes against it, so an origin URL
// serving garbage cannot fill the cache under the real path. Without
// origin keys (a development edge) it is the origin's ETag.
func (s *Server) derivedHash(resp *http.Response, path string, size int64) (release.Hash, error) {
	if len(s.cfg.OriginKeys) == 0 {
		etag, err := release.ParseHash(strings.Trim(resp.Header.Get("ETag"), `"`))
		if err != nil {
			return release.Hash{}, errors.New("origin sent no content hash")
		}
		return etag, nil
	}
	raw := resp.Header.Get(release.DerivedHeader)
	if raw == "" {
		return release.Hash{}, errors.New("origin sent no signed statement of the content")
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil || len(b) > release.MaxStatementBytes {
		return release.Hash{}, errors.New("origin's content statement is not base64 of at most 4 KiB")
	}
	env, err := release.DecodeEnvelope(b)
	if err != nil {
		return release.Hash{}, err
	}
	if err := s.verifyOriginSigned(env); err != nil {
		return release.Hash{}, fmt.Errorf("content statement: %w", err)
	}
	st, err := env.Derived()
	if err != nil {
		return release.Hash{}, err
	}
	if st.Path != path || st.Size != size {
		return release.Hash{}, fmt.Errorf("content statement is for %s (%d bytes), not this answer (%d bytes)", st.Path, st.Size, size)
	}
	return st.SHA256, nil
}
