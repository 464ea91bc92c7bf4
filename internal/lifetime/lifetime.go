// Package lifetime is the one lifetime a server owns (decision 144): a
// context that Stop cancels, from which every background task derives,
// and the count of those tasks, which Stop waits for until its own
// deadline. The origin and the edge each hold one.
package lifetime

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Lifetime is a server's lifetime. The zero value is not usable; call
// New. Its methods are safe for concurrent use.
type Lifetime struct {
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex // orders Go's wg.Add before Stop's Wait
	wg     sync.WaitGroup
}

// New starts a lifetime.
func New() *Lifetime {
	l := &Lifetime{}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

// Context is cancelled by Stop: derive every pull, store call and wait of
// the server from it.
func (l *Lifetime) Context() context.Context { return l.ctx }

// Go runs task in the background with the lifetime's context; Stop waits
// for it. After Stop began, Go starts nothing.
func (l *Lifetime) Go(task func(ctx context.Context)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		task(l.ctx)
	}()
}

// Cancel cancels the lifetime's context without waiting for its tasks
// (for a server whose New failed half way).
func (l *Lifetime) Cancel() {
	l.mu.Lock()
	l.cancel()
	l.mu.Unlock()
}

// Stop cancels the lifetime's context and waits for the background tasks
// to return, until ctx is done: then it returns an error saying work is
// still running. It may be called more than once.
func (l *Lifetime) Stop(ctx context.Context) error {
	l.Cancel()
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("background work still running: %w", ctx.Err())
	}
}

// Every calls fn every interval until ctx is done: the loop of a periodic
// background task, started with Go.
func Every(ctx context.Context, every time.Duration, fn func(ctx context.Context)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}
