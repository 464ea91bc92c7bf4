package edge

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// Connection bounds of an edge's listener (issue 16, finding 3: 19,900 idle
// connections from one address took 19,920 descriptors and 730 MB, and the
// first EMFILE stopped fasthttp's Serve for good while the process stayed
// in gossip).
const (
	// DefaultConnsPerAddress caps the open connections of one client
	// address. A device keeps at most a few (its downloads run 8 at a
	// time); a carrier NAT with many updating phones needs more, an
	// attacker holding idle sockets gets no more.
	DefaultConnsPerAddress = 1024
	// DefaultMaxConns caps every open connection of the edge.
	DefaultMaxConns = 20000
)

// Accept backoff after a failed accept (descriptors or memory exhausted):
// like net/http, from 5 ms doubling to 1 s.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// guardedListener is the edge's listener as fasthttp sees it. It retries
// accept errors that pass (EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED)
// with backoff instead of returning them, which would end fasthttp's Serve,
// and closes at once a connection whose address already holds its cap,
// before fasthttp spends a goroutine or a buffer on it.
type guardedListener struct {
	net.Listener
	s        *Server
	perAddr  int // ≤ 0: no cap
	loopback bool

	mu   sync.Mutex // guards open
	open map[clientID]int
}

func (s *Server) guardListener(ln net.Listener) *guardedListener {
	return &guardedListener{Listener: ln, s: s, perAddr: s.cfg.ConnsPerAddress, loopback: s.cfg.RateLimit.LimitLoopback, open: map[clientID]int{}}
}

// Accept returns the next connection within its address's cap. It
// returns an error only when the listener is closed or fails in a way
// retrying cannot mend.
func (l *guardedListener) Accept() (net.Conn, error) {
	wait := time.Duration(0)
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !retryableAccept(err) {
				return nil, err
			}
			wait = min(max(2*wait, acceptBackoffMin), acceptBackoffMax)
			l.s.m.acceptErrors.Inc()
			if now := time.Now().UnixNano(); now-l.s.acceptLogged.Load() > int64(time.Minute) {
				l.s.acceptLogged.Store(now)
				l.s.log.Error("edge: accepting connections fails; retrying with backoff (capstan_edge_accept_errors_total counts them)", "err", err, "backoff", wait)
			}
			time.Sleep(wait)
			continue
		}
		wait = 0
		_, ok := l.admit(c)
		if !ok {
			l.s.m.connsRefused.Inc()
			// A short answer a person debugging can read; never blocks
			// long, a fresh socket's send buffer is empty.
			c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
			c.Write([]byte("HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"))
			c.Close()
			continue
		}
		// The connection goes to fasthttp as it came: a wrapper would cost
		// every response its writev and every file body its sendfile
		// (fasthttp and net look for *net.TCPConn). Its slot is given back
		// by connClosed, from fasthttp's ConnState.
		return c, nil
	}
}

// connClosed gives back the slot of a connection admit counted, when
// fasthttp reports it closed (or hijacked).
func (l *guardedListener) connClosed(c net.Conn) {
	if key, counted := l.counted(c); counted {
		l.release(key)
	}
}

// counted says whether admit counts c against an address, and which.
func (l *guardedListener) counted(c net.Conn) (clientID, bool) {
	if l.perAddr <= 0 {
		return clientID{}, false
	}
	ta, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok || (ta.IP.IsLoopback() && !l.loopback) {
		return clientID{}, false
	}
	return clientKey(ta.IP), true
}

// admit counts c against its address; key is nil for a connection that
// is not counted (no cap, loopback exempt, an address it cannot read).
func (l *guardedListener) admit(c net.Conn) (*clientID, bool) {
	key, counted := l.counted(c)
	if !counted {
		return nil, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key] >= l.perAddr {
		return nil, false
	}
	l.open[key]++
	return &key, true
}

func (l *guardedListener) release(key clientID) {
	l.mu.Lock()
	if n := l.open[key] - 1; n > 0 {
		l.open[key] = n
	} else {
		delete(l.open, key)
	}
	l.mu.Unlock()
}

// retryableAccept reports whether an accept error is one that passes:
// the process or system is out of descriptors or buffers, or one
// connection was aborted before it was accepted.
func retryableAccept(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
