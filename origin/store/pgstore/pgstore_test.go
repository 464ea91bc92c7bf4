package pgstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/servicetest"
	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/origin/store/storetest"
)

func TestRecords(t *testing.T) {
	storetest.Records(t, func(t *testing.T) store.Records {
		s, err := Open(context.Background(), Config{URL: servicetest.Postgres(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	})
}

// TestDatabaseAway stops the server under an open store: transactions fail
// with store.ErrUnavailable (the API's 503) rather than hang or look like
// a missing key, and work again once the server is back, on the same store.
func TestDatabaseAway(t *testing.T) {
	pg := servicetest.OwnPostgres(t)
	ctx := context.Background()
	s, err := Open(ctx, Config{URL: pg.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	set := func() error {
		return s.Update(ctx, func(tx store.Txn) error { return tx.Set("k", []byte("v")) })
	}
	if err := set(); err != nil {
		t.Fatal(err)
	}
	pg.Stop()
	if err := set(); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("update with the database stopped: %v, want ErrUnavailable", err)
	}
	err = s.View(ctx, func(tx store.Txn) error { _, err := tx.Get("k"); return err })
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("read with the database stopped: %v, want ErrUnavailable", err)
	}
	pg.Start()
	testutil.Eventually(t, 30*time.Second, "an update to succeed once the database is back", func() bool {
		err := set()
		if err != nil && !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("update after the database came back: %v", err)
		}
		return err == nil
	})
}
