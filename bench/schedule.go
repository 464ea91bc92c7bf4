package bench

import (
	"context"
	"sync"
	"time"
)

// schedule says when sessions start.
type schedule struct {
	// rate is the open-loop arrival rate in sessions per second; zero
	// selects the closed loop.
	rate float64
	// concurrency is the number of sessions in flight in the closed loop,
	// and the cap on sessions in flight in the open loop.
	concurrency int
	duration    time.Duration
}

// opFunc runs one session. intended is when the schedule meant it to start;
// latencies are measured from it, not from when the session got to run.
type opFunc func(ctx context.Context, intended time.Time)

// run starts sessions per s until s.duration has passed or ctx ends, waits
// for the sessions in flight, and returns how many it started.
//
// Open loop: session i is due at start + i/rate. The loop never waits for a
// session to finish before the next is due, so a slow server cannot slow
// the arrivals down; when concurrency sessions are already in flight the
// next one waits for a slot, and that wait is part of its latency because
// op measures from intended. This is the coordinated-omission correction
// of wrk2, done by construction instead of by back-filling samples.
//
// Closed loop: concurrency workers each run sessions back to back; a
// session is intended to start when its worker is free.
func (s schedule) run(ctx context.Context, op opFunc) int64 {
	start := time.Now()
	end := start.Add(s.duration)
	// Sessions get the caller's context, not the schedule's deadline: a
	// session started before the end finishes, and cancelling the caller's
	// context still stops everything.
	sessionCtx := ctx
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var wg sync.WaitGroup
	var started int64
	conc := max(s.concurrency, 1)
	if s.rate <= 0 {
		var mu sync.Mutex
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					mu.Lock()
					started++
					mu.Unlock()
					op(sessionCtx, time.Now())
				}
			}()
		}
		wg.Wait()
		return started
	}
	slots := make(chan struct{}, conc)
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i := int64(0); ; i++ {
		// Computed from i, not by adding an interval, so rounding does not
		// drift the rate and a late loop catches up.
		intended := start.Add(time.Duration(float64(i) * float64(time.Second) / s.rate))
		if !intended.Before(end) {
			break
		}
		if wait := time.Until(intended); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				wg.Wait()
				return started
			case <-timer.C:
			}
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return started
		case slots <- struct{}{}:
		}
		started++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			op(sessionCtx, intended)
		}()
	}
	wg.Wait()
	return started
}
