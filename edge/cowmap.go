package edge

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/capstan-ota/capstan/release"
)

// cowShards is the number of independent parts of a cowMap.
const cowShards = 64

// cowMap is a map for data read on every request and written rarely
// (which blobs the cache holds, patch names, memory-cached bodies). Reads
// are an atomic load and a map lookup, with no lock, so any number of
// cores can read the same entry at once. A write copies one shard (a 64th
// of the map) under that shard's lock.
type cowMap[K comparable, V any] struct {
	seed   maphash.Seed
	hash   func(maphash.Seed, K) uint64
	shards [cowShards]cowShard[K, V]
}

type cowShard[K comparable, V any] struct {
	mu sync.Mutex // serialises writers
	m  atomic.Pointer[map[K]V]
	_  [48]byte // keeps neighbouring shards off one cache line
}

func newCowMap[K comparable, V any](hash func(maphash.Seed, K) uint64) *cowMap[K, V] {
	c := &cowMap[K, V]{seed: maphash.MakeSeed(), hash: hash}
	for i := range c.shards {
		c.shards[i].m.Store(&map[K]V{})
	}
	return c
}

// hashKey spreads content hashes over shards: their bytes are already
// uniformly random.
func hashKey(_ maphash.Seed, h release.Hash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

// hashString is maphash for string keys.
func hashString(seed maphash.Seed, s string) uint64 { return maphash.String(seed, s) }

func (c *cowMap[K, V]) shard(k K) *cowShard[K, V] {
	return &c.shards[c.hash(c.seed, k)%cowShards]
}

func (c *cowMap[K, V]) get(k K) (V, bool) {
	v, ok := (*c.shard(k).m.Load())[k]
	return v, ok
}

// update replaces a shard's map by a copy that fn changed, under the
// shard's lock.
func (sh *cowShard[K, V]) update(fn func(m map[K]V)) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old := *sh.m.Load()
	next := make(map[K]V, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	fn(next)
	sh.m.Store(&next)
}

func (c *cowMap[K, V]) set(k K, v V) { c.shard(k).update(func(m map[K]V) { m[k] = v }) }

func (c *cowMap[K, V]) delete(k K) {
	sh := c.shard(k)
	if _, ok := (*sh.m.Load())[k]; ok {
		sh.update(func(m map[K]V) { delete(m, k) })
	}
}

// each calls fn for every entry of a snapshot of each shard.
func (c *cowMap[K, V]) each(fn func(K, V)) {
	for i := range c.shards {
		for k, v := range *c.shards[i].m.Load() {
			fn(k, v)
		}
	}
}

// reset empties the map.
func (c *cowMap[K, V]) reset() {
	for i := range c.shards {
		c.shards[i].update(func(m map[K]V) { clear(m) })
	}
}
