package edge

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/release"
	"github.com/dgraph-io/badger/v4"
)

// Cache key layout. Blobs are split into chunks so that a download reads
// one short transaction per chunk instead of holding a read transaction
// (which blocks compaction) for the whole of a slow mobile download.
const (
	pfxData   = "d/" // d/<hash><chunk uint32> → chunk bytes
	pfxMeta   = "m/" // m/<hash> → size uint64, written last: the blob is complete
	pfxAlias  = "x/" // x/<name> → hash (patches are named by their base and target)
	chunkSize = 256 << 10
)

// errMiss means the cache does not hold the blob.
var errMiss = errors.New("edge: not in cache")

// blobCache is a size-capped LRU of immutable blobs in Badger.
type blobCache struct {
	db  *badger.DB
	log *slog.Logger
	cap int64

	mu    sync.Mutex // guards lru, index and size
	lru   *list.List // of *cacheEntry, front = most recently used
	index map[release.Hash]*list.Element
	size  int64
}

type cacheEntry struct {
	hash release.Hash
	size int64
}

func newBlobCache(db *badger.DB, capBytes int64, log *slog.Logger) (*blobCache, error) {
	c := &blobCache{db: db, log: log, cap: capBytes, lru: list.New(), index: map[release.Hash]*list.Element{}}
	// Rebuild the index from what survived the restart. Recency is lost;
	// the order of the keys is as good a guess as any.
	err := db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(pfxMeta)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			var h release.Hash
			if len(k) != len(pfxMeta)+32 {
				continue
			}
			copy(h[:], k[len(pfxMeta):])
			var size int64
			if err := it.Item().Value(func(b []byte) error {
				if len(b) != 8 {
					return fmt.Errorf("bad meta for %s", h)
				}
				size = int64(binary.BigEndian.Uint64(b))
				return nil
			}); err != nil {
				return err
			}
			c.index[h] = c.lru.PushBack(&cacheEntry{hash: h, size: size})
			c.size += size
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("edge: load cache index: %w", err)
	}
	return c, nil
}

func metaKey(h release.Hash) []byte { return append([]byte(pfxMeta), h[:]...) }

func chunkKey(h release.Hash, i uint32) []byte {
	k := make([]byte, 0, len(pfxData)+32+4)
	k = append(k, pfxData...)
	k = append(k, h[:]...)
	return binary.BigEndian.AppendUint32(k, i)
}

// stat returns the size of a cached blob and marks it recently used.
func (c *blobCache) stat(h release.Hash) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.index[h]
	if !ok {
		return 0, false
	}
	c.lru.MoveToFront(el)
	return el.Value.(*cacheEntry).size, true
}

// put stores a blob read from r that must hash to h and be size bytes. The
// blob becomes visible only after every chunk is written and verified.
func (c *blobCache) put(h release.Hash, size int64, r io.Reader) error {
	if size < 0 || size > c.cap {
		return fmt.Errorf("edge: blob %s of %d bytes does not fit a cache of %d", h, size, c.cap)
	}
	hasher := newHasher()
	wb := c.db.NewWriteBatch()
	defer wb.Cancel()
	buf := make([]byte, chunkSize)
	var n int64
	for i := uint32(0); ; i++ {
		m, err := io.ReadFull(r, buf)
		if m > 0 {
			n += int64(m)
			if n > size {
				return fmt.Errorf("edge: blob %s is longer than %d bytes", h, size)
			}
			hasher.Write(buf[:m])
			if err := wb.Set(chunkKey(h, i), append([]byte(nil), buf[:m]...)); err != nil {
				return fmt.Errorf("edge: cache blob: %w", err)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("edge: fetch blob %s: %w", h, err)
		}
	}
	if n != size {
		return fmt.Errorf("edge: blob %s: got %d bytes, want %d", h, n, size)
	}
	if got := hasher.sum(); got != h {
		return fmt.Errorf("edge: blob %s: content hashes to %s", h, got)
	}
	var meta [8]byte
	binary.BigEndian.PutUint64(meta[:], uint64(size))
	if err := wb.Set(metaKey(h), meta[:]); err != nil {
		return fmt.Errorf("edge: cache blob: %w", err)
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("edge: cache blob: %w", err)
	}
	c.mu.Lock()
	if _, ok := c.index[h]; !ok {
		c.index[h] = c.lru.PushFront(&cacheEntry{hash: h, size: size})
		c.size += size
	}
	victims := c.evictLocked()
	c.mu.Unlock()
	c.drop(victims)
	return nil
}

// evictLocked removes least recently used entries until the cache fits.
func (c *blobCache) evictLocked() []release.Hash {
	var out []release.Hash
	for c.size > c.cap && c.lru.Len() > 1 {
		el := c.lru.Back()
		e := el.Value.(*cacheEntry)
		c.lru.Remove(el)
		delete(c.index, e.hash)
		c.size -= e.size
		out = append(out, e.hash)
	}
	return out
}

func (c *blobCache) drop(hashes []release.Hash) {
	for _, h := range hashes {
		wb := c.db.NewWriteBatch()
		wb.Delete(metaKey(h))
		// Delete chunk keys by prefix scan: the size is gone from the index.
		prefix := append([]byte(pfxData), h[:]...)
		_ = c.db.View(func(txn *badger.Txn) error {
			opts := badger.DefaultIteratorOptions
			opts.Prefix = prefix
			opts.PrefetchValues = false
			it := txn.NewIterator(opts)
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				wb.Delete(it.Item().KeyCopy(nil))
			}
			return nil
		})
		if err := wb.Flush(); err != nil {
			c.log.Warn("evict blob", "hash", h, "err", err)
		}
	}
}

// readAt copies the blob's bytes starting at off into p, reading whole
// chunks in one short transaction.
func (c *blobCache) readAt(h release.Hash, p []byte, off int64) (int, error) {
	n := 0
	err := c.db.View(func(txn *badger.Txn) error {
		for n < len(p) {
			idx := uint32((off + int64(n)) / chunkSize)
			in := (off + int64(n)) % chunkSize
			item, err := txn.Get(chunkKey(h, idx))
			if errors.Is(err, badger.ErrKeyNotFound) {
				if n == 0 {
					return errMiss
				}
				return io.EOF
			}
			if err != nil {
				return err
			}
			err = item.Value(func(b []byte) error {
				if in >= int64(len(b)) {
					return io.EOF
				}
				n += copy(p[n:], b[in:])
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// reader returns a reader of [off, off+length) of a cached blob.
func (c *blobCache) reader(h release.Hash, off, length int64) io.Reader {
	return &chunkReader{c: c, h: h, off: off, left: length}
}

type chunkReader struct {
	c    *blobCache
	h    release.Hash
	off  int64
	left int64
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	if len(p) > chunkSize {
		p = p[:chunkSize]
	}
	n, err := r.c.readAt(r.h, p, r.off)
	r.off += int64(n)
	r.left -= int64(n)
	if err == io.EOF && r.left > 0 {
		return n, io.ErrUnexpectedEOF
	}
	if err == io.EOF {
		err = nil
	}
	return n, err
}

func (c *blobCache) setAlias(name string, h release.Hash) error {
	return c.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(pfxAlias+name), h[:]) })
}

func (c *blobCache) alias(name string) (release.Hash, bool) {
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
	return h, err == nil
}

func (c *blobCache) used() (bytes int64, blobs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size, c.lru.Len()
}

// gcLoop runs Badger's value-log GC, which is the application's job: it
// reclaims the space of evicted blobs.
func (c *blobCache) gcLoop(stop <-chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			for c.db.RunValueLogGC(0.5) == nil {
			}
		}
	}
}
