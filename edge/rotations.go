package edge

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/release"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// trustState is the edge's share of the trust machinery: the rate limiter
// and the cached key rotation statements. The edge holds no key and
// verifies no signature here: rotation statements are self-authenticating
// and devices check them.
type trustState struct {
	limiter     *ipLimiter
	rateLimited prometheus.Counter

	rotMu      sync.Mutex // guards rotBody, rotFetched
	rotBody    []byte
	rotFetched time.Time

	origin originTrust
}

// rotationsTTL is how long the edge serves the origin's rotation
// statements before asking again. Rotations are rare and devices only ask
// when a signature names a key they do not know, so this is about load,
// not freshness.
const rotationsTTL = 30 * time.Second

// maxRotationsBody bounds the rotations document pulled from an origin.
const maxRotationsBody = release.MaxRotations*(2*release.MaxRotationBytes) + 1024

func (s *Server) initTrust() {
	s.trust.rateLimited = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "capstan_edge_rate_limited_total", Help: "Device requests refused with 429 because their address was over its rate.",
	})
	s.reg.MustRegister(s.trust.rateLimited, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "capstan_edge_expired_channels", Help: "Channels whose newest record has expired (the edge is cut off from fresh records; devices see a freeze).",
	}, func() float64 { return float64(s.expiredChannels()) }))
	s.trust.limiter = newIPLimiter(s.cfg.RateLimit, s.cfg.Now)
	s.trust.origin.keys = append([]release.PublicKey(nil), s.cfg.OriginKeys...)
	if kept := s.loadOriginKeys(); kept != nil {
		s.trust.origin.keys = kept
	}
}

// handleRotations serves GET /v1/keys/rotations: the origin's key rotation
// statements, pulled through and cached briefly; a stale copy is served
// while every origin is away.
func (s *Server) handleRotations(ctx *fasthttp.RequestCtx) {
	t := &s.trust
	t.rotMu.Lock()
	body, fetched := t.rotBody, t.rotFetched
	t.rotMu.Unlock()
	if body == nil || s.cfg.Now().Sub(fetched) > rotationsTTL {
		v, err, _ := s.flight.Do("rotations", func() (any, error) {
			rctx, cancel := context.WithTimeout(s.life, 10*time.Second)
			defer cancel()
			// Self-authenticating: any origin the edge knows of will do.
			b, err := s.fetchFrom(rctx, s.candidateOrigins(), "/v1/keys/rotations", maxRotationsBody)
			if err != nil {
				return nil, err
			}
			var doc struct {
				Rotations []json.RawMessage `json:"rotations"`
			}
			if err := json.Unmarshal(b, &doc); err != nil {
				return nil, err
			}
			return b, nil
		})
		switch {
		case err == nil:
			body = v.([]byte)
			t.rotMu.Lock()
			t.rotBody, t.rotFetched = body, s.cfg.Now()
			t.rotMu.Unlock()
		case body == nil:
			s.failFetch(ctx, err)
			return
		}
	}
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	writeEncoded(ctx, &answer{body: body, fast: true})
}

// forgetRotations drops the cached rotation statements. Every new channel
// record calls it: a key rotation is always followed by records signed
// with the new key, and devices that see one must find the statement that
// introduces the key at once, not after rotationsTTL.
func (s *Server) forgetRotations() {
	s.trust.rotMu.Lock()
	s.trust.rotBody = nil
	s.trust.rotMu.Unlock()
}

// expiredChannels counts channels whose newest record has expired. Such an
// edge is partitioned from the origins (or the origins stopped signing):
// devices refuse what it serves, so /healthz reports it unhealthy.
func (s *Server) expiredChannels() int {
	now := s.cfg.Now()
	n := 0
	for _, cs := range s.state.all() {
		// Only records the edge verified: a forged, expired record
		// must not make the edge report itself stale.
		if cs.verified && now.After(cs.ch.Expires) {
			n++
		}
	}
	return n
}
