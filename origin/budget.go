package origin

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/wire"
)

// BuildBudget bounds the patch builds GET /v1/patches starts on request
// (those the origin did not build in advance when a channel moved): a
// token bucket per caller address and one for the whole origin. A build
// can cost seconds of CPU and as much disk as the release (issue 16,
// finding 5); over budget the origin answers 429 with Retry-After, the
// edge answers 503 and the device falls back to the full bundle (built in
// advance, cached at edges). Counts are builds; rates are per minute.
type BuildBudget struct {
	// PerAddress and PerAddressBurst bound one caller address (an edge,
	// or anyone calling the origin directly): default 2 a minute, 10 at
	// once.
	PerAddress      float64
	PerAddressBurst int
	// Global and GlobalBurst bound the origin: default 6 a minute, 20 at
	// once. PatchBuilds still bounds how many run at the same moment.
	Global      float64
	GlobalBurst int
	// Off turns the budget off (tests, benchmarks).
	Off bool
}

// Defaults of BuildBudget.
const (
	DefaultBuildsPerAddress      = 2
	DefaultBuildsPerAddressBurst = 10
	DefaultBuildsGlobal          = 6
	DefaultBuildsGlobalBurst     = 20
	maxBudgetAddresses           = 4096
)

type bucket struct {
	tokens float64
	last   time.Time
}

// take refills b at perMinute up to burst and takes one token.
func (b *bucket) take(now time.Time, perMinute float64, burst int) (bool, time.Duration) {
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else {
		b.tokens = math.Min(float64(burst), b.tokens+now.Sub(b.last).Minutes()*perMinute)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / perMinute * float64(time.Minute))
}

type buildBudget struct {
	cfg    BuildBudget
	mu     sync.Mutex // guards global, per
	global bucket
	per    map[string]*bucket
}

func newBuildBudget(c BuildBudget) *buildBudget {
	if c.PerAddress <= 0 {
		c.PerAddress = DefaultBuildsPerAddress
	}
	if c.PerAddressBurst <= 0 {
		c.PerAddressBurst = DefaultBuildsPerAddressBurst
	}
	if c.Global <= 0 {
		c.Global = DefaultBuildsGlobal
	}
	if c.GlobalBurst <= 0 {
		c.GlobalBurst = DefaultBuildsGlobalBurst
	}
	return &buildBudget{cfg: c, per: map[string]*bucket{}}
}

// allow takes one build from the caller's budget and the origin's; when
// either is spent it returns false and how long until one is back.
func (b *buildBudget) allow(r *http.Request, now time.Time) (bool, time.Duration) {
	if b.cfg.Off {
		return true, 0
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.per[host]
	if p == nil {
		if len(b.per) >= maxBudgetAddresses {
			b.per = map[string]*bucket{} // forgetting only ever hands out a fresh budget
		}
		p = &bucket{}
		b.per[host] = p
	}
	// Check both before taking from either.
	pc, gc := *p, b.global
	if ok, wait := pc.take(now, b.cfg.PerAddress, b.cfg.PerAddressBurst); !ok {
		return false, wait
	}
	if ok, wait := gc.take(now, b.cfg.Global, b.cfg.GlobalBurst); !ok {
		return false, wait
	}
	*p, b.global = pc, gc
	return true, 0
}

// mayBuildDerived takes a build from the request's budget for a Capgo zip
// or payload the origin does not hold yet; over budget it answers 429 and
// returns false.
func (s *Server) mayBuildDerived(w http.ResponseWriter, r *http.Request) bool {
	ok, wait := s.budget.allow(r, s.cfg.Now())
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(wait.Seconds()+0.999))))
		writeJSON(w, http.StatusTooManyRequests, wire.Error{Error: "build budget spent; retry later"})
	}
	return ok
}
