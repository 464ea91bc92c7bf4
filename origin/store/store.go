// Package store says what an origin keeps and what it needs from the place
// it keeps it: Records, a small transactional ordered key-value store for
// every record (apps, releases, channel records and their history, API keys,
// counters, derived-blob indexes, build leases), and Blobs, immutable
// content-addressed bytes (files, manifests, patches, zips).
//
// The origin defines its records as keys and JSON values on top of these
// two interfaces, so that one origin on its own data folder
// (store/badgerstore, store/fileblobs) and any number of origins sharing a
// database and a bucket (store/pgstore, store/s3blobs) run the same code:
// what must be decided once for all origins (a version exists, a channel's
// next seq, a key is revoked) is decided by the transaction.
package store

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/capstan-ota/capstan/release"
)

// Errors every implementation returns, wrapped, so callers can branch with
// errors.Is.
var (
	// ErrNotFound means the key or blob does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable means the store could not be reached or lost the
	// connection (a database restarting, a bucket timing out). Nothing of
	// the failed transaction is visible; the request may be retried.
	ErrUnavailable = errors.New("store unavailable")
)

// Records is a transactional, ordered key-value store. Transactions are
// serializable: two transactions that read what the other writes cannot
// both commit, so read-then-write decisions (is this version new? what is
// the channel's next seq?) hold across every origin sharing the store.
//
// fn may run more than once (a transaction that lost a conflict is run
// again from the start), so it must not have effects outside txn other
// than setting results it fully recomputes on each run. Implementations are
// safe for concurrent use.
type Records interface {
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Txn) error) error
	// Update runs fn in a read-write transaction and commits it if fn
	// returns nil; an error from fn discards every write and is returned.
	Update(ctx context.Context, fn func(Txn) error) error
}

// Txn reads and writes inside one transaction. It is not safe for
// concurrent use. Keys are strings of printable ASCII; values are bytes.
type Txn interface {
	// Get returns a copy of key's value, or an error wrapping ErrNotFound.
	Get(key string) ([]byte, error)
	// Set stores val under key; the caller must not modify val afterwards.
	Set(key string, val []byte) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(key string) error
	// Scan calls fn for every key that starts with prefix, in byte order.
	// val is valid only during the call. An error from fn stops the scan
	// and is returned. fn may call Get; write after the scan.
	Scan(prefix string, fn func(key string, val []byte) error) error
}

// Blobs keeps immutable bytes under their SHA-256. Writing the same content
// twice stores it once, so a retried or repeated write is harmless, and a
// blob, once visible, never changes. Implementations are safe for
// concurrent use.
type Blobs interface {
	// Put stores at most limit bytes read from r and returns their hash and
	// length. If want is not zero the content must hash to it (else an
	// error wrapping ErrHashMismatch), and a blob already stored under want
	// is not read again. The blob may not survive a crash until Sync.
	Put(ctx context.Context, r io.Reader, limit int64, want release.Hash) (release.Hash, int64, error)
	// Sync makes every blob Put so far durable. Callers sync before they
	// commit a record that refers to the blobs.
	Sync(ctx context.Context) error
	// Open opens a blob for reading, or returns an error wrapping
	// ErrNotFound.
	Open(ctx context.Context, h release.Hash) (Blob, error)
	// Size returns a blob's length, or an error wrapping ErrNotFound.
	Size(ctx context.Context, h release.Hash) (int64, error)
}

// Sweeper is implemented by Blobs stores whose blobs can be deleted: what
// garbage collection needs (origin/gc.go). A blob is deleted only when no
// record refers to it and no upload or build that could refer to it is
// under way; that is decided by the origin under its records, so a Sweeper
// only lists and deletes.
type Sweeper interface {
	// List calls fn for every stored blob with its size and when it was
	// written, in no particular order; an error from fn stops the listing
	// and is returned.
	List(ctx context.Context, fn func(h release.Hash, size int64, written time.Time) error) error
	// Delete removes a blob; a missing blob is not an error.
	Delete(ctx context.Context, h release.Hash) error
}

// Blob is one open blob.
type Blob interface {
	io.ReadSeekCloser
	// Size is the blob's length in bytes.
	Size() int64
}

// ErrHashMismatch means content did not hash to what the caller expected.
var ErrHashMismatch = errors.New("content does not match its expected SHA-256")

// PrefixEnd returns the smallest key greater than every key that starts
// with prefix, or "" when there is none (prefix is all 0xff bytes): the
// upper bound of a prefix scan on stores that scan by range.
func PrefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}
