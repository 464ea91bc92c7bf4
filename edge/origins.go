package edge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/release"
)

// Which origins an edge talks to. Config.Origins are trusted because the
// operator named them. Config.ClusterOrigins are what gossip members
// announce: any member can say "I am an origin at URL", so the edge asks
// URL for its origin statement (GET /v1/origin/statement) and talks to it
// only if the statement is signed by an origin key the edge trusts, names
// exactly that URL and has not expired (decision 091). Device events carry
// the events token, and pulled patches fill the cache: neither goes to a
// member that merely says it is an origin.

// Bounds of the origin check.
const (
	// maxClusterOrigins bounds the announced origins checked per call.
	maxClusterOrigins = 16
	// originRecheck is how soon a URL whose statement did not verify is
	// asked again (a real origin that was briefly away comes back).
	originRecheck = 30 * time.Second
	// maxOriginChecks bounds the remembered results; beyond it they are
	// forgotten all at once (checks are cheap, memory must stay bounded).
	maxOriginChecks = 1024
)

// originCheck is the result of asking one URL for its statement.
type originCheck struct {
	ok    bool
	until time.Time // when to ask again
	err   error
}

// originChecks remembers statement checks per URL.
type originChecks struct {
	mu sync.Mutex // guards m
	m  map[string]originCheck
}

// origins returns the origins to pull from and forward events to, in
// order: those the operator configured, then announced ones whose
// statement verifies.
func (s *Server) origins() []string {
	out := append([]string(nil), s.cfg.Origins()...)
	if s.cfg.ClusterOrigins == nil {
		return out
	}
	var cands []string
	for _, u := range s.cfg.ClusterOrigins() {
		if u != "" && !slices.Contains(out, u) && !slices.Contains(cands, u) && len(cands) < maxClusterOrigins {
			cands = append(cands, u)
		}
	}
	ok := make([]bool, len(cands))
	var wg sync.WaitGroup
	for i, u := range cands {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok[i] = s.originProven(u)
		}()
	}
	wg.Wait()
	for i, u := range cands {
		if ok[i] {
			out = append(out, u)
		}
	}
	return out
}

// candidateOrigins returns every origin the edge knows of, proven or
// not, for self-authenticating documents (key rotation statements) that
// the edge may need before it can check any statement at all.
func (s *Server) candidateOrigins() []string {
	out := append([]string(nil), s.cfg.Origins()...)
	if s.cfg.ClusterOrigins != nil {
		for _, u := range s.cfg.ClusterOrigins() {
			if u != "" && !slices.Contains(out, u) && len(out) < maxClusterOrigins {
				out = append(out, u)
			}
		}
	}
	return out
}

// originProven reports whether url showed a valid origin statement,
// asking it (once, however many callers wait) when the last answer is
// stale.
func (s *Server) originProven(url string) bool {
	now := s.cfg.Now()
	c := &s.originChecks
	c.mu.Lock()
	r, ok := c.m[url]
	c.mu.Unlock()
	if ok && now.Before(r.until) {
		return r.ok
	}
	v, _, _ := s.flight.Do("origin-statement/"+url, func() (any, error) {
		ctx, cancel := context.WithTimeout(s.life, s.cfg.ConnectTimeout+5*time.Second)
		defer cancel()
		err := s.checkOriginStatement(ctx, url)
		r := originCheck{ok: err == nil, err: err, until: s.cfg.Now().Add(originRecheck)}
		if err == nil {
			r.until = s.cfg.Now().Add(originStatementReuse)
		} else if !ok || r.ok != ok {
			s.log.Warn("a gossip member announces an origin that cannot prove it; not using it", "url", url, "err", err)
		}
		c.mu.Lock()
		if c.m == nil || len(c.m) >= maxOriginChecks {
			c.m = map[string]originCheck{}
		}
		c.m[url] = r
		c.mu.Unlock()
		return r, nil
	})
	return v.(originCheck).ok
}

// originStatementReuse is how long a verified statement is believed
// before the edge asks again (statements live an hour).
const originStatementReuse = 10 * time.Minute

// errStatement wraps every refused origin statement.
var errStatement = errors.New("edge: origin statement refused")

// checkOriginStatement asks url for its origin statement and verifies it.
func (s *Server) checkOriginStatement(ctx context.Context, url string) error {
	b, err := s.fetchFrom(ctx, []string{url}, "/v1/origin/statement", release.MaxStatementBytes)
	if err != nil {
		return err
	}
	env, err := release.DecodeEnvelope(b)
	if err != nil {
		return fmt.Errorf("%w: %v", errStatement, err)
	}
	if err := s.verifyOriginSigned(env); err != nil {
		return fmt.Errorf("%w: %v", errStatement, err)
	}
	st, err := env.Origin()
	if err != nil {
		return fmt.Errorf("%w: %v", errStatement, err)
	}
	if strings.TrimRight(st.URL, "/") != strings.TrimRight(url, "/") {
		return fmt.Errorf("%w: it names %s", errStatement, st.URL)
	}
	if now := s.cfg.Now(); now.After(st.Expires) {
		return fmt.Errorf("%w: it expired at %s", errStatement, st.Expires.Format(time.RFC3339))
	}
	return nil
}

// verifyOriginSigned checks that env is signed by an origin key the edge
// trusts, starting a fetch of rotation statements when it names a key the
// edge does not know. An edge without origin keys refuses everything.
func (s *Server) verifyOriginSigned(env *release.Envelope) error {
	t := &s.trust.origin
	t.mu.Lock()
	keys := release.KeysFor(t.keys, release.RoleOrigin)
	t.mu.Unlock()
	if len(keys) == 0 {
		return errors.New("this edge has no origin key to check it with")
	}
	err := env.Verify(keys)
	if errors.Is(err, release.ErrUnsigned) {
		s.refreshOriginKeys()
	}
	return err
}
