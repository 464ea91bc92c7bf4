package netsim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
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

// TestBucketAccounting checks the token bucket's arithmetic on a clock the
// test controls: bytes leave at the rate once the burst is spent, in the
// order they were taken, and an idle link saves at most one burst.
func TestBucketAccounting(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newBucket(1000, 100, t0) // 1,000 B/s, 100 B burst
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	steps := []struct {
		now  time.Duration
		n    int
		want time.Duration // when the last byte has left
	}{
		{0, 100, 0},                       // the burst goes at once
		{0, 1000, time.Second},            // then 1,000 B at 1,000 B/s
		{0, 500, 1500 * time.Millisecond}, // queued behind them
		{time.Second, 250, 1750 * time.Millisecond},
		{10 * time.Second, 100, 10 * time.Second},                // idle: a full burst again…
		{10 * time.Second, 1, 10*time.Second + time.Millisecond}, // …but no more
	}
	for i, s := range steps {
		if got := b.take(at(s.now), s.n); !got.Equal(at(s.want)) {
			t.Fatalf("step %d: %d B at %s leave at %s, want %s", i, s.n, s.now, got.Sub(t0), s.want)
		}
	}
	// Many small chunks cost what one large one does: (N - burst) / rate.
	b = newBucket(200_000, 2000, t0)
	var last time.Time
	for range 500 {
		last = b.take(t0, 2000)
	}
	if want := at(time.Duration(float64(500*2000-2000) / 200_000 * float64(time.Second))); !last.Equal(want) {
		t.Fatalf("1 MB in 2 kB chunks leaves at %s, want %s", last.Sub(t0), want.Sub(t0))
	}
}

// TestProxyShapesRate sends a body through a rate-limited proxy in each
// direction. The lower bound is exact (the proxy never delivers a byte
// before the rate allows); the upper bound is generous, for a loaded
// machine. The proxy's counters must account for every byte.
func TestProxyShapesRate(t *testing.T) {
	const size = 96 << 10
	body := make([]byte, size)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodGet {
			w.Write(body)
			return
		}
		fmt.Fprint(w, n)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	const rate = 192 << 10 // bytes per second: the body takes 0.5 s
	for _, dir := range []string{"down", "up"} {
		t.Run(dir, func(t *testing.T) {
			cfg := ProxyConfig{Listen: "127.0.0.1:0", Target: ln.Addr().String(), OneWay: 5 * time.Millisecond, Burst: 4096}
			if dir == "down" {
				cfg.Down = rate
			} else {
				cfg.Up = rate
			}
			p, err := NewProxyWith(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			c := &http.Client{Timeout: 30 * time.Second}
			start := time.Now()
			var resp *http.Response
			if dir == "down" {
				resp, err = c.Get("http://" + p.Addr() + "/")
			} else {
				resp, err = c.Post("http://"+p.Addr()+"/", "application/octet-stream", bytes.NewReader(body))
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			el := time.Since(start)
			if dir == "down" && len(got) != size || dir == "up" && string(got) != strconv.Itoa(size) {
				t.Fatalf("server saw or sent the wrong body: %d bytes back", len(got))
			}
			floor := time.Duration(float64(size-cfg.Burst) / rate * float64(time.Second))
			if el < floor {
				t.Errorf("%d B %s at %d B/s took %s, less than the %s the rate implies", size, dir, rate, el, floor)
			}
			if el > 4*floor+5*time.Second {
				t.Errorf("%d B %s at %d B/s took %s, far more than the %s the rate implies", size, dir, rate, el, floor)
			}
			st := p.Stats()
			moved := st.Down
			if dir == "up" {
				moved = st.Up
			}
			if moved < size || moved > size+1024 {
				t.Errorf("proxy counted %d B %s for a %d B body (plus headers)", moved, dir, size)
			}
			if st.Conns != 1 {
				t.Errorf("proxy counted %d connections, want 1", st.Conns)
			}
		})
	}
}

// TestProxyHandshake: with Handshake, the first request on a connection
// costs two round trips (handshake, request), the next one on the same
// connection one.
func TestProxyHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	const oneWay = 40 * time.Millisecond
	p, err := NewProxyWith(ProxyConfig{Listen: "127.0.0.1:0", Target: ln.Addr().String(), OneWay: oneWay, Handshake: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c := &http.Client{Timeout: 10 * time.Second}
	get := func() time.Duration {
		start := time.Now()
		resp, err := c.Get("http://" + p.Addr() + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(start)
	}
	if d := get(); d < 4*oneWay {
		t.Errorf("first request on a new connection took %s, want at least two round trips (%s)", d, 4*oneWay)
	}
	if d := get(); d < 2*oneWay {
		t.Errorf("second request took %s, want at least one round trip (%s)", d, 2*oneWay)
	}
	if st := p.Stats(); st.Conns != 1 {
		t.Errorf("%d connections for two requests on one kept-alive client", st.Conns)
	}
}
