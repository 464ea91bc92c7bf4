package edge

import (
	"fmt"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/stats"
)

func TestEventQueueBounded(t *testing.T) {
	q := newEventQueue(100)
	evs := make([]stats.Event, 150)
	for i := range evs {
		evs[i].Device = fmt.Sprint(i)
	}
	if d := q.push(evs); d != 50 {
		t.Fatalf("dropped %d, want 50", d)
	}
	got := q.take(10)
	if len(got) != 10 || got[0].Device != "50" {
		t.Fatalf("oldest kept is %q, want 50", got[0].Device)
	}
	q.putBack(got)
	if q.len() != 100 {
		t.Fatalf("len %d after put back", q.len())
	}
	q.putBack(make([]stats.Event, 5))
	if q.len() != 100 || q.dropped != 55 {
		t.Fatalf("len %d dropped %d", q.len(), q.dropped)
	}
}

func TestLimiter(t *testing.T) {
	l := &limiter{perSec: 3}
	now := time.Unix(1000, 0)
	for i := range 3 {
		if !l.allow("a", now) {
			t.Fatalf("request %d refused", i)
		}
	}
	if l.allow("a", now) {
		t.Fatal("fourth request in one second allowed")
	}
	if !l.allow("b", now) {
		t.Fatal("another address refused")
	}
	if !l.allow("a", now.Add(time.Second)) {
		t.Fatal("next window refused")
	}
	if !(&limiter{perSec: -1}).allow("a", now) {
		t.Fatal("disabled limiter refused")
	}
}
