package edge

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstan-ota/capstan/internal/lifetime"
	"github.com/capstan-ota/capstan/release"
	"github.com/dgraph-io/badger/v4"
)

// Badger keys of the cache. Blobs themselves are files (decision 082);
// Badger keeps the patch names.
const (
	pfxAlias = "x/" // x/<name> → hash (patches are named by their base and target)
	// Keys of the chunked blob store that files replaced; dropped at start.
	pfxOldData = "d/"
	pfxOldMeta = "m/"
)

// errMiss means the cache does not hold the blob.
var errMiss = errors.New("edge: not in cache")

// blobCache is a size-capped cache of immutable blobs, each a file named by
// its hash (dir/ab/abcd…), so that a download goes from the page cache to
// the socket with sendfile, and the kernel, not the edge's heap, holds hot
// bytes. A file is written under a temporary name, checked against its
// hash, synced and renamed: a blob's name exists only for its complete,
// verified content, across crashes too.
//
// Which blobs exist, and their sizes, is an in-memory index read without a
// lock; the least recently used are evicted beyond the cap.
type blobCache struct {
	dir string
	db  *badger.DB
	log *slog.Logger
	cap int64

	index   *cowMap[release.Hash, *blobEntry]
	aliases *cowMap[string, release.Hash] // patch names seen, in front of Badger
	seq     atomic.Int64                  // insertion order, to break ties in recency
	mu      sync.Mutex                    // serialises puts' accounting and eviction
	size    atomic.Int64
	count   atomic.Int64
}

// blobEntry is one cached blob, with what its responses need precomputed.
type blobEntry struct {
	hash release.Hash
	size int64
	path string
	// etag is the quoted hex hash, the ETag header's value; hexHash is
	// the hex alone, looked for in If-None-Match.
	etag    []byte
	hexHash []byte
	seq     int64
	used    atomic.Int64 // recency tick of the last use
}

func newBlobEntry(dir string, h release.Hash, size, seq int64) *blobEntry {
	hx := hex.EncodeToString(h[:])
	etag := []byte(`"` + hx + `"`)
	return &blobEntry{hash: h, size: size, path: filepath.Join(dir, hx[:2], hx), etag: etag, hexHash: etag[1 : len(etag)-1], seq: seq}
}

// recencyTick is the clock of the LRU: about a millisecond a tick, so a
// hot blob's recency is written at most once a tick, not on every request.
func recencyTick() int64 { return time.Now().UnixNano() >> 20 }

