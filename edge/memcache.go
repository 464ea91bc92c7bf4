package edge

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/capstan-ota/capstan/release"
)

// memCache keeps the hottest small blobs in memory, handed to fasthttp
// with SetBodyRaw (written straight from this memory, never copied or
// modified). Reads take no lock; adding and evicting the least recently
// used serialise on one mutex, off the hot path.
type memCache struct {
	budget int64
	maxObj int64

	entries *cowMap[release.Hash, *memEntry]
	mu      sync.Mutex // guards size, seq
	size    int64
	seq     int64
}

type memEntry struct {
	data []byte
	seq  int64
	used atomic.Int64 // recency tick of the last use
}

func newMemCache(budget, maxObj int64) *memCache {
	return &memCache{budget: budget, maxObj: maxObj, entries: newCowMap[release.Hash, *memEntry](hashKey)}
}

func (m *memCache) get(h release.Hash) ([]byte, bool) {
	e, ok := m.entries.get(h)
	if !ok {
		return nil, false
	}
	if t := recencyTick(); e.used.Load() < t {
		e.used.Store(t)
	}
	return e.data, true
}

func (m *memCache) add(h release.Hash, data []byte) {
	if int64(len(data)) > m.maxObj || int64(len(data)) > m.budget || m.budget <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.entries.get(h); ok {
		return
	}
	m.seq++
	e := &memEntry{data: data, seq: m.seq}
	e.used.Store(recencyTick())
	m.entries.set(h, e)
	m.size += int64(len(data))
	if m.size <= m.budget {
		return
	}
	// Evict down to 7/8 of the budget at once, so a full cache does not
	// sort its entries on every add.
	type victim struct {
		h release.Hash
		e *memEntry
	}
	var all []victim
	m.entries.each(func(k release.Hash, v *memEntry) {
		if v != e {
			all = append(all, victim{k, v})
		}
	})
	slices.SortFunc(all, func(a, b victim) int {
		if ua, ub := a.e.used.Load(), b.e.used.Load(); ua != ub {
			return int(ua - ub)
		}
		return int(a.e.seq - b.e.seq)
	})
	for _, v := range all {
		if m.size <= m.budget/8*7 {
			break
		}
		m.entries.delete(v.h)
		m.size -= int64(len(v.e.data))
	}
}
