package edge

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/stats"
)

func TestEventQueueBounded(t *testing.T) {
	q := newEventQueue(10 * eventShards)
	evs := make([]stats.Event, 10*eventShards+50)
	for i := range evs {
		evs[i] = stats.Event{Action: stats.ActionInstall, Device: fmt.Sprint(i)}
	}
	// One connection fills its shard, then the others; past the bound the
	// newest are dropped and counted.
	if d := q.push(7, evs); d != 50 {
		t.Fatalf("dropped %d, want 50", d)
	}
	if q.len() != 10*eventShards || q.droppedTotal() != 50 {
		t.Fatalf("len %d dropped %d", q.len(), q.droppedTotal())
	}
	got := q.take(nil, 30)
	if len(got) != 30 {
		t.Fatalf("took %d, want 30", len(got))
	}
	if got := q.take(got[:0], 100000); len(got) != 10*eventShards-30 {
		t.Fatalf("took %d, want the %d left", len(got), 10*eventShards-30)
	}
	if d := q.push(7, evs[:20]); d != 0 || q.len() != 20 {
		t.Fatalf("after draining: dropped %d, len %d", d, q.len())
	}
	if got := q.take(nil, 100); len(got) != 20 || got[0].Device != "0" || got[19].Device != "19" {
		t.Fatalf("one connection's events came back as %d, first %q: want them in order", len(got), got[0].Device)
	}
}

// TestEventQueueFoldsRepeatedChecks: a device checking again and again
// costs one queued event with a count, not one per check; anything else
// in between starts a new event.
func TestEventQueueFoldsRepeatedChecks(t *testing.T) {
	q := newEventQueue(10 * eventShards)
	check := stats.Event{Action: stats.ActionCheck, App: "a", Channel: "c", Device: "d", Version: "1.0.0"}
	for range 1000 {
		q.push(1, []stats.Event{check})
	}
	other := check
	other.Device = "e"
	q.push(1, []stats.Event{other, check})
	got := q.take(nil, 10)
	if len(got) != 3 || got[0].N() != 1000 || got[1].N() != 1 || got[2].N() != 1 || q.droppedTotal() != 0 {
		t.Fatalf("queued %+v, dropped %d; want 1000 checks folded into one, then two", got, q.droppedTotal())
	}
	for _, e := range got {
		if err := e.Validate(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEventQueuePushDoesNotAllocate: the request path copies an event into
// its shard, nothing more.
func TestEventQueuePushDoesNotAllocate(t *testing.T) {
	q := newEventQueue(20000)
	ev := [1]stats.Event{{Action: stats.ActionCheck, App: "a", Channel: "c", Device: "d"}}
	q.push(3, ev[:])
	if n := testing.AllocsPerRun(1000, func() { q.push(3, ev[:]) }); n != 0 {
		t.Fatalf("%.1f allocations per push", n)
	}
}

func TestWindowLimiter(t *testing.T) {
	l := newWindowLimiter(3, 1000)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	now := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := l.allow(a, now); !ok {
			t.Fatalf("request %d refused", i)
		}
	}
	if ok, retry := l.allow(a, now); ok || retry != 1 {
		t.Fatalf("fourth request in one second: ok %v, retry %d", ok, retry)
	}
	if ok, _ := l.allow(b, now); !ok {
		t.Fatal("another address refused")
	}
	if ok, _ := l.allow(a, now.Add(time.Second)); !ok {
		t.Fatal("next window refused")
	}
	if ok, _ := newWindowLimiter(-1, 10).allow(a, now); !ok {
		t.Fatal("disabled limiter refused")
	}
	// Memory is bounded: past the tracked addresses, new ones pass.
	small := newWindowLimiter(1, limiterShards)
	var wg sync.WaitGroup
	for i := range 4096 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			small.allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), now)
		}()
	}
	wg.Wait()
	for i := range small.shards {
		if n := len(small.shards[i].counts); n > 1 {
			t.Fatalf("shard %d tracks %d addresses, bound 1", i, n)
		}
	}
	if n := testing.AllocsPerRun(1000, func() { l.allow(a, now.Add(5*time.Second)) }); n != 0 {
		t.Fatalf("%.1f allocations per request", n)
	}
}

// TestWindowLimiterSpreadsIPv4: addresses that differ only in their last
// octets (one carrier's pool) spread over the shards; with one shard each
// past its bound, they would pass untracked.
func TestWindowLimiterSpreadsIPv4(t *testing.T) {
	l := newWindowLimiter(1, maxLimiterClients)
	now := time.Unix(1000, 0)
	for i := range 1024 {
		l.allow(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), now)
	}
	used := 0
	for i := range l.shards {
		if len(l.shards[i].counts) > 0 {
			used++
		}
	}
	if used < limiterShards/2 {
		t.Fatalf("1,024 addresses of 10.2.0.0/16 fell into %d of %d shards", used, limiterShards)
	}
}

// BenchmarkWindowLimiterAllow: the per-address limit of event posts and
// Capgo requests, many addresses from all cores.
func BenchmarkWindowLimiterAllow(b *testing.B) {
	l := newWindowLimiter(1<<30, maxLimiterClients)
	addrs := make([]netip.Addr, 1024)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
	}
	now := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.allow(addrs[i%len(addrs)], now)
			i++
		}
	})
}
