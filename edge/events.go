package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/stats"
	"github.com/valyala/fasthttp"
)

// Defaults of the event pipeline.
const (
	defaultEventQueue   = 20000
	defaultEventFlush   = 2 * time.Second
	defaultEventsPerSec = 100
	// maxLimiterClients bounds the per-address rate limiter's memory; past
	// it, new addresses are let through until the next window.
	maxLimiterClients = 50000
)

// eventQueue holds device events until they are forwarded to an origin.
// It is bounded: when full, the oldest events are dropped and counted, so
// an origin outage costs statistics, never edge memory.
type eventQueue struct {
	mu      sync.Mutex // guards buf, dropped
	buf     []stats.Event
	max     int
	dropped uint64
	kick    chan struct{}
}

func newEventQueue(max int) *eventQueue {
	return &eventQueue{max: max, kick: make(chan struct{}, 1)}
}

func (q *eventQueue) push(evs []stats.Event) (dropped int) {
	q.mu.Lock()
	q.buf = append(q.buf, evs...)
	if over := len(q.buf) - q.max; over > 0 {
		q.buf = append(q.buf[:0], q.buf[over:]...)
		q.dropped += uint64(over)
		dropped = over
	}
	full := len(q.buf) >= stats.MaxEdgeBatch
	q.mu.Unlock()
	if full {
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
	return dropped
}

// take removes up to n events from the front.
func (q *eventQueue) take(n int) []stats.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	if n > len(q.buf) {
		n = len(q.buf)
	}
	out := append([]stats.Event(nil), q.buf[:n]...)
	q.buf = append(q.buf[:0], q.buf[n:]...)
	return out
}

// putBack returns events that could not be sent to the front.
func (q *eventQueue) putBack(evs []stats.Event) {
	q.mu.Lock()
	q.buf = append(evs, q.buf...)
	if over := len(q.buf) - q.max; over > 0 {
		q.buf = q.buf[:q.max]
		q.dropped += uint64(over)
	}
	q.mu.Unlock()
}

func (q *eventQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.buf)
}

// limiter is a fixed-window request counter per client address.
type limiter struct {
	mu     sync.Mutex // guards window, counts
	window int64
	counts map[string]int
	perSec int
}

func (l *limiter) allow(addr string, now time.Time) bool {
	if l.perSec <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w := now.Unix(); w != l.window || l.counts == nil {
		l.window, l.counts = w, map[string]int{}
	}
	n, ok := l.counts[addr]
	if !ok && len(l.counts) >= maxLimiterClients {
		return true
	}
	if n >= l.perSec {
		return false
	}
	l.counts[addr] = n + 1
	return true
}

// handleEvents takes POST /v1/events from a device: a JSON array of
// events (or one event object), bounded in size and count, rate-limited
// per client address. It answers at once; forwarding is asynchronous.
func (s *Server) handleEvents(ctx *fasthttp.RequestCtx) {
	if !s.evLimit.allow(ctx.RemoteIP().String(), s.cfg.Now()) {
		ctx.Response.Header.Set("Retry-After", "1")
		fail(ctx, fasthttp.StatusTooManyRequests, "too many event requests from this address; retry later")
		return
	}
	body := ctx.PostBody()
	if len(body) > stats.MaxDeviceBody {
		fail(ctx, fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("events body is over %d bytes", stats.MaxDeviceBody))
		return
	}
	events, dropped, err := stats.DecodeBatch(body, stats.MaxDeviceBatch)
	if err != nil {
		fail(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	dropped += s.events.push(events)
	s.m.eventsIn.Add(float64(len(events)))
	ctx.SetContentType("application/json")
	fmt.Fprintf(ctx, `{"status":"ok","accepted":%d,"dropped":%d}`, len(events), dropped)
}

// FlushEvents forwards every queued event to an origin now. Events that no
// origin takes stay queued (within the queue's bound).
func (s *Server) FlushEvents(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	for s.events.len() > 0 {
		batch := s.events.take(stats.MaxEdgeBatch)
		if err := s.postEvents(ctx, batch); err != nil {
			s.events.putBack(batch)
			return err
		}
		s.m.eventsOut.Add(float64(len(batch)))
	}
	return nil
}

func (s *Server) postEvents(ctx context.Context, batch []stats.Event) error {
	body, err := json.Marshal(batch)
	if err != nil {
		return fmt.Errorf("edge: encode events: %w", err)
	}
	var errs []string
	for _, o := range s.origins() {
		err := s.postEventsTo(ctx, o, body)
		if err == nil {
			return nil
		}
		errs = append(errs, err.Error())
	}
	return fmt.Errorf("%w: forward events: %s", ErrOriginUnavailable, strings.Join(errs, "; "))
}

func (s *Server) postEventsTo(ctx context.Context, origin string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(origin, "/")+"/v1/events", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if s.cfg.EventsToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.EventsToken)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", origin, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// eventLoop forwards queued events every EventFlush, or sooner when a full
// batch is waiting, and once more on shutdown.
func (s *Server) eventLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.EventFlush)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := s.FlushEvents(ctx); err != nil {
				s.log.Warn("events lost at shutdown", "queued", s.events.len(), "err", err)
			}
			cancel()
			return
		case <-t.C:
		case <-s.events.kick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := s.FlushEvents(ctx); err != nil {
			s.log.Debug("forward events", "queued", s.events.len(), "err", err)
		}
		cancel()
	}
}
