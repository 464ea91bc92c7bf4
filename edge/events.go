package edge

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
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

// eventShards is the number of independent parts of the event queue;
// limiterShards those of the per-address limiters. Requests pick one by
// connection or address, so cores serving different connections rarely
// touch the same lock or cache line. A lock is held for the copy of an
// event, a few tens of nanoseconds a request.
const (
	eventShards      = 16
	limiterShardBits = 6
	limiterShards    = 1 << limiterShardBits
)

// eventQueue holds device events until they are forwarded to an origin. It
// is bounded and sharded: each request appends to its connection's shard
// under that shard's lock, never a lock every request shares, and spills
// into the next shards only when that one is full. When every shard is
// full new events are dropped and counted, so an origin outage costs
// statistics, never edge memory. A device's repeated identical checks fold into one event
// with a count, which is what the origin counts anyway.
type eventQueue struct {
	perShard int
	kick     chan struct{}
	shards   [eventShards]eventShard
}

type eventShard struct {
	mu      sync.Mutex // guards buf, dropped
	buf     []stats.Event
	dropped uint64
	_       [64]byte // keeps neighbouring shards off one cache line
}

func newEventQueue(size int) *eventQueue {
	return &eventQueue{perShard: max(1, size/eventShards), kick: make(chan struct{}, 1)}
}

// push queues evs on the shard chosen by hint (the connection), spilling
// into the next shards when it is full, and returns how many were dropped
// because the whole queue was.
func (q *eventQueue) push(hint uint64, evs []stats.Event) (dropped int) {
	kick := false
	for probe := uint64(0); len(evs) > 0 && probe < eventShards; probe++ {
		sh := &q.shards[(hint+probe)%eventShards]
		sh.mu.Lock()
		i := 0
		for ; i < len(evs); i++ {
			e := &evs[i]
			if n := len(sh.buf); n > 0 && foldCheck(&sh.buf[n-1], e) {
				continue
			}
			if len(sh.buf) >= q.perShard {
				break
			}
			if sh.buf == nil {
				sh.buf = make([]stats.Event, 0, min(q.perShard, 64))
			}
			sh.buf = append(sh.buf, *e)
		}
		evs = evs[i:]
		if probe == eventShards-1 {
			// Nowhere left: count the loss where it happened.
			sh.dropped += uint64(len(evs))
		}
		// Forward early when a shard nears its bound (or holds a full
		// batch), rather than drop events until the next tick.
		kick = kick || len(sh.buf) >= min(q.perShard*3/4, stats.MaxEdgeBatch)
		sh.mu.Unlock()
	}
	if kick {
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
	return len(evs)
}

// foldCheck adds check e to last when both are the same device's check of
// the same release and native version, and reports whether it did.
func foldCheck(last, e *stats.Event) bool {
	if e.Action != stats.ActionCheck || last.Action != stats.ActionCheck || last.Device != e.Device ||
		last.Release != e.Release || last.App != e.App || last.Channel != e.Channel || last.Version != e.Version ||
		last.Native != e.Native || last.Error != e.Error || last.Cause != e.Cause || last.Bytes != e.Bytes {
		return false
	}
	n := int64(last.N() + e.N())
	if n > stats.MaxCount {
		return false
	}
	last.Count = n
	return true
}

// take appends up to n queued events to out, oldest of each shard first.
func (q *eventQueue) take(out []stats.Event, n int) []stats.Event {
	for i := range q.shards {
		if len(out) >= n {
			break
		}
		sh := &q.shards[i]
		sh.mu.Lock()
		k := min(len(sh.buf), n-len(out))
		out = append(out, sh.buf[:k]...)
		rest := copy(sh.buf, sh.buf[k:])
		clear(sh.buf[rest:])
		sh.buf = sh.buf[:rest]
		sh.mu.Unlock()
	}
	return out
}

// len returns the events queued.
func (q *eventQueue) len() int {
	n := 0
	for i := range q.shards {
		q.shards[i].mu.Lock()
		n += len(q.shards[i].buf)
		q.shards[i].mu.Unlock()
	}
	return n
}

// droppedTotal returns the events dropped so far.
func (q *eventQueue) droppedTotal() uint64 {
	var n uint64
	for i := range q.shards {
		q.shards[i].mu.Lock()
		n += q.shards[i].dropped
		q.shards[i].mu.Unlock()
	}
	return n
}

// windowLimiter counts requests per client address in fixed windows of one
// second. Addresses are spread over shards, each with its own lock and a
// bounded map: past maxKeys addresses in one shard and window, new ones are
// let through rather than tracked, so a flood of addresses costs no memory.
type windowLimiter struct {
	perSec  int
	maxKeys int
	shards  [limiterShards]windowShard
}

type windowShard struct {
	mu     sync.Mutex // guards window, counts
	window int64
	counts map[netip.Addr]int32
	_      [64]byte
}

func newWindowLimiter(perSec, maxKeys int) *windowLimiter {
	return &windowLimiter{perSec: perSec, maxKeys: max(1, maxKeys/limiterShards)}
}

// allow counts a request from addr at now. When the address is over its
// rate it returns false and the whole seconds until its window ends.
func (l *windowLimiter) allow(addr netip.Addr, now time.Time) (bool, int) {
	if l == nil || l.perSec <= 0 {
		return true, 0
	}
	b := addr.As16()
	// The top bits of a multiplicative hash depend on every bit of the
	// address (an IPv4 address sits in the high bytes of its 16-byte form).
	h := (binary.LittleEndian.Uint64(b[:8]) ^ binary.LittleEndian.Uint64(b[8:])) * 0x9e3779b97f4a7c15 >> (64 - limiterShardBits)
	sh := &l.shards[h]
	w := now.Unix()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if w != sh.window || sh.counts == nil {
		sh.window = w
		if sh.counts == nil {
			sh.counts = map[netip.Addr]int32{}
		}
		clear(sh.counts)
	}
	n, ok := sh.counts[addr]
	if !ok && len(sh.counts) >= l.maxKeys {
		return true, 0
	}
	if int(n) >= l.perSec {
		return false, 1
	}
	sh.counts[addr] = n + 1
	return true, 0
}

// connAddr is the address of the connection a request came on.
func connAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	a, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return a.Unmap()
}

