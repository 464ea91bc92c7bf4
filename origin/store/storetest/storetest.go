// Package storetest holds the behaviour every store.Records and
// store.Blobs implementation must show, as test functions each
// implementation's tests call on a real instance.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
)

// Records checks a records store. open returns an empty store.
func Records(t *testing.T, open func(t *testing.T) store.Records) {
	ctx := context.Background()
	t.Run("get set delete scan", func(t *testing.T) {
		r := open(t)
		err := r.Update(ctx, func(tx store.Txn) error {
			for _, k := range []string{"a/2", "a/10", "a/1", "b/1", "a"} {
				if err := tx.Set(k, []byte("v"+k)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = r.Update(ctx, func(tx store.Txn) error { return tx.Delete("a/2") })
		if err != nil {
			t.Fatal(err)
		}
		err = r.View(ctx, func(tx store.Txn) error {
			if _, err := tx.Get("a/2"); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("deleted key: err %v, want ErrNotFound", err)
			}
			v, err := tx.Get("b/1")
			if err != nil || string(v) != "vb/1" {
				return fmt.Errorf("get b/1 = %q, %v", v, err)
			}
			var keys []string
			err = tx.Scan("a/", func(k string, v []byte) error {
				if string(v) != "v"+k {
					return fmt.Errorf("scan %s: value %q", k, v)
				}
				keys = append(keys, k)
				return nil
			})
			if err != nil {
				return err
			}
			if got := strings.Join(keys, " "); got != "a/1 a/10" {
				return fmt.Errorf("scan a/ = %q, want byte order %q", got, "a/1 a/10")
			}
			stop := errors.New("stop")
			n := 0
			if err := tx.Scan("", func(string, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
				return fmt.Errorf("scan stopped by fn: err %v after %d keys", err, n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("long scan", func(t *testing.T) {
		// More keys than one page of a paging implementation, with a
		// neighbouring prefix that must not leak in.
		r := open(t)
		const n = 700
		err := r.Update(ctx, func(tx store.Txn) error {
			for i := 0; i < n; i++ {
				if err := tx.Set(fmt.Sprintf("h/app/ch/%020d", i), []byte{byte(i)}); err != nil {
					return err
				}
			}
			return tx.Set("h/app/ch0", []byte("neighbour"))
		})
		if err != nil {
			t.Fatal(err)
		}
		r.View(ctx, func(tx store.Txn) error {
			i := 0
			err := tx.Scan("h/app/ch/", func(k string, v []byte) error {
				if want := fmt.Sprintf("h/app/ch/%020d", i); k != want || v[0] != byte(i) {
					return fmt.Errorf("key %d: %s %v, want %s", i, k, v, want)
				}
				if _, err := tx.Get(k); err != nil { // queries between rows work
					return err
				}
				i++
				return nil
			})
			if err != nil || i != n {
				t.Fatalf("scan: %d keys, %v; want %d", i, err, n)
			}
			return nil
		})
	})
	t.Run("failed update leaves nothing", func(t *testing.T) {
		r := open(t)
		boom := errors.New("boom")
		err := r.Update(ctx, func(tx store.Txn) error {
			if err := tx.Set("k", []byte("half")); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update = %v, want the fn's error", err)
		}
		r.View(ctx, func(tx store.Txn) error {
			if v, err := tx.Get("k"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("write of a failed transaction is visible: %q %v", v, err)
			}
			return nil
		})
	})
	t.Run("scan sees writes made before it", func(t *testing.T) {
		r := open(t)
		err := r.Update(ctx, func(tx store.Txn) error {
			if err := tx.Set("p/1", []byte("x")); err != nil {
				return err
			}
			n := 0
			if err := tx.Scan("p/", func(string, []byte) error { n++; return nil }); err != nil {
				return err
			}
			if n != 1 {
				return fmt.Errorf("scan after set in the same transaction saw %d keys, want 1", n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("concurrent read-modify-write is serializable", func(t *testing.T) {
		r := open(t)
		const workers, each = 8, 10
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					err := r.Update(ctx, func(tx store.Txn) error {
						n := 0
						switch v, err := tx.Get("counter"); {
						case err == nil:
							n, _ = strconv.Atoi(string(v))
						case !errors.Is(err, store.ErrNotFound):
							return err
						}
						return tx.Set("counter", []byte(strconv.Itoa(n+1)))
					})
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		r.View(ctx, func(tx store.Txn) error {
			v, err := tx.Get("counter")
			if string(v) != strconv.Itoa(workers*each) {
				t.Errorf("counter = %q (%v) after %d increments: lost updates", v, err, workers*each)
			}
			return nil
		})
	})
	t.Run("create once", func(t *testing.T) {
		// The rule behind version uniqueness: of transactions that each
		// create a key only if it is missing, exactly one commits it.
		r := open(t)
		const workers = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := 0
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				exists := errors.New("exists")
				err := r.Update(ctx, func(tx store.Txn) error {
					if _, err := tx.Get("r/app/1.0.0"); err == nil {
						return exists
					} else if !errors.Is(err, store.ErrNotFound) {
						return err
					}
					return tx.Set("r/app/1.0.0", []byte(strconv.Itoa(w)))
				})
				switch {
				case err == nil:
					mu.Lock()
					created++
					mu.Unlock()
				case !errors.Is(err, exists):
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if created != 1 {
			t.Fatalf("%d transactions created the same key, want 1", created)
		}
	})
}

// Blobs checks a blob store. open returns an empty store.
func Blobs(t *testing.T, open func(t *testing.T) store.Blobs) {
	ctx := context.Background()
	content := bytes.Repeat([]byte("capstan blob "), 5000)
	sum := release.Hash(sha256.Sum256(content))
	t.Run("put open size", func(t *testing.T) {
		b := open(t)
		if _, err := b.Size(ctx, sum); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Size of a missing blob: %v, want ErrNotFound", err)
		}
		if _, err := b.Open(ctx, sum); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Open of a missing blob: %v, want ErrNotFound", err)
		}
		h, n, err := b.Put(ctx, bytes.NewReader(content), int64(len(content)), release.Hash{})
		if err != nil || h != sum || n != int64(len(content)) {
			t.Fatalf("Put = %s %d %v, want %s %d", h, n, err, sum, len(content))
		}
		if err := b.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if size, err := b.Size(ctx, sum); err != nil || size != int64(len(content)) {
			t.Fatalf("Size = %d %v", size, err)
		}
		f, err := b.Open(ctx, sum)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if f.Size() != int64(len(content)) {
			t.Fatalf("Blob.Size = %d", f.Size())
		}
		if _, err := f.Seek(100, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		if err != nil || !bytes.Equal(got, content[100:]) {
			t.Fatalf("read after seek: %d bytes, %v", len(got), err)
		}
	})
	t.Run("same content twice, known hash not read", func(t *testing.T) {
		b := open(t)
		for i := 0; i < 2; i++ {
			if _, _, err := b.Put(ctx, bytes.NewReader(content), int64(len(content)), sum); err != nil {
				t.Fatal(err)
			}
		}
		h, n, err := b.Put(ctx, failingReader{}, int64(len(content)), sum)
		if err != nil || h != sum || n != int64(len(content)) {
			t.Fatalf("Put of a stored blob read its reader: %s %d %v", h, n, err)
		}
	})
	t.Run("refused content stores nothing", func(t *testing.T) {
		b := open(t)
		other := release.Hash(sha256.Sum256([]byte("other")))
		if _, _, err := b.Put(ctx, bytes.NewReader(content), int64(len(content)), other); !errors.Is(err, store.ErrHashMismatch) {
			t.Fatalf("Put with a wrong hash: %v, want ErrHashMismatch", err)
		}
		if _, _, err := b.Put(ctx, bytes.NewReader(content), int64(len(content))-1, release.Hash{}); err == nil {
			t.Fatal("Put over the limit succeeded")
		}
		if _, _, err := b.Put(ctx, io.MultiReader(bytes.NewReader(content[:10]), failingReader{}), int64(len(content)), release.Hash{}); err == nil {
			t.Fatal("Put of a failing reader succeeded")
		}
		for _, h := range []release.Hash{other, sum} {
			if _, err := b.Size(ctx, h); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("refused content left blob %s: %v", h, err)
			}
		}
	})
	t.Run("empty blob", func(t *testing.T) {
		b := open(t)
		h, n, err := b.Put(ctx, bytes.NewReader(nil), 10, release.Hash{})
		if err != nil || n != 0 || h != release.Hash(sha256.Sum256(nil)) {
			t.Fatalf("Put of nothing = %s %d %v", h, n, err)
		}
		f, err := b.Open(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	})
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("reader failed") }

// Sweeper checks a store.Sweeper: List names every blob Put, with its size
// and a write time around the Put, and nothing else; Delete removes one
// blob and is harmless on a missing one.
func Sweeper(t *testing.T, open func(t *testing.T) store.Blobs) {
	ctx := context.Background()
	b := open(t)
	sw, ok := b.(store.Sweeper)
	if !ok {
		t.Fatalf("%T is not a store.Sweeper", b)
	}
	before := time.Now().Add(-time.Minute)
	put := map[release.Hash]int64{}
	for i := range 3 {
		body := bytes.Repeat([]byte{byte('a' + i)}, 100*(i+1))
		h, n, err := b.Put(ctx, bytes.NewReader(body), 1<<20, release.Hash{})
		if err != nil {
			t.Fatal(err)
		}
		put[h] = n
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	listed := map[release.Hash]int64{}
	err := sw.List(ctx, func(h release.Hash, size int64, written time.Time) error {
		if written.Before(before) || written.After(time.Now().Add(time.Minute)) {
			t.Errorf("blob %s written at %s", h, written)
		}
		listed[h] = size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != len(put) {
		t.Fatalf("listed %d blobs, put %d", len(listed), len(put))
	}
	var gone release.Hash
	for h, n := range put {
		if listed[h] != n {
			t.Fatalf("blob %s listed with %d bytes, put %d", h, listed[h], n)
		}
		gone = h
	}
	if err := sw.Delete(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := sw.Delete(ctx, gone); err != nil {
		t.Fatalf("deleting a missing blob: %v", err)
	}
	if _, err := b.Size(ctx, gone); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a deleted blob: %v", err)
	}
	n := 0
	sw.List(ctx, func(release.Hash, int64, time.Time) error { n++; return nil })
	if n != len(put)-1 {
		t.Fatalf("after a delete %d blobs are listed, want %d", n, len(put)-1)
	}
}
