package edge

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestLimiterTokenBucket(t *testing.T) {
	clk := &testClock{now: time.Unix(1_700_000_000, 0)}
	l := newIPLimiter(RateLimitConfig{PerSecond: 2, Burst: 3, Clients: 1000}, clk.Now)
	a, b := clientKey(net.ParseIP("10.0.0.1")), clientKey(net.ParseIP("10.0.0.2"))
	for i := 0; i < 3; i++ {
		if ok, _ := l.allow(a); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := l.allow(a)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("over the burst: ok=%v wait=%s", ok, wait)
	}
	if ok, _ := l.allow(b); !ok {
		t.Fatal("another address is limited too")
	}
	clk.Advance(500 * time.Millisecond) // one token at 2/s
	if ok, _ := l.allow(a); !ok {
		t.Fatal("no refill")
	}
	if ok, _ := l.allow(a); ok {
		t.Fatal("refilled more than the rate")
	}
	clk.Advance(time.Hour)
	for i := 0; i < 3; i++ {
		if ok, _ := l.allow(a); !ok {
			t.Fatal("refill beyond burst not capped or not refilled")
		}
	}
	if ok, _ := l.allow(a); ok {
		t.Fatal("bucket grew beyond its burst")
	}
}

func TestLimiterBoundedClients(t *testing.T) {
	l := newIPLimiter(RateLimitConfig{PerSecond: 1, Burst: 1, Clients: 64}, time.Now)
	for i := 0; i < 10_000; i++ {
		l.allow(clientKey(net.IPv4(10, 1, byte(i>>8), byte(i))))
	}
	if n := l.tracked(); n > 64 {
		t.Fatalf("%d addresses tracked, bound 64", n)
	}
	if newIPLimiter(RateLimitConfig{PerSecond: -1}, time.Now) != nil {
		t.Fatal("negative rate does not turn the limiter off")
	}
}

func TestClientKeyIPv6Prefix(t *testing.T) {
	a := clientKey(net.ParseIP("2001:db8:1:2::1"))
	b := clientKey(net.ParseIP("2001:db8:1:2:ffff::9"))
	c := clientKey(net.ParseIP("2001:db8:1:3::1"))
	if a != b || a == c {
		t.Fatal("IPv6 clients are not keyed by /64")
	}
	if clientKey(net.ParseIP("10.0.0.1")) == clientKey(net.ParseIP("10.0.0.2")) {
		t.Fatal("IPv4 clients share a bucket")
	}
}

// TestRateLimitHTTP drives the limiter through a real edge: over the
// burst a device gets 429 with Retry-After; health checks never do.
func TestRateLimitHTTP(t *testing.T) {
	clk := &testClock{now: time.Now()}
	cfg := DefaultConfig(filepath.Join(t.TempDir(), "edge"))
	cfg.RateLimit = RateLimitConfig{PerSecond: 1, Burst: 2, LimitLoopback: true}
	cfg.Now = clk.Now
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.Serve(ln)
	defer e.Shutdown(context.Background())
	base := "http://" + ln.Addr().String()
	get := func(path string) *http.Response {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	check := "/v1/check?app=a&channel=b"
	for i := 0; i < 2; i++ {
		if r := get(check); r.StatusCode == http.StatusTooManyRequests {
			t.Fatalf("request %d limited", i)
		}
	}
	r := get(check)
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "1" {
		t.Fatalf("over the limit: %d Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if r := get("/healthz"); r.StatusCode == http.StatusTooManyRequests {
		t.Fatal("health check limited")
	}
	clk.Advance(time.Second)
	if r := get(check); r.StatusCode == http.StatusTooManyRequests {
		t.Fatal("not refilled after a second")
	}
}

// TestLimiterNoAllocs: a known address costs no allocation per request.
func TestLimiterNoAllocs(t *testing.T) {
	l := newIPLimiter(RateLimitConfig{PerSecond: 1e9, Burst: 1e9}, time.Now)
	ip := net.ParseIP("2001:db8::1")
	l.allow(clientKey(ip))
	if n := testing.AllocsPerRun(1000, func() { l.allow(clientKey(ip)) }); n != 0 {
		t.Fatalf("%v allocations per request", n)
	}
}

func BenchmarkLimiterAllow(b *testing.B) {
	l := newIPLimiter(RateLimitConfig{}, time.Now)
	ips := make([]clientID, 1024)
	for i := range ips {
		ips[i] = clientKey(net.IPv4(10, 2, byte(i>>8), byte(i)))
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.allow(ips[i%len(ips)])
			i++
		}
	})
}
