package edge_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/edge"
)

// TestOversizedRequests: headers beyond 16 KiB and bodies beyond 1 MiB are
// refused with a status, not buffered without bound.
func TestOversizedRequests(t *testing.T) {
	f := newFleet(t)
	e := startEdge(t, f, t.TempDir(), nil)
	for _, path := range []string{"/v1/check?app=a&channel=b", "/v1/blobs/" + strings.Repeat("a", 64), "/healthz"} {
		req, _ := http.NewRequest("GET", e.url+path, nil)
		req.Header.Set("X-Padding", strings.Repeat("x", 32<<10))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 400 {
				t.Errorf("%s with 32 KiB of headers: %d", path, resp.StatusCode)
			}
		}
	}
	resp, err := http.Post(e.url+"/v1/check?app=a&channel=b", "application/json", strings.NewReader(strings.Repeat("x", 2<<20)))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("2 MiB body: %d", resp.StatusCode)
		}
	}
	// A very long query is refused cleanly too.
	resp, err = http.Get(e.url + "/v1/check?app=" + strings.Repeat("a", 4000) + "&channel=b")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("4000-byte app id: %d", resp.StatusCode)
	}
}

// TestSlowloris: clients that trickle headers are cut off after the read
// timeout, and do not stop the edge from serving others meanwhile.
func TestSlowloris(t *testing.T) {
	f := newFleet(t)
	e := startEdge(t, f, t.TempDir(), func(c *edge.Config) { c.ReadTimeout = 500 * time.Millisecond })
	addr := strings.TrimPrefix(e.url, "http://")
	var conns []net.Conn
	for i := 0; i < 200; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Others are still served while the slow clients hang on.
	resp, err := http.Get(e.url + "/metrics")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("edge starved by slow clients: %v", err)
	}
	resp.Body.Close()
	// And the slow ones are dropped after the timeout.
	c := conns[0]
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	// fasthttp may answer 408 before closing; either way the connection
	// must end well before our 5 s deadline.
	r := bufio.NewReader(c)
	for {
		if _, err := r.ReadString('\n'); err != nil {
			break
		}
	}
	if time.Since(start) > 4*time.Second {
		t.Fatalf("slow client held for %s, read timeout is 500ms", time.Since(start))
	}
}
