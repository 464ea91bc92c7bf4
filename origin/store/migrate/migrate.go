// Package migrate copies one origin's data (records and blobs) from one
// store to another: the move from an embedded origin's data folder to
// PostgreSQL and S3 (`capstan origin migrate`). It is resumable (run it
// again after any failure: what is there is skipped or rewritten with the
// same bytes) and verified (every blob by its SHA-256 as it is written,
// every record by a digest of both sides at the end).
package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
)

// Walker lists the blobs of a source store (fileblobs.Store does).
type Walker interface {
	Walk(ctx context.Context, fn func(h release.Hash, size int64) error) error
}

// Source is the store copied from. Nothing may write to it meanwhile: stop
// its origin first (the embedded database refuses a second opener anyway).
type Source struct {
	Name    string // shown in the marker, e.g. the data folder's path
	Records store.Records
	Blobs   interface {
		store.Blobs
		Walker
	}
}

// Dest is the store copied to.
type Dest struct {
	Records store.Records
	Blobs   store.Blobs
}

// Report says what a run did.
type Report struct {
	BlobsCopied, BlobsSkipped int
	BytesCopied               int64
	Records                   int
	// Digest is the SHA-256 over every record (key and value, in key
	// order), equal on both sides once the run succeeds.
	Digest string
}

// markerKey, in the destination, names the source a migration copies
// from; a destination holding records but no marker (or another source's)
// is refused, so a migration never overwrites a store in use.
const markerKey = "m/migrated-from"

type marker struct {
	From    string    `json:"from"`
	Started time.Time `json:"started"`
}

// batch is how many records go in one destination transaction.
const batch = 200

// Run copies every blob, then every record, then checks the records.
// progress, if set, is called now and then with a line for the operator.
func Run(ctx context.Context, src Source, dst Dest, progress func(string)) (Report, error) {
	if progress == nil {
		progress = func(string) {}
	}
	var rep Report
	if err := claim(ctx, src, dst); err != nil {
		return rep, err
	}
	// Blobs first: a record copied before its blobs would name bytes the
	// destination does not have.
	last := time.Now()
	err := src.Blobs.Walk(ctx, func(h release.Hash, size int64) error {
		if n, err := dst.Blobs.Size(ctx, h); err == nil && n == size {
			rep.BlobsSkipped++
			return nil
		}
		f, err := src.Blobs.Open(ctx, h)
		if err != nil {
			return fmt.Errorf("read blob %s: %w", h, err)
		}
		defer f.Close()
		// Put checks the content against h: a blob damaged on the source
		// disk is reported, never copied.
		if _, _, err := dst.Blobs.Put(ctx, f, size, h); err != nil {
			return fmt.Errorf("copy blob %s: %w", h, err)
		}
		rep.BlobsCopied++
		rep.BytesCopied += size
		if time.Since(last) > 2*time.Second {
			last = time.Now()
			progress(fmt.Sprintf("blobs: %d copied (%d bytes), %d already there", rep.BlobsCopied, rep.BytesCopied, rep.BlobsSkipped))
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("migrate: %w", err)
	}
	if err := dst.Blobs.Sync(ctx); err != nil {
		return rep, fmt.Errorf("migrate: %w", err)
	}
	progress(fmt.Sprintf("blobs done: %d copied (%d bytes), %d already there", rep.BlobsCopied, rep.BytesCopied, rep.BlobsSkipped))
	type kv struct {
		k string
		v []byte
	}
	var pending []kv
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		err := dst.Records.Update(ctx, func(tx store.Txn) error {
			for _, p := range pending {
				if err := tx.Set(p.k, p.v); err != nil {
					return err
				}
			}
			return nil
		})
		pending = pending[:0]
		return err
	}
	srcSum := sha256.New()
	err = src.Records.View(ctx, func(tx store.Txn) error {
		return tx.Scan("", func(k string, v []byte) error {
			if strings.HasPrefix(k, "m/") {
				return nil
			}
			digest(srcSum, k, v)
			pending = append(pending, kv{k, append([]byte(nil), v...)})
			rep.Records++
			if len(pending) == batch {
				return flush()
			}
			return nil
		})
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return rep, fmt.Errorf("migrate: copy records: %w", err)
	}
	progress(fmt.Sprintf("records copied: %d", rep.Records))
	dstSum := sha256.New()
	n := 0
	err = dst.Records.View(ctx, func(tx store.Txn) error {
		return tx.Scan("", func(k string, v []byte) error {
			if strings.HasPrefix(k, "m/") {
				return nil
			}
			n++
			digest(dstSum, k, v)
			return nil
		})
	})
	if err != nil {
		return rep, fmt.Errorf("migrate: verify records: %w", err)
	}
	rep.Digest = hex.EncodeToString(srcSum.Sum(nil))
	if got := hex.EncodeToString(dstSum.Sum(nil)); got != rep.Digest || n != rep.Records {
		return rep, fmt.Errorf("migrate: verify records: the destination holds %d records (digest %s), the source %d (digest %s): it holds other data, or something wrote to it during the copy", n, got, rep.Records, rep.Digest)
	}
	return rep, nil
}

func digest(h interface{ Write([]byte) (int, error) }, k string, v []byte) {
	fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(v))
	h.Write(v)
}

// claim refuses a destination that holds records of anything but an
// earlier run from the same source, then marks it.
func claim(ctx context.Context, src Source, dst Dest) error {
	return dst.Records.Update(ctx, func(tx store.Txn) error {
		var m marker
		switch b, err := tx.Get(markerKey); {
		case err == nil:
			if json.Unmarshal(b, &m) == nil && m.From == src.Name {
				return nil // resuming
			}
			return fmt.Errorf("migrate: the destination holds a migration from %q, not %q", m.From, src.Name)
		case !errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("migrate: %w", err)
		}
		used := false
		errUsed := errors.New("used")
		if err := tx.Scan("", func(string, []byte) error { used = true; return errUsed }); err != nil && !errors.Is(err, errUsed) {
			return fmt.Errorf("migrate: %w", err)
		}
		if used {
			return errors.New("migrate: the destination database already holds records (origins running on it?): migrate into an empty one")
		}
		b, err := json.Marshal(marker{From: src.Name, Started: time.Now().UTC()})
		if err != nil {
			return err
		}
		return tx.Set(markerKey, b)
	})
}
