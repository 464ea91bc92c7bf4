package edge

import (
	"container/list"
	"hash/maphash"
	"math"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// RateLimitConfig bounds how fast one client address may call the device
// endpoints (check, blobs, patches, releases, rotations). Device endpoints
// are public, so this is what keeps one address from taking an edge down;
// the defaults are generous because a carrier-grade NAT puts thousands of
// phones behind one IPv4 address, and one update is one request per file
// the device lacks.
type RateLimitConfig struct {
	// PerSecond is the sustained rate per client address (default 500;
	// negative turns the limiter off).
	PerSecond float64
	// Burst is how many requests a quiet address may make at once
	// (default 5,000: a full install of a large bundle).
	Burst int
	// Clients bounds the addresses tracked at once (default 65,536); the
	// least recently seen are forgotten first, which only ever gives a
	// forgotten address a fresh, full bucket. Memory is about 100 bytes
	// per address.
	Clients int
	// LimitLoopback also limits clients on 127.0.0.0/8 and ::1. They are
	// exempt by default so that a local load generator (capstan bench) or
	// a sidecar measures the edge, not the limiter. An edge behind a local
	// reverse proxy sees every device as loopback and must rate-limit in
	// that proxy instead.
	LimitLoopback bool
}

// DefaultRateLimit returns the generous defaults.
func DefaultRateLimit() RateLimitConfig {
	return RateLimitConfig{PerSecond: 500, Burst: 5000, Clients: 65536}
}

const ipLimiterShards = 16

// ipLimiter is a token bucket per client address, with a bounded LRU of
// buckets per shard. Its methods are safe for concurrent use.
type ipLimiter struct {
	cfg    RateLimitConfig
	now    func() time.Time
	seed   maphash.Seed
	shards [ipLimiterShards]ipLimiterShard
}

type ipLimiterShard struct {
	mu  sync.Mutex // guards lru and m
	lru *list.List // of *ipBucket, most recent at the front
	m   map[clientID]*list.Element
	max int
}

type ipBucket struct {
	key    clientID
	tokens float64
	last   time.Time
}

// clientID is a client address as a map key: no allocation per request.
// Byte 0 is 4 or 6, the rest the IPv4 address or the IPv6 /64 prefix.
type clientID [9]byte

// newIPLimiter returns nil when limiting is off.
func newIPLimiter(cfg RateLimitConfig, now func() time.Time) *ipLimiter {
	d := DefaultRateLimit()
	if cfg.PerSecond < 0 {
		return nil
	}
	if cfg.PerSecond == 0 {
		cfg.PerSecond = d.PerSecond
	}
	if cfg.Burst <= 0 {
		cfg.Burst = d.Burst
	}
	if cfg.Clients <= 0 {
		cfg.Clients = d.Clients
	}
	l := &ipLimiter{cfg: cfg, now: now, seed: maphash.MakeSeed()}
	per := max(1, cfg.Clients/ipLimiterShards)
	for i := range l.shards {
		l.shards[i] = ipLimiterShard{lru: list.New(), m: map[clientID]*list.Element{}, max: per}
	}
	return l
}

// clientKey is the address a bucket belongs to: the IPv4 address, or the
// /64 prefix of an IPv6 address (one subscriber's allocation, which a
// client can otherwise rotate through freely).
func clientKey(ip net.IP) clientID {
	var id clientID
	if v4 := ip.To4(); v4 != nil {
		id[0] = 4
		copy(id[1:], v4)
		return id
	}
	id[0] = 6
	copy(id[1:], ip) // the first 8 bytes: the /64
	return id
}

// allow takes a token for key. When none is left it returns false and how
// long until one is.
func (l *ipLimiter) allow(key clientID) (bool, time.Duration) {
	sh := &l.shards[maphash.Comparable(l.seed, key)%ipLimiterShards]
	now := l.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var b *ipBucket
	if e, ok := sh.m[key]; ok {
		sh.lru.MoveToFront(e)
		b = e.Value.(*ipBucket)
		b.tokens = math.Min(float64(l.cfg.Burst), b.tokens+now.Sub(b.last).Seconds()*l.cfg.PerSecond)
		b.last = now
	} else {
		b = &ipBucket{key: key, tokens: float64(l.cfg.Burst), last: now}
		sh.m[key] = sh.lru.PushFront(b)
		for sh.lru.Len() > sh.max {
			old := sh.lru.Back()
			sh.lru.Remove(old)
			delete(sh.m, old.Value.(*ipBucket).key)
		}
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.cfg.PerSecond * float64(time.Second))
	return false, wait
}

// tracked returns how many addresses the limiter holds.
func (l *ipLimiter) tracked() int {
	n := 0
	for i := range l.shards {
		l.shards[i].mu.Lock()
		n += l.shards[i].lru.Len()
		l.shards[i].mu.Unlock()
	}
	return n
}

// limited answers 429 with Retry-After and reports true when the client
// of a device request is over its rate. Health and metrics are never
// limited, so monitoring keeps working during a flood.
func (s *Server) limited(ctx *fasthttp.RequestCtx) bool {
	l := s.trust.limiter
	if l == nil {
		return false
	}
	path := ctx.Path()
	if string(path) == "/healthz" || string(path) == "/metrics" {
		return false
	}
	ip := ctx.RemoteIP()
	if ip.IsLoopback() && !l.cfg.LimitLoopback {
		return false
	}
	ok, wait := l.allow(clientKey(ip))
	if ok {
		return false
	}
	secs := int(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	fail(ctx, fasthttp.StatusTooManyRequests, "too many requests from this address; retry later")
	ctx.Response.Header.Set("Retry-After", strconv.Itoa(secs))
	s.trust.rateLimited.Inc()
	return true
}
