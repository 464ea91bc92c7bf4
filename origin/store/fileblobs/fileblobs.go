// Package fileblobs keeps an origin's blobs as files named by their
// SHA-256 under one folder: the blob store of a single origin on its own
// data folder (docs/decisions/001-storage.md).
package fileblobs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"golang.org/x/sys/unix"
)

// Store keeps immutable content-addressed files under Root. A blob is
// written to a temp file, then renamed into place, so a reader only ever
// sees whole blobs and a crash leaves at most a stray temp file.
type Store struct {
	root string // blobs live in root/ab/abcdef…
	tmp  string
}

var _ store.Blobs = (*Store)(nil)

// New opens the blob folder root, creating it and tmp (the folder for
// partial writes, on the same file system) if needed.
func New(root, tmp string) (*Store, error) {
	for _, d := range []string{root, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("fileblobs: create %s: %w", d, err)
		}
	}
	return &Store{root: root, tmp: tmp}, nil
}

// Root is the folder blobs live in.
func (b *Store) Root() string { return b.root }

// Path is the file a blob is stored in (whether or not it exists).
func (b *Store) Path(h release.Hash) string {
	s := h.String()
	return filepath.Join(b.root, s[:2], s)
}

// Put implements store.Blobs.
func (b *Store) Put(ctx context.Context, r io.Reader, limit int64, want release.Hash) (release.Hash, int64, error) {
	if !want.IsZero() {
		// Already stored: drain nothing, the caller's reader is discarded.
		if fi, err := os.Stat(b.Path(want)); err == nil {
			return want, fi.Size(), nil
		}
	}
	f, err := os.CreateTemp(b.tmp, "blob-*")
	if err != nil {
		return release.Hash{}, 0, fmt.Errorf("store blob: %w", err)
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
		return release.Hash{}, 0, fmt.Errorf("store blob: %w", err)
	}
	var sum release.Hash
	h.Sum(sum[:0])
	if !want.IsZero() && sum != want {
		return release.Hash{}, 0, fmt.Errorf("store blob: %w", store.ErrHashMismatch)
	}
	dst := b.Path(sum)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return release.Hash{}, 0, fmt.Errorf("store blob: %w", err)
	}
	if _, err := os.Stat(dst); err == nil {
		return sum, n, nil // same content already stored: keep the old file
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return release.Hash{}, 0, fmt.Errorf("store blob: %w", err)
	}
	return sum, n, nil
}

// Sync makes every blob written so far durable with one syncfs(2): far
// cheaper than an fsync per file and per folder when an upload holds
// thousands of files.
func (b *Store) Sync(context.Context) error {
	d, err := os.Open(b.root)
	if err != nil {
		return fmt.Errorf("sync blobs: %w", err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("sync blobs: %w", err)
	}
	return nil
}

// Open implements store.Blobs.
func (b *Store) Open(_ context.Context, h release.Hash) (store.Blob, error) {
	f, err := os.Open(b.Path(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", h, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return file{f, fi.Size()}, nil
}

// Size implements store.Blobs.
func (b *Store) Size(_ context.Context, h release.Hash) (int64, error) {
	fi, err := os.Stat(b.Path(h))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("blob %s: %w", h, store.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Walk calls fn for every stored blob, in no particular order; an error
// from fn stops the walk and is returned.
func (b *Store) Walk(ctx context.Context, fn func(h release.Hash, size int64) error) error {
	return filepath.WalkDir(b.root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		h, perr := release.ParseHash(d.Name())
		if perr != nil {
			return nil // not a blob
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return fn(h, fi.Size())
	})
}

var _ store.Sweeper = (*Store)(nil)

// List implements store.Sweeper: the blob files and their modification
// times.
func (b *Store) List(ctx context.Context, fn func(h release.Hash, size int64, written time.Time) error) error {
	return filepath.WalkDir(b.root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		h, perr := release.ParseHash(d.Name())
		if perr != nil {
			return nil // not a blob
		}
		fi, err := d.Info()
		if errors.Is(err, os.ErrNotExist) {
			return nil // deleted meanwhile
		}
		if err != nil {
			return err
		}
		return fn(h, fi.Size(), fi.ModTime())
	})
}

// Delete implements store.Sweeper.
func (b *Store) Delete(_ context.Context, h release.Hash) error {
	if err := os.Remove(b.Path(h)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", h, err)
	}
	return nil
}

type file struct {
	*os.File
	size int64
}

func (f file) Size() int64 { return f.size }
