package netsim

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"testing"
	"time"
)

// rtt returns the smallest of three GET round trips to url on one
// kept-alive connection.
func rtt(t *testing.T, url string) time.Duration {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	best := time.Hour
	for i := 0; i < 3; i++ {
		start := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		best = min(best, time.Since(start))
	}
	return best
}

func TestProxyAddsDelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p, err := NewProxy("127.0.0.1:0", ln.Addr().String(), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if d := rtt(t, "http://"+p.Addr()+"/"); d < 40*time.Millisecond {
		t.Fatalf("round trip through a 20 ms one-way proxy took %s", d)
	}
	// A dead target: the client sees the connection closed.
	p.SetTarget("127.0.0.1:1")
	if _, err := (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Get("http://" + p.Addr() + "/"); err == nil {
		t.Fatal("request through a proxy to nowhere succeeded")
	}
}

func TestNetDelays(t *testing.T) {
	if testing.Short() {
		t.Skip("network namespaces")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 serves HTTP inside the namespace")
	}
	ctx := context.Background()
	n, err := NewNet(ctx, t.Logf)
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	h, err := n.AddHost(ctx, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !h.Netem {
		t.Log("this kernel has no netem qdisc: checking the namespace link without delay")
	}
	cmd := h.Command(ctx, "python3", "-m", "http.server", "--bind", h.IP, "8000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := "http://" + h.IP + ":8000/"
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server in the namespace never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := rtt(t, url); h.Netem && d < 50*time.Millisecond {
		t.Fatalf("round trip to a host 50 ms away took %s", d)
	}
}
