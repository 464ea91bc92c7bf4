package origin

import (
	"context"
	"io"
	"os"
	"path/filepath"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
)

// blobStore is the origin's handle on its store.Blobs, plus the local
// folder where uploads are received before their files become blobs.
type blobStore struct {
	b   store.Blobs
	tmp string
	ctx context.Context // the server's lifetime: cancelled by Close
}

// cleanTmp removes temp files a crash left behind: nothing refers to them.
func cleanTmp(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// put stores r's content, at most limit bytes, and makes it durable. If
// want is non-zero the content must hash to it. It returns the hash and size.
func (b *blobStore) put(r io.Reader, limit int64, want release.Hash) (release.Hash, int64, error) {
	h, n, err := b.putNoSync(r, limit, want)
	if err == nil {
		err = b.sync()
	}
	return h, n, err
}

// sync makes every blob written so far durable. Callers sync before they
// commit a record that refers to the blobs.
func (b *blobStore) sync() error { return b.b.Sync(b.ctx) }

// putNoSync stores r's content like put, without making it durable yet.
func (b *blobStore) putNoSync(r io.Reader, limit int64, want release.Hash) (release.Hash, int64, error) {
	return b.b.Put(b.ctx, r, limit, want)
}

func (b *blobStore) has(h release.Hash) bool {
	_, err := b.b.Size(b.ctx, h)
	return err == nil
}

func (b *blobStore) open(h release.Hash) (store.Blob, error) {
	return b.b.Open(b.ctx, h)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
