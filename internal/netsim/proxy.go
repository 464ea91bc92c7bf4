package netsim

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ProxyConfig describes the link a Proxy puts between its clients and its
// target. The zero value (besides Listen and Target) forwards bytes as they
// come: no delay, no rate limit.
type ProxyConfig struct {
	// Listen is the listen address ("127.0.0.1:0"); Target is where
	// connections are forwarded (SetTarget changes it later).
	Listen, Target string
	// OneWay is the delay added in each direction: a request's round trip
	// through the proxy takes 2×OneWay longer.
	OneWay time.Duration
	// Down and Up cap the link's rate in bytes per second, target to
	// client and client to target; 0 means no cap. Each is one token
	// bucket shared by every connection of the proxy, because the proxy
	// stands for one device's access link: eight parallel downloads share
	// its rate, they do not get eight times as much.
	Down, Up int64
	// Burst is the depth of each bucket in bytes (default: 10 ms at the
	// rate, at least 1,500 B, one packet): how much may leave at once
	// after the link was idle.
	Burst int64
	// Handshake charges every new connection one round trip (2×OneWay)
	// before its first byte reaches the target, as the TCP handshake does
	// on a real link (the kernel completes the handshake with the proxy at
	// once, so without this a new connection would look free).
	Handshake bool
}

// ProxyStats counts what went through a Proxy since it started.
type ProxyStats struct {
	// Down and Up are the bytes forwarded to the clients and to the
	// target: everything on the wire above TCP, HTTP headers included.
	Down, Up int64
	// Conns is the number of client connections accepted.
	Conns int64
}

// Proxy forwards TCP connections from its listener to a target address,
// holding every chunk of data for a fixed delay in each direction, so a
// request's round trip through it takes 2×oneWay longer, and optionally
// limiting each direction's rate (see ProxyConfig).
// Its methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	cfg    ProxyConfig
	target atomic.Pointer[string]
	// down and up are the shared buckets (nil: no rate limit).
	down, up *bucket
	stats    struct{ down, up, conns atomic.Int64 }

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewProxy listens on listen ("127.0.0.1:0") and forwards to target with
// oneWay delay each way, without a rate limit. The TCP handshake is not
// delayed.
func NewProxy(listen, target string, oneWay time.Duration) (*Proxy, error) {
	return NewProxyWith(ProxyConfig{Listen: listen, Target: target, OneWay: oneWay})
}

// NewProxyWith starts a proxy that models the link cfg describes.
func NewProxyWith(cfg ProxyConfig) (*Proxy, error) {
	if cfg.OneWay < 0 || cfg.Down < 0 || cfg.Up < 0 || cfg.Burst < 0 {
		return nil, errors.New("netsim: proxy: negative delay, rate or burst")
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("netsim: proxy: %w", err)
	}
	p := &Proxy{ln: ln, cfg: cfg, conns: map[net.Conn]struct{}{}}
	now := time.Now()
	if cfg.Down > 0 {
		p.down = newBucket(cfg.Down, cfg.Burst, now)
	}
	if cfg.Up > 0 {
		p.up = newBucket(cfg.Up, cfg.Burst, now)
	}
	target := cfg.Target
	p.target.Store(&target)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Stats returns the bytes and connections counted so far.
func (p *Proxy) Stats() ProxyStats {
	return ProxyStats{Down: p.stats.down.Load(), Up: p.stats.up.Load(), Conns: p.stats.conns.Load()}
}

// Addr is the proxy's listen address, "host:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTarget points new connections at addr (a restarted server on a new
// port); open connections keep their old target.
func (p *Proxy) SetTarget(addr string) { p.target.Store(&addr) }

// Close stops listening and cuts every open connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// track registers c so Close can cut it; false if the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.stats.conns.Add(1)
		accepted := time.Now()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			// The client's handshake completed in the kernel at once; only
			// data is delayed, so a request's round trip through the proxy
			// is one added RTT, as over a netem link once connected
			// (ProxyConfig.Handshake adds the handshake's own round trip).
			up, err := net.DialTimeout("tcp", *p.target.Load(), 3*time.Second)
			if err != nil {
				return // the client sees the connection closed, as with a dead server
			}
			if !p.track(up) {
				return
			}
			defer p.untrack(up)
			var wg sync.WaitGroup
			wg.Add(2)
			var notBefore time.Time
			if p.cfg.Handshake {
				notBefore = accepted.Add(2 * p.cfg.OneWay)
			}
			go func() { defer wg.Done(); p.pipe(up, c, p.up, &p.stats.up, notBefore) }()
			go func() { defer wg.Done(); p.pipe(c, up, p.down, &p.stats.down, time.Time{}) }()
			wg.Wait()
		}()
	}
}

type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst, each chunk delivered oneWay after it left the
// link: at once, or when bk (nil: no limit) has let all its bytes through,
// and never before notBefore (the end of a simulated handshake). When src
// ends, dst's write side is closed after the last chunk. Delivered bytes
// are added to n.
func (p *Proxy) pipe(dst, src net.Conn, bk *bucket, n *atomic.Int64, notBefore time.Time) {
	ch := make(chan chunk, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range ch {
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			// Counted before the write returns, so a client that has read
			// everything sees it counted.
			n.Add(int64(len(c.b)))
			if w, err := dst.Write(c.b); err != nil {
				n.Add(int64(w - len(c.b)))
				src.Close()
				for range ch {
				}
				return
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	// A shaped direction reads about 10 ms of its rate at a time, so a
	// large read is not delivered as one late lump.
	size := 32 << 10
	if bk != nil {
		size = int(min(max(bk.rate/100, 512), 32<<10))
	}
	buf := make([]byte, size)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			now := time.Now()
			left := now
			if bk != nil {
				left = bk.take(now, k)
			}
			if left.Before(notBefore) {
				left = notBefore
			}
			ch <- chunk{b: append([]byte(nil), buf[:k]...), due: left.Add(p.cfg.OneWay)}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				dst.Close()
			}
			break
		}
	}
	close(ch)
	<-done
}

// bucket is a token bucket of bytes: tokens accrue at rate per second up
// to burst, and each chunk takes its length. Tokens may go negative: the
// debt is the queue of bytes waiting for the link, so chunks leave in the
// order they were taken, at the rate, as on a serial link.
type bucket struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(rate, burst int64, now time.Time) *bucket {
	if burst == 0 {
		burst = max(rate/100, 1500)
	}
	return &bucket{rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: now}
}

// take reserves n bytes at time now and returns when the last of them has
// left the link: now while tokens last, later when there is a debt.
func (b *bucket) take(now time.Time, n int) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(b.burst, b.tokens+el.Seconds()*b.rate)
		b.last = now
	}
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return now
	}
	return now.Add(time.Duration(-b.tokens / b.rate * float64(time.Second)))
}
