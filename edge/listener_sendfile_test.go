package edge

import (
	"net"
	"testing"
)

// TestGuardedListenerHandsOverTCPConns: a connection counted against its
// address (every non-loopback device) reaches fasthttp as the
// *net.TCPConn itself, which fasthttp needs for writev and sendfile; its
// slot comes back when fasthttp reports it closed.
func TestGuardedListenerHandsOverTCPConns(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{ConnsPerAddress: 1, RateLimit: RateLimitConfig{LimitLoopback: true}}}
	l := s.guardListener(inner)
	defer l.Close()
	go func() {
		if c, err := net.Dial("tcp", inner.Addr().String()); err == nil {
			defer c.Close()
			buf := make([]byte, 1)
			c.Read(buf)
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*net.TCPConn); !ok {
		t.Fatalf("accepted %T, want *net.TCPConn", c)
	}
	key, counted := l.counted(c)
	if !counted || l.open[key] != 1 {
		t.Fatalf("counted %v, open %d; want the connection counted", counted, l.open[key])
	}
	c.Close()
	l.connClosed(c)
	if n := l.open[key]; n != 0 {
		t.Fatalf("%d slots held after close, want 0", n)
	}
}