func newBlobCache(dir string, db *badger.DB, capBytes int64, log *slog.Logger) (*blobCache, error) {
	c := &blobCache{dir: dir, db: db, log: log, cap: capBytes,
		index: newCowMap[release.Hash, *blobEntry](hashKey), aliases: newCowMap[string, release.Hash](hashString)}
	if err := os.RemoveAll(filepath.Join(dir, "tmp")); err != nil {
		return nil, fmt.Errorf("edge: clear cache temp files: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("edge: create cache folder: %w", err)
	}
	// Rebuild the index from what survived the restart, recency from the
	// files' times (when they were fetched).
	type found struct {
		h    release.Hash
		size int64
		t    time.Time
	}
	var all []found
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && (filepath.Dir(p) != dir || len(d.Name()) != 2) {
				return filepath.SkipDir
			}
			return nil
		}
		h, err := release.ParseHash(d.Name())
		if err != nil || filepath.Base(filepath.Dir(p)) != d.Name()[:2] {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		all = append(all, found{h, info.Size(), info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("edge: load cache index: %w", err)
	}
	slices.SortFunc(all, func(a, b found) int { return a.t.Compare(b.t) })
	for _, f := range all {
		e := newBlobEntry(dir, f.h, f.size, c.seq.Add(1))
		e.used.Store(f.t.UnixNano() >> 20)
		c.index.set(f.h, e)
		c.size.Add(f.size)
		c.count.Add(1)
	}
	// Edges before decision 082 kept blobs in Badger chunks: a cache, so
	// dropped rather than converted; blobs are fetched again on demand.
	for _, pfx := range []string{pfxOldMeta, pfxOldData} {
		if err := db.DropPrefix([]byte(pfx)); err != nil {
			return nil, fmt.Errorf("edge: drop the old chunked cache: %w", err)
		}
	}
	c.mu.Lock()
	victims := c.evictLocked(nil)
	c.mu.Unlock()
	c.drop(victims)
	return c, nil
}

// lookup returns a cached blob and marks it recently used.
func (c *blobCache) lookup(h release.Hash) (*blobEntry, bool) {
	e, ok := c.index.get(h)
	if !ok {
		return nil, false
	}
	if t := recencyTick(); e.used.Load() < t {
		e.used.Store(t)
	}
	return e, true
}

// put stores a blob read from r that must hash to h and be size bytes. The
// blob becomes visible only after it is complete, verified and synced.
func (c *blobCache) put(h release.Hash, size int64, r io.Reader) error {
	if size < 0 || size > c.cap {
		return fmt.Errorf("edge: blob %s of %d bytes does not fit a cache of %d", h, size, c.cap)
	}
	if _, ok := c.index.get(h); ok {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), "blob-")
	if err != nil {
		return fmt.Errorf("edge: cache blob: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	hasher := newHasher()
	n, err := io.Copy(io.MultiWriter(tmp, hasher), io.LimitReader(r, size+1))
	if err != nil {
		return fmt.Errorf("edge: fetch blob %s: %w", h, err)
	}
	if n != size {
		return fmt.Errorf("edge: blob %s: got %d bytes, want %d", h, n, size)
	}
	if got := hasher.sum(); got != h {
		return fmt.Errorf("edge: blob %s: content hashes to %s", h, got)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("edge: cache blob: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("edge: cache blob: %w", err)
	}
	e := newBlobEntry(c.dir, h, size, c.seq.Add(1))
	e.used.Store(recencyTick())
	if err := os.MkdirAll(filepath.Dir(e.path), 0o700); err != nil {
		return fmt.Errorf("edge: cache blob: %w", err)
	}
	if err := os.Rename(tmp.Name(), e.path); err != nil {
		return fmt.Errorf("edge: cache blob: %w", err)
	}
	c.mu.Lock()
	if _, ok := c.index.get(h); !ok {
		c.index.set(h, e)
		c.size.Add(size)
		c.count.Add(1)
	}
	victims := c.evictLocked(e)
	c.mu.Unlock()
	c.drop(victims)
	return nil
}

// evictLocked removes least recently used entries (never keep) from the
// index until the cache fits, and returns them for their files to go.
func (c *blobCache) evictLocked(keep *blobEntry) []*blobEntry {
	if c.size.Load() <= c.cap {
		return nil
	}
	var all []*blobEntry
	c.index.each(func(_ release.Hash, e *blobEntry) {
		if e != keep {
			all = append(all, e)
		}
	})
	slices.SortFunc(all, func(a, b *blobEntry) int {
		if ua, ub := a.used.Load(), b.used.Load(); ua != ub {
			return int(ua - ub)
		}
		return int(a.seq - b.seq)
	})
	var out []*blobEntry
	for _, e := range all {
		if c.size.Load() <= c.cap {
			break
		}
		c.index.delete(e.hash)
		c.size.Add(-e.size)
		c.count.Add(-1)
		out = append(out, e)
	}
	return out
}

// drop deletes evicted blobs' files. A download already under way keeps
// reading its open file; the next request for the blob fetches it again.
func (c *blobCache) drop(victims []*blobEntry) {
	for _, e := range victims {
		if err := os.Remove(e.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("evict blob", "hash", e.hash, "err", err)
		}
	}
}

// forget drops a blob whose file went away under the index (evicted
// between a lookup and the open).
func (c *blobCache) forget(e *blobEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.index.get(e.hash); ok && cur == e {
		c.index.delete(e.hash)
		c.size.Add(-e.size)
		c.count.Add(-1)
	}
}

// open opens a cached blob's file.
func (c *blobCache) open(e *blobEntry) (*os.File, error) {
	f, err := os.Open(e.path)
	if errors.Is(err, fs.ErrNotExist) {
		c.forget(e)
		return nil, errMiss
	}
	return f, err
}

// readAt reads len(p) bytes of a cached blob from off.
func (c *blobCache) readAt(h release.Hash, p []byte, off int64) (int, error) {
	e, ok := c.lookup(h)
	if !ok {
		return 0, errMiss
	}
	f, err := c.open(e)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(p, off)
}

func (c *blobCache) setAlias(name string, h release.Hash) error {
	if err := c.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(pfxAlias+name), h[:]) }); err != nil {
		return err
	}
	c.aliases.set(name, h)
	return nil
}

// maxAliases bounds the patch names held in memory (they stay in Badger).
const maxAliases = 100_000

// alias returns the hash a name (a patch's path) stands for, from memory
// or Badger.
func (c *blobCache) alias(name string) (release.Hash, bool) {
	if h, ok := c.aliases.get(name); ok {
		return h, true
	}
	var h release.Hash
	err := c.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(pfxAlias + name))
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error {
			if len(b) != 32 {
				return errMiss
			}
			copy(h[:], b)
			return nil
		})
	})
	if err != nil {
		return release.Hash{}, false
	}
	if c.aliasCount() >= maxAliases {
		c.aliases.reset()
	}
	c.aliases.set(name, h)
	return h, true
}

// aliasBytes is alias for a name held as bytes, from memory only; it does
// not allocate.
func (c *blobCache) aliasBytes(name []byte) (release.Hash, bool) {
	sh := &c.aliases.shards[maphash.Bytes(c.aliases.seed, name)%cowShards]
	h, ok := (*sh.m.Load())[string(name)]
	return h, ok
}

func (c *blobCache) aliasCount() int {
	n := 0
	for i := range c.aliases.shards {
		n += len(*c.aliases.shards[i].m.Load())
	}
	return n
}

func (c *blobCache) used() (bytes int64, blobs int) {
	return c.size.Load(), int(c.count.Load())
}

// gcLoop runs Badger's value-log GC, which is the application's job: it
// reclaims the space of deleted keys (and of the chunked blobs of edges
// before decision 082).
func (c *blobCache) gcLoop(ctx context.Context, every time.Duration) {
	lifetime.Every(ctx, every, func(context.Context) {
		for c.db.RunValueLogGC(0.5) == nil {
		}
	})
}
