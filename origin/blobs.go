package origin

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/capstan-ota/capstan/release"
	"golang.org/x/sys/unix"
)

// blobStore keeps immutable content-addressed files under root. A blob is
// written to tmp, fsynced, then renamed into place, so a reader only ever
// sees whole blobs and a crash leaves at most a stray temp file.
type blobStore struct {
	root string // blobs live in root/ab/abcdef…
	tmp  string
}

func newBlobStore(dataDir string) (*blobStore, error) {
	b := &blobStore{root: filepath.Join(dataDir, "blobs"), tmp: filepath.Join(dataDir, "tmp")}
	for _, d := range []string{b.root, b.tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("origin: create %s: %w", d, err)
		}
	}
	// Temp files left by a crash are garbage: nothing refers to them.
	if ents, err := os.ReadDir(b.tmp); err == nil {
		for _, e := range ents {
			os.Remove(filepath.Join(b.tmp, e.Name()))
		}
	}
	return b, nil
}

func (b *blobStore) path(h release.Hash) string {
	s := h.String()
	return filepath.Join(b.root, s[:2], s)
}

// errHashMismatch means content did not hash to what the caller expected.
var errHashMismatch = errors.New("content does not match its expected SHA-256")

// put stores r's content, at most limit bytes, and makes it durable. If
// want is non-zero the content must hash to it. It returns the hash and size.
func (b *blobStore) put(r io.Reader, limit int64, want release.Hash) (release.Hash, int64, error) {
	h, n, err := b.putNoSync(r, limit, want)
	if err == nil {
		err = b.sync()
	}
	return h, n, err
}

// sync makes every blob written so far durable with one syncfs(2): far
// cheaper than an fsync per file and per folder when an upload holds
// thousands of files. Callers sync before they commit a record that refers
// to the blobs.
func (b *blobStore) sync() error {
	d, err := os.Open(b.root)
	if err != nil {
		return fmt.Errorf("origin: sync blobs: %w", err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("origin: sync blobs: %w", err)
	}
	return nil
}

// putNoSync stores r's content like put, without making it durable yet.
func (b *blobStore) putNoSync(r io.Reader, limit int64, want release.Hash) (release.Hash, int64, error) {
	if !want.IsZero() && b.has(want) {
		// Already stored: drain nothing, the caller's reader is discarded.
		fi, err := os.Stat(b.path(want))
		if err == nil {
			return want, fi.Size(), nil
		}
	}
	f, err := os.CreateTemp(b.tmp, "blob-*")
	if err != nil {
		return release.Hash{}, 0, fmt.Errorf("origin: store blob: %w", err)
	}
	defer os.Remove(f.Name()) // no-op after a successful rename
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, limit+1))
	if err == nil && n > limit {
		err = fmt.Errorf("blob is over the limit of %d bytes", limit)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return release.Hash{}, 0, fmt.Errorf("origin: store blob: %w", err)
	}
	var sum release.Hash
	h.Sum(sum[:0])
	if !want.IsZero() && sum != want {
		return release.Hash{}, 0, fmt.Errorf("origin: store blob: %w", errHashMismatch)
	}
	dst := b.path(sum)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return release.Hash{}, 0, fmt.Errorf("origin: store blob: %w", err)
	}
	if b.has(sum) {
		return sum, n, nil // same content already stored: keep the old file
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return release.Hash{}, 0, fmt.Errorf("origin: store blob: %w", err)
	}
	return sum, n, nil
}

func (b *blobStore) has(h release.Hash) bool {
	_, err := os.Stat(b.path(h))
	return err == nil
}

func (b *blobStore) open(h release.Hash) (*os.File, error) {
	return os.Open(b.path(h))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
