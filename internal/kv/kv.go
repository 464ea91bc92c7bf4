// Package kv opens Badger databases with options sized for Capstan's nodes
// and bridges Badger's logger to slog. Badger's defaults reserve hundreds of
// megabytes (64 MiB memtables ×5, a 256 MiB block cache); an edge must stay
// under 150 MB RSS, so both origin and edge start from the small profile here.
package kv

import (
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Options says how to open one database.
type Options struct {
	// Dir is the database folder; it is created if missing.
	Dir string
	// SyncWrites makes every commit durable before it returns. The origin's
	// release store needs it (a release must survive power loss once
	// acknowledged); an edge cache, which can refetch, does not.
	SyncWrites bool
	// Logger receives Badger's warnings and errors; nil discards them.
	Logger *slog.Logger
}

// Open opens (or creates) a database with small, bounded memory use.
func Open(o Options) (*badger.DB, error) {
	bo := badger.DefaultOptions(o.Dir).
		WithSyncWrites(o.SyncWrites).
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(8 << 20).
		WithBaseTableSize(2 << 20).
		WithNumCompactors(2).
		// 128 MiB value-log files roll over often enough for value-log GC to
		// reclaim space (badger #2334: GC skips the active file).
		WithValueLogFileSize(128 << 20).
		// Values above 4 KiB (blob chunks) go to the value log, keeping the
		// LSM tree small and compactions cheap.
		WithValueThreshold(4 << 10).
		WithCompression(options.None).
		WithMetricsEnabled(false).
		WithLogger(logAdapter{o.Logger})
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("kv: open %s: %w", o.Dir, err)
	}
	return db, nil
}

type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Errorf(f string, args ...any) {
	if a.l != nil {
		a.l.Error(fmt.Sprintf(f, args...), "component", "badger")
	}
}

func (a logAdapter) Warningf(f string, args ...any) {
	if a.l != nil {
		a.l.Warn(fmt.Sprintf(f, args...), "component", "badger")
	}
}

func (a logAdapter) Infof(string, ...any)  {}
func (a logAdapter) Debugf(string, ...any) {}
