package fileblobs

import (
	"path/filepath"
	"testing"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/origin/store/storetest"
)

func TestBlobs(t *testing.T) {
	storetest.Blobs(t, func(t *testing.T) store.Blobs {
		dir := t.TempDir()
		s, err := New(filepath.Join(dir, "blobs"), filepath.Join(dir, "tmp"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestSweeper: what garbage collection needs of the store.
func TestSweeper(t *testing.T) {
	storetest.Sweeper(t, func(t *testing.T) store.Blobs {
		dir := t.TempDir()
		s, err := New(filepath.Join(dir, "blobs"), filepath.Join(dir, "tmp"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
