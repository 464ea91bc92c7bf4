package badgerstore

import (
	"testing"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/origin/store/storetest"
)

func TestRecords(t *testing.T) {
	storetest.Records(t, func(t *testing.T) store.Records {
		s, err := Open(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
