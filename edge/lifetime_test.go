package edge

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/testutil"
)

// TestServingEdgeJoinsItsClusterAndLeavesAtShutdown: Serve starts the
// edge's own cluster join (Config.Join); the edge reports ready once
// joined, and Shutdown leaves the cluster before it stops.
func TestServingEdgeJoinsItsClusterAndLeavesAtShutdown(t *testing.T) {
	var joined, left atomic.Int32
	cfg := DefaultConfig(filepath.Join(t.TempDir(), "edge"))
	cfg.PollEvery = -1
	cfg.Join = func(ctx context.Context) (func(context.Context), error) {
		joined.Add(1)
		return func(context.Context) { left.Add(1) }, nil
	}
	e := serveEdge(t, cfg)
	testutil.Eventually(t, 10*time.Second, "the edge to join and be ready", func() bool { return joined.Load() == 1 && e.isSynced() })
	if err := e.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if left.Load() != 1 || joined.Load() != 1 {
		t.Fatalf("joined %d times, left %d times; want once each", joined.Load(), left.Load())
	}
}

// TestShutdownHonoursItsDeadline: a cluster that cannot be joined does not
// hold Shutdown, which cancels the join's retries; a background task that
// does not return is waited for only until Shutdown's deadline.
func TestShutdownHonoursItsDeadline(t *testing.T) {
	cfg := DefaultConfig(filepath.Join(t.TempDir(), "edge"))
	cfg.PollEvery = -1
	tries := make(chan struct{}, 16)
	cfg.Join = func(ctx context.Context) (func(context.Context), error) {
		tries <- struct{}{}
		return nil, errors.New("no member answers")
	}
	e := serveEdge(t, cfg)
	<-tries
	ended := make(chan struct{})
	e.background(func(ctx context.Context) { <-ctx.Done(); close(ended) })
	stuck := make(chan struct{})
	defer close(stuck)
	e.background(func(context.Context) { <-stuck })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := e.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("Shutdown returned %v after %v, want its deadline's error at once", err, time.Since(start))
	}
	select {
	case <-ended:
	default:
		t.Fatal("a background task's context was not cancelled by Shutdown")
	}
	if e.Shutdown(context.Background()) != err {
		t.Fatal("a second Shutdown forgot the first's result")
	}
}

// serveEdge starts an edge of cfg serving on 127.0.0.1 (the test shuts it
// down).
func serveEdge(t *testing.T, cfg Config) *Server {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.Serve(ln)
	return e
}
