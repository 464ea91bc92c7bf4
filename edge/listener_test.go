package edge_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/release"
)

// dialFrom connects to addr from the loopback address src (Linux routes
// all of 127.0.0.0/8 to lo, so each is a distinct client address).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 3 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// statusOver sends GET /v1/edges on c and returns the status line.
func statusOver(c net.Conn) string {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("GET /v1/edges HTTP/1.1\r\nHost: edge\r\n\r\n"))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// TestConnsPerAddressCapped: one address cannot hold more than its cap of
// connections (the next is answered 429 and closed at once), others are
// served meanwhile, and a closed connection frees its slot.
func TestConnsPerAddressCapped(t *testing.T) {
	f := newFleet(t)
	e := startEdge(t, f, t.TempDir(), func(c *edge.Config) {
		c.ConnsPerAddress = 10
		c.RateLimit.LimitLoopback = true
	})
	addr := strings.TrimPrefix(e.url, "http://")
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 10 {
		held = append(held, dialFrom(t, "127.0.0.1", addr))
	}
	if got := statusOver(dialFrom(t, "127.0.0.1", addr)); !strings.Contains(got, "429") {
		t.Fatalf("connection over the cap: %q, want 429", got)
	}
	if got := statusOver(dialFrom(t, "127.0.0.2", addr)); !strings.Contains(got, "200") {
		t.Fatalf("another address: %q, want 200", got)
	}
	if got := statusOver(held[0]); !strings.Contains(got, "200") {
		t.Fatalf("a connection within the cap: %q", got)
	}
	held[0].Close()
	held = held[1:]
	var got string
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(got, "200") && time.Now().Before(deadline) {
		got = statusOver(dialFrom(t, "127.0.0.1", addr))
	}
	if !strings.Contains(got, "200") {
		t.Fatalf("a freed slot was not given back: %q", got)
	}
}

// flakyListener fails its first accepts with EMFILE, like a process out of
// file descriptors, and can be made to fail for good.
type flakyListener struct {
	net.Listener
	emfile atomic.Int64
	dead   atomic.Bool
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.dead.Load() {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EINVAL}
	}
	if l.emfile.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: &osSyscallError{syscall.EMFILE}}
	}
	return l.Listener.Accept()
}

type osSyscallError struct{ err syscall.Errno }

func (e *osSyscallError) Error() string { return "accept4: " + e.err.Error() }
func (e *osSyscallError) Unwrap() error { return e.err }

// TestServeSurvivesAcceptErrors: EMFILE from accept is retried with
// backoff (fasthttp alone returns from Serve on it, for good), and a
// listener that fails in a way retrying cannot mend makes Serve return an
// error instead of leaving a process that answers nothing.
func TestServeSurvivesAcceptErrors(t *testing.T) {
	cfg := edge.DefaultConfig(t.TempDir())
	e, err := edge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: inner}
	ln.emfile.Store(5)
	served := make(chan error, 1)
	go func() { served <- e.Serve(ln) }()
	resp, err := http.Get("http://" + inner.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("after 5 EMFILE accepts the edge does not answer: %v", err)
	}
	resp.Body.Close()
	_, body := get(t, "http://"+inner.Addr().String()+"/metrics")
	if !strings.Contains(string(body), "capstan_edge_accept_errors_total 5") {
		t.Errorf("accept errors not counted:\n%s", grepLines(string(body), "accept"))
	}

	ln.dead.Store(true)
	c, _ := net.Dial("tcp", inner.Addr().String()) // wake the accept loop
	if c != nil {
		defer c.Close()
	}
	select {
	case err := <-served:
		if err == nil || !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("Serve on a dead listener returned %v, want the accept error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve kept running on a listener that fails for good")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// getFrom GETs url from the loopback address src.
func getFrom(t *testing.T, src, url string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestPatchPullsPerAddress: each patch an edge does not hold costs an
// origin pull and maybe a build, so one address gets only a few; patches
// the edge holds, and other addresses, are served as ever.
func TestPatchPullsPerAddress(t *testing.T) {
	f := newFleet(t)
	var recs []*release.Record
	for i := 1; i <= 4; i++ {
		recs = append(recs, f.upload(t, fmt.Sprintf("1.0.%d", i), map[string][]byte{"index.html": randomBytes(3000)}))
	}
	e := startEdge(t, f, t.TempDir(), func(c *edge.Config) {
		c.PatchPullBurst = 2
		c.PatchPullsPerMinute = 0.001
		c.RateLimit.LimitLoopback = true
	})
	patch := func(base *release.Record) string {
		return e.url + "/v1/patches/" + base.ID.String() + "/" + recs[3].ID.String()
	}
	got := []int{getFrom(t, "127.0.0.1", patch(recs[0])), getFrom(t, "127.0.0.1", patch(recs[1])), getFrom(t, "127.0.0.1", patch(recs[2]))}
	if got[0] != 200 || got[1] != 200 || got[2] != 503 {
		t.Fatalf("three patches the edge does not hold, from one address: %v, want 200 200 503", got)
	}
	if code := getFrom(t, "127.0.0.1", patch(recs[0])); code != 200 {
		t.Fatalf("a patch the edge holds, over the address's budget: %d", code)
	}
	if code := getFrom(t, "127.0.0.2", patch(recs[2])); code != 200 {
		t.Fatalf("another address: %d", code)
	}
}
