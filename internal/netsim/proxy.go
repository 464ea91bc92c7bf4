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

// Proxy forwards TCP connections from its listener to a target address,
// holding every chunk of data for a fixed delay in each direction, so a
// request's round trip through it takes 2×oneWay longer. Bandwidth is not
// limited, and the TCP handshake is not delayed (the kernel completes it
// before the proxy sees the connection).
// Its methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	oneWay time.Duration
	target atomic.Pointer[string]

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewProxy listens on listen ("127.0.0.1:0") and forwards to target with
// oneWay delay each way.
func NewProxy(listen, target string, oneWay time.Duration) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("netsim: proxy: %w", err)
	}
	p := &Proxy{ln: ln, oneWay: oneWay, conns: map[net.Conn]struct{}{}}
	p.target.Store(&target)
	p.wg.Add(1)
	go p.accept()
	return p, nil
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
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			// The client's handshake completed in the kernel at once; only
			// data is delayed, so a request's round trip through the proxy
			// is one added RTT, as over a netem link once connected.
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
			go func() { defer wg.Done(); p.pipe(up, c) }()
			go func() { defer wg.Done(); p.pipe(c, up) }()
			wg.Wait()
		}()
	}
}

type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst, each chunk delivered oneWay after it was read.
// When src ends, dst's write side is closed after the last chunk.
func (p *Proxy) pipe(dst, src net.Conn) {
	ch := make(chan chunk, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range ch {
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.b); err != nil {
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
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			ch <- chunk{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(p.oneWay)}
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
