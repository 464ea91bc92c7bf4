package edge

import (
	"hash/maphash"
	"sync/atomic"

	// golang-lru earns its place: a maintained, generic, thread-safe LRU
	// (decision 145) instead of one written here.
	lru "github.com/hashicorp/golang-lru/v2"
)

// lruShards is the number of independent parts of a shardedLRU.
const lruShards = 32

// shardedLRU is a bounded LRU map split into shards, each a golang-lru
// cache with its own lock, so requests about different devices do not wait
// on each other. Until the first entry is added, reads touch no lock at
// all: most fleets never add one (the tables hold devices that reported a
// failure, or set a channel with a plugin older than v8).
type shardedLRU[K comparable, V any] struct {
	used   atomic.Bool
	seed   maphash.Seed
	hash   func(maphash.Seed, K) uint64
	shards [lruShards]*lru.Cache[K, V]
}

// newShardedLRU holds about size entries in all.
func newShardedLRU[K comparable, V any](size int, hash func(maphash.Seed, K) uint64) *shardedLRU[K, V] {
	l := &shardedLRU[K, V]{seed: maphash.MakeSeed(), hash: hash}
	for i := range l.shards {
		l.shards[i] = newLRU[K, V](size / lruShards)
	}
	return l
}

// newLRU returns a golang-lru cache of at least one entry (its only
// error is a size below one).
func newLRU[K comparable, V any](size int) *lru.Cache[K, V] {
	c, _ := lru.New[K, V](max(1, size))
	return c
}

func (l *shardedLRU[K, V]) shard(k K) *lru.Cache[K, V] {
	return l.shards[l.hash(l.seed, k)%lruShards]
}

func (l *shardedLRU[K, V]) get(k K) (V, bool) {
	if !l.used.Load() {
		var zero V
		return zero, false
	}
	return l.shard(k).Get(k)
}

// set sets k to v.
func (l *shardedLRU[K, V]) set(k K, v V) {
	l.used.Store(true)
	l.shard(k).Add(k, v)
}

// addNew adds k (with v) unless it is there, and reports whether it was
// new: "first time seen" in one atomic step.
func (l *shardedLRU[K, V]) addNew(k K, v V) bool {
	l.used.Store(true)
	present, _ := l.shard(k).ContainsOrAdd(k, v)
	return !present
}

func (l *shardedLRU[K, V]) remove(k K) {
	if l.used.Load() {
		l.shard(k).Remove(k)
	}
}
