package edge

import (
	"testing"

	"github.com/capstan-ota/capstan/release"
)

// BenchmarkMemCacheGet: a hit on the hottest small blobs, from all cores
// (every download of a small file reads it).
func BenchmarkMemCacheGet(b *testing.B) {
	m := newMemCache(32<<20, 1<<20)
	keys := make([]release.Hash, 256)
	for i := range keys {
		keys[i] = release.Sum([]byte{byte(i), byte(i >> 8)})
		m.add(keys[i], make([]byte, 4096))
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := m.get(keys[i%len(keys)]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
}