// handleEvents takes POST /v1/events from a device: a JSON array of
// events (or one event object), bounded in size and count, rate-limited
// per client address. It answers at once; forwarding is asynchronous.
func (s *Server) handleEvents(ctx *fasthttp.RequestCtx) {
	if ok, _ := s.evLimit.allow(connAddr(ctx), s.cfg.Now()); !ok {
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
	// Where the events came from, whatever the device says: auto-pause
	// counts failing addresses (decision 096).
	addr := ""
	for i := range events {
		if a := events[i].Action; a == stats.ActionFail || a == stats.ActionRevert {
			if addr == "" {
				addr = stats.AddrOf(connAddr(ctx))
			}
			events[i].Addr = addr
		} else {
			events[i].Addr = ""
		}
	}
	dropped += s.events.push(ctx.ConnID(), events)
	s.m.eventsIn.Add(float64(len(events)))
	ctx.SetContentType("application/json")
	fmt.Fprintf(ctx, `{"status":"ok","accepted":%d,"dropped":%d}`, len(events), dropped)
}

// FlushEvents forwards every queued event to an origin now. Events that no
// origin takes stay queued (within the queue's bound).
func (s *Server) FlushEvents(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	for {
		// A batch no origin took stays pending, first in line; the queue
		// goes on filling up to its bound meanwhile.
		if len(s.pending) == 0 {
			s.pending = s.events.take(s.pending[:0], stats.MaxEdgeBatch)
		}
		if len(s.pending) == 0 {
			return nil
		}
		if err := s.postEvents(ctx, s.pending); err != nil {
			return err
		}
		s.m.eventsOut.Add(float64(len(s.pending)))
		clear(s.pending)
		s.pending = s.pending[:0]
	}
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
	if tok := s.eventsToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
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
// batch is waiting; Shutdown forwards what is left.
func (s *Server) eventLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.EventFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.events.kick:
		}
		fctx, cancel := context.WithTimeout(ctx, time.Minute)
		if err := s.FlushEvents(fctx); err != nil && ctx.Err() == nil {
			s.log.Debug("forward events", "queued", s.events.len(), "err", err)
		}
		cancel()
	}
}

// eventsToken is the bearer token sent with events and reports to an
// origin.
func (s *Server) eventsToken() string {
	if s.cfg.EventsTokenFunc != nil {
		if t := s.cfg.EventsTokenFunc(); t != "" {
			return t
		}
	}
	return s.cfg.EventsToken
}
