// Package badgerstore keeps an origin's records in an embedded Badger
// database with synchronous writes: the store of a single origin on its own
// data folder (docs/decisions/001-storage.md).
package badgerstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/capstan-ota/capstan/internal/kv"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/dgraph-io/badger/v4"
)

// Store is a Badger database behind store.Records.
type Store struct {
	db *badger.DB
	// mu serialises read-write transactions. Badger's own optimistic check
	// would refuse all but one of the conflicting ones; a single process
	// commits one at a time anyway (each commit is one fsync), so waiting
	// costs nothing and no transaction ever has to run again.
	mu sync.Mutex
}

var _ store.Records = (*Store)(nil)

// Open opens (or creates) the database in dir. Every commit is durable
// before it returns: an acknowledged release must survive power loss.
func Open(dir string, log *slog.Logger) (*Store, error) {
	db, err := kv.Open(kv.Options{Dir: dir, SyncWrites: true, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("badgerstore: %w", err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// View implements store.Records.
func (s *Store) View(ctx context.Context, fn func(store.Txn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(t *badger.Txn) error { return fn(txn{t}) })
}

// Update implements store.Records.
func (s *Store) Update(ctx context.Context, fn func(store.Txn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(t *badger.Txn) error { return fn(txn{t}) })
}

type txn struct{ t *badger.Txn }

func (t txn) Get(key string) ([]byte, error) {
	item, err := t.t.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func (t txn) Set(key string, val []byte) error { return t.t.Set([]byte(key), val) }

func (t txn) Delete(key string) error { return t.t.Delete([]byte(key)) }

func (t txn) Scan(prefix string, fn func(key string, val []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(prefix)
	it := t.t.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := string(item.Key())
		if err := item.Value(func(b []byte) error { return fn(k, b) }); err != nil {
			return err
		}
	}
	return nil
}
