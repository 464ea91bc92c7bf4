package lifetime

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestStopCancelsAndWaits: Stop cancels every task's context and waits
// for them; a task that does not return is waited for until Stop's
// deadline only; after Stop, Go starts nothing.
func TestStopCancelsAndWaits(t *testing.T) {
	l := New()
	ended := make(chan struct{})
	l.Go(func(ctx context.Context) { <-ctx.Done(); close(ended) })
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	default:
		t.Fatal("Stop returned before its task ended")
	}
	started := false
	l.Go(func(context.Context) { started = true })
	if started {
		t.Fatal("a task started after Stop")
	}

	l = New()
	stuck := make(chan struct{})
	defer close(stuck)
	l.Go(func(context.Context) { <-stuck })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := l.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop with a stuck task: %v, want its deadline's error", err)
	}
}
