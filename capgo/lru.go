package capgo

import (
	"container/list"
	"sync"
	"time"
)

// LRU is a size-bounded map that forgets its least recently used entries.
// The edge uses it for per-device state that must never grow without
// bound: releases that failed on a device, and channel overrides. It is
// safe for concurrent use.
type LRU[K comparable, V any] struct {
	mu    sync.Mutex // guards ll, items
	max   int
	ll    *list.List // of *lruEntry[K, V], front = most recent
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
}

// NewLRU returns an LRU holding at most size entries (at least 1).
func NewLRU[K comparable, V any](size int) *LRU[K, V] {
	return &LRU[K, V]{max: max(size, 1), ll: list.New(), items: map[K]*list.Element{}}
}

// Get returns the value for k and marks it recently used.
func (c *LRU[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		return el.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

// Add sets k to v, evicting the least recently used entry when full.
func (c *LRU[K, V]) Add(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		el.Value.(*lruEntry[K, V]).val = v
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&lruEntry[K, V]{k, v})
	for c.ll.Len() > c.max {
		el := c.ll.Back()
		c.ll.Remove(el)
		delete(c.items, el.Value.(*lruEntry[K, V]).key)
	}
}

// Remove deletes k.
func (c *LRU[K, V]) Remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.Remove(el)
		delete(c.items, k)
	}
}

// Len returns the number of entries.
func (c *LRU[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// Limiter is a fixed-window rate limiter per key (a client address or a
// device), with a bounded number of keys: past MaxKeys in one window, new
// keys are let through rather than tracked, so the limiter's memory is
// bounded whatever a flood of addresses does. It is safe for concurrent
// use.
type Limiter struct {
	// PerWindow is the number of requests a key may make per window; zero
	// or negative means no limit.
	PerWindow int
	// Window is the length of a window (default 1 s).
	Window time.Duration
	// MaxKeys bounds the keys tracked per window (default 100,000).
	MaxKeys int

	mu     sync.Mutex // guards start, counts
	start  time.Time
	counts map[string]int
}

// Allow counts a request of key at now. When the key is over its rate it
// returns false and the seconds until the window ends (at least 1).
func (l *Limiter) Allow(key string, now time.Time) (bool, int) {
	if l == nil || l.PerWindow <= 0 {
		return true, 0
	}
	win := l.Window
	if win <= 0 {
		win = time.Second
	}
	maxKeys := l.MaxKeys
	if maxKeys <= 0 {
		maxKeys = 100_000
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil || now.Sub(l.start) >= win || now.Before(l.start) {
		l.start, l.counts = now, map[string]int{}
	}
	n, ok := l.counts[key]
	if !ok && len(l.counts) >= maxKeys {
		return true, 0
	}
	if n >= l.PerWindow {
		retry := int((l.start.Add(win).Sub(now) + time.Second - 1) / time.Second)
		return false, max(retry, 1)
	}
	l.counts[key] = n + 1
	return true, 0
}
