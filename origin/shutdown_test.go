package origin

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestShutdownEndsOneLifetime: Shutdown cancels the context every
// background task derives from and waits for them; a task that does not
// return is waited for only until Shutdown's deadline; after it, no task
// starts and store calls fail.
func TestShutdownEndsOneLifetime(t *testing.T) {
	s, _ := newTestServer(t, nil)
	ended := make(chan struct{})
	s.background(func(ctx context.Context) { <-ctx.Done(); close(ended) })
	stuck := make(chan struct{})
	defer close(stuck)
	s.background(func(context.Context) { <-stuck })

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("Shutdown with a stuck task returned %v after %v, want its deadline's error at once", err, time.Since(start))
	}
	select {
	case <-ended:
	default:
		t.Fatal("a background task's context was not cancelled by Shutdown")
	}
	started := false
	s.background(func(context.Context) { started = true })
	if started || s.Shutdown(context.Background()) != err {
		t.Fatal("a task started after Shutdown, or a second Shutdown forgot the first's result")
	}
	if _, err := s.Keys(); err == nil {
		t.Fatal("the store answered after Shutdown")
	}
}
