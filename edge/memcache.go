package edge

import (
	"container/list"
	"sync"

	"github.com/capstan-ota/capstan/release"
)

// memCache keeps the hottest small blobs in memory, so that the most asked
// for files are served without touching Badger. Entries are immutable and
// handed to fasthttp with SetBodyRaw, never modified.
type memCache struct {
	budget int64
	maxObj int64

	mu    sync.Mutex // guards lru, index and size
	lru   *list.List
	index map[release.Hash]*list.Element
	size  int64
}

type memEntry struct {
	hash release.Hash
	data []byte
}

func newMemCache(budget, maxObj int64) *memCache {
	return &memCache{budget: budget, maxObj: maxObj, lru: list.New(), index: map[release.Hash]*list.Element{}}
}

func (m *memCache) get(h release.Hash) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.index[h]
	if !ok {
		return nil, false
	}
	m.lru.MoveToFront(el)
	return el.Value.(*memEntry).data, true
}

func (m *memCache) add(h release.Hash, data []byte) {
	if int64(len(data)) > m.maxObj || m.budget <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.index[h]; ok {
		return
	}
	m.index[h] = m.lru.PushFront(&memEntry{hash: h, data: data})
	m.size += int64(len(data))
	for m.size > m.budget && m.lru.Len() > 0 {
		el := m.lru.Back()
		e := el.Value.(*memEntry)
		m.lru.Remove(el)
		delete(m.index, e.hash)
		m.size -= int64(len(e.data))
	}
}
