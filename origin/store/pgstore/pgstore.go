// Package pgstore keeps an origin's records in PostgreSQL, so that any
// number of origins share them: one table of keys and values, and
// serializable transactions that let the database, not a node, decide what
// several origins race for (a version is new, a channel's next seq, a key
// exists). See docs/decisions/111-postgres-and-s3.md.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Table is the one table the origin uses. Keys sort by bytes (COLLATE "C"),
// as the embedded store's do, so prefix scans are index range scans.
const Table = "capstan_records"

const schema = `CREATE TABLE IF NOT EXISTS ` + Table + ` (
	k text COLLATE "C" PRIMARY KEY,
	v bytea NOT NULL
)`

// maxAttempts bounds how often Update runs a transaction that lost a
// serialization conflict; each loser sees the winner's write on its next
// run, so contention on one key settles in about as many runs as there
// were contenders.
const maxAttempts = 40

// scanPage is how many rows a scan reads per query: scans page with
// keyset queries rather than hold a cursor, so fn may query in between.
const scanPage = 256

// Config says how to reach the database.
type Config struct {
	// URL is a postgres:// connection string (libpq syntax; sslmode,
	// passwords and pool_max_conns work as usual).
	URL string
	// MaxConns bounds the connections of this origin (0: pgx's default,
	// the larger of 4 and the CPU count, or pool_max_conns in URL).
	MaxConns int32
}

// Store is PostgreSQL behind store.Records.
type Store struct {
	pool *pgxpool.Pool
}

var _ store.Records = (*Store)(nil)

// Open connects to the database and creates the table if it is missing.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", classify(err))
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: create schema: %w", classify(err))
	}
	return s, nil
}

// migrate creates the schema. Origins starting at the same moment take an
// advisory lock first: concurrent CREATE TABLE IF NOT EXISTS can still
// collide in the catalog.
func (s *Store) migrate(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7290118001)`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schema)
		return err
	})
}

// Close closes every connection.
func (s *Store) Close() { s.pool.Close() }

// View implements store.Records with a read-only snapshot (repeatable
// read): it sees one consistent state and never conflicts with writers.
func (s *Store) View(ctx context.Context, fn func(store.Txn) error) error {
	return s.run(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn)
}

// Update implements store.Records with a serializable transaction, run
// again when PostgreSQL refuses it for a conflict with a concurrent one.
func (s *Store) Update(ctx context.Context, fn func(store.Txn) error) error {
	return s.run(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable}, fn)
}

func (s *Store) run(ctx context.Context, opts pgx.TxOptions, fn func(store.Txn) error) error {
	for attempt := 1; ; attempt++ {
		err := s.once(ctx, opts, fn)
		var de dbError
		if !errors.As(err, &de) {
			return err // nil, or fn's own error
		}
		if !retryable(de.err) || attempt == maxAttempts {
			return classify(de.err)
		}
		// Jittered backoff, growing slowly: contenders spread out instead
		// of colliding again in lockstep.
		d := time.Duration(1+rand.IntN(2+attempt*2)) * time.Millisecond
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
}

// dbError marks an error that came from the database rather than from the
// transaction's function.
type dbError struct{ err error }

func (e dbError) Error() string { return e.err.Error() }
func (e dbError) Unwrap() error { return e.err }

func (s *Store) once(ctx context.Context, opts pgx.TxOptions, fn func(store.Txn) error) error {
	tx, err := s.pool.BeginTx(ctx, opts)
	if err != nil {
		return dbError{err}
	}
	t := &txn{ctx: ctx, tx: tx}
	ferr := fn(t)
	if ferr == nil && t.err == nil {
		if err := tx.Commit(ctx); err != nil {
			return dbError{err}
		}
		return nil
	}
	tx.Rollback(context.WithoutCancel(ctx))
	// A database error inside fn decides, even if fn turned it into
	// something else (a failed Get read as "not found"): a serialization
	// failure means run again, a lost connection means unavailable.
	if t.err != nil && (ferr == nil || retryable(t.err) || unavailable(t.err)) {
		return dbError{t.err}
	}
	return ferr
}

type txn struct {
	ctx context.Context
	tx  pgx.Tx
	err error // the first database error: the transaction is void after it
}

func (t *txn) fail(err error) error {
	if t.err == nil {
		t.err = err
	}
	return err
}

func (t *txn) Get(key string) ([]byte, error) {
	var v []byte
	err := t.tx.QueryRow(t.ctx, `SELECT v FROM `+Table+` WHERE k = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, t.fail(err)
	}
	return v, nil
}

func (t *txn) Set(key string, val []byte) error {
	if val == nil {
		val = []byte{}
	}
	_, err := t.tx.Exec(t.ctx, `INSERT INTO `+Table+` (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v`, key, val)
	if err != nil {
		return t.fail(err)
	}
	return nil
}

func (t *txn) Delete(key string) error {
	if _, err := t.tx.Exec(t.ctx, `DELETE FROM `+Table+` WHERE k = $1`, key); err != nil {
		return t.fail(err)
	}
	return nil
}

func (t *txn) Scan(prefix string, fn func(key string, val []byte) error) error {
	end := store.PrefixEnd(prefix)
	from, inclusive := prefix, true
	for {
		q := `SELECT k, v FROM ` + Table + ` WHERE k > $1`
		if inclusive {
			q = `SELECT k, v FROM ` + Table + ` WHERE k >= $1`
		}
		args := []any{from}
		if end != "" {
			q += ` AND k < $2`
			args = append(args, end)
		}
		q += fmt.Sprintf(` ORDER BY k LIMIT %d`, scanPage)
		rows, err := t.tx.Query(t.ctx, q, args...)
		if err != nil {
			return t.fail(err)
		}
		type row struct {
			k string
			v []byte
		}
		var page []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.k, &r.v); err != nil {
				rows.Close()
				return t.fail(err)
			}
			page = append(page, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return t.fail(err)
		}
		for _, r := range page {
			if err := fn(r.k, r.v); err != nil {
				return err
			}
		}
		if len(page) < scanPage {
			return nil
		}
		from, inclusive = page[len(page)-1].k, false
	}
}

// retryable reports a conflict the database resolved by refusing this
// transaction: serialization failure or deadlock.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// unavailable reports an error of the connection rather than of the
// statement: the server is down, restarting, unreachable or not answering
// in time. Every error that is not a statement's error (a PgError) is one:
// pgx reports a dead connection with network errors, EOFs and "conn
// closed".
func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code[:2] == "08" || // connection exception
			pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03" // shutting down, starting up
	}
	return true
}

// classify wraps errors that mean the database is away in
// store.ErrUnavailable, so the API answers 503 and clients retry.
func classify(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	if unavailable(err) {
		return fmt.Errorf("%w: database: %v", store.ErrUnavailable, err)
	}
	return err
}
