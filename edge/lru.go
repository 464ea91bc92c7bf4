package edge

import (
	"hash/maphash"
	"sync/atomic"

	"github.com/capstan-ota/capstan/capgo"
)

// lruShards is the number of independent parts of a shardedLRU.
const lruShards = 32

// shardedLRU is a bounded LRU map split into shards with their own locks,
// so requests about different devices do not wait on each other. Until the
// first entry is added, reads touch no lock at all: most fleets never add
// one (the tables hold devices that reported a failure, or set a channel
// with a plugin older than v8).
type shardedLRU[K comparable, V any] struct {
	used   atomic.Bool
	seed   maphash.Seed
	hash   func(maphash.Seed, K) uint64
	shards [lruShards]*capgo.LRU[K, V]
}

// newShardedLRU holds about size entries in all.
func newShardedLRU[K comparable, V any](size int, hash func(maphash.Seed, K) uint64) *shardedLRU[K, V] {
	l := &shardedLRU[K, V]{seed: maphash.MakeSeed(), hash: hash}
	for i := range l.shards {
		l.shards[i] = capgo.NewLRU[K, V](max(1, size/lruShards))
	}
	return l
}

func (l *shardedLRU[K, V]) shard(k K) *capgo.LRU[K, V] {
	return l.shards[l.hash(l.seed, k)%lruShards]
}

func (l *shardedLRU[K, V]) get(k K) (V, bool) {
	if !l.used.Load() {
		var zero V
		return zero, false
	}
	return l.shard(k).Get(k)
}

// add sets k to v and reports whether k was new.
func (l *shardedLRU[K, V]) add(k K, v V) bool {
	l.used.Store(true)
	return l.shard(k).Add(k, v)
}

func (l *shardedLRU[K, V]) remove(k K) {
	if l.used.Load() {
		l.shard(k).Remove(k)
	}
}
