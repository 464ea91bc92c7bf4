package edge

import (
	"hash/maphash"
	"sync/atomic"
)

// slotCache is a fixed-size, direct-mapped cache: each key hashes to one
// slot, which holds the last entry stored there. Reads are one atomic load
// and a key comparison, with no lock and no allocation, so every core can
// read the same hot entry at once; a store replaces whatever the slot held.
// That bounds memory whatever keys clients invent (a flood of new keys only
// evicts, it never grows anything), at the price of an occasional rebuild
// when two live keys share a slot.
type slotCache[K comparable, V any] struct {
	seed  maphash.Seed
	hash  func(maphash.Seed, K) uint64
	slots []atomic.Pointer[slotEntry[K, V]]
}

type slotEntry[K comparable, V any] struct {
	key K
	val V
}

// newSlotCache returns a cache of size slots (rounded up to a power of
// two), with hash computing a key's hash from the cache's seed.
func newSlotCache[K comparable, V any](size int, hash func(maphash.Seed, K) uint64) *slotCache[K, V] {
	n := 1
	for n < size {
		n <<= 1
	}
	return &slotCache[K, V]{seed: maphash.MakeSeed(), hash: hash, slots: make([]atomic.Pointer[slotEntry[K, V]], n)}
}

func (c *slotCache[K, V]) slot(k K) *atomic.Pointer[slotEntry[K, V]] {
	return &c.slots[c.hash(c.seed, k)&uint64(len(c.slots)-1)]
}

func (c *slotCache[K, V]) get(k K) (V, bool) {
	if e := c.slot(k).Load(); e != nil && e.key == k {
		return e.val, true
	}
	var zero V
	return zero, false
}

func (c *slotCache[K, V]) put(k K, v V) {
	c.slot(k).Store(&slotEntry[K, V]{key: k, val: v})
}
