package pgstore

import (
	"context"
	"testing"

	"github.com/capstan-ota/capstan/internal/servicetest"
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
