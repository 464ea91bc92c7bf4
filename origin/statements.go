package origin

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/release"
)

// originStatementTTL is how long an origin statement stays valid. Edges
// check a URL again once it expires, so a URL the origin gave up stops
// being trusted within this long.
const originStatementTTL = time.Hour

// statementCache holds the current signed origin statement.
type statementCache struct {
	mu  sync.Mutex // guards env, key
	env []byte
	exp time.Time
	key ed25519.PublicKey // the key that signed env
}

// originStatement returns the signed statement that Config.PublicURL is
// this origin's API, re-signed when half its lifetime has passed or the
// origin key rotated.
func (s *Server) originStatement() ([]byte, error) {
	key := s.signingKey()
	pub := key.Public().(ed25519.PublicKey)
	now := s.cfg.Now().UTC()
	c := &s.statement
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.env != nil && c.key.Equal(pub) && c.exp.Sub(now) > originStatementTTL/2 {
		return c.env, nil
	}
	st := release.Origin{URL: s.cfg.PublicURL, Issued: now, Expires: now.Add(originStatementTTL)}
	b, err := st.Encode()
	if err != nil {
		return nil, err
	}
	env, err := json.Marshal(release.Seal(b, key))
	if err != nil {
		return nil, err
	}
	c.env, c.exp, c.key = env, st.Expires, pub
	return env, nil
}

// handleOriginStatement serves GET /v1/origin/statement: the origin key's
// word that this origin's API is at Config.PublicURL. Edges ask every URL
// a gossip member announces as an origin, and use it only if the answer
// verifies and names that URL.
func (s *Server) handleOriginStatement(w http.ResponseWriter, r *http.Request) {
	if s.cfg.PublicURL == "" {
		s.fail(w, fmt.Errorf("%w: this origin has no public URL configured, so it makes no origin statement", ErrNotFound))
		return
	}
	env, err := s.originStatement()
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(env)
}

// setDerivedStatement signs what the origin serves at path (content hash
// h, size bytes) and puts the statement in the answer's header.
func (s *Server) setDerivedStatement(w http.ResponseWriter, path string, h release.Hash, size int64) error {
	st := release.Derived{Path: path, SHA256: h, Size: size}
	b, err := st.Encode()
	if err != nil {
		return err
	}
	env, err := json.Marshal(release.Seal(b, s.signingKey()))
	if err != nil {
		return err
	}
	w.Header().Set(release.DerivedHeader, base64.StdEncoding.EncodeToString(env))
	return nil
}

// VerifyRecord checks a channel record that reaches the origin's gossip
// node from the cluster before the node stores or relays it: it must be
// signed by this origin's key and not expired. Without it the origin's
// own node would hold (and hand to every new edge) a forged record, for
// instance one with a huge seq that makes the channel's next real record
// "not newer" (issue 16, finding 2).
func (s *Server) VerifyRecord(env *release.Envelope, ch *release.Channel) error {
	if err := env.Verify([]ed25519.PublicKey{s.PublicKey()}); err != nil {
		return fmt.Errorf("origin: channel record %s: %w", ch.Key(), err)
	}
	if now := s.cfg.Now(); now.After(ch.Expires) {
		return fmt.Errorf("origin: channel record %s expired at %s", ch.Key(), ch.Expires.Format(time.RFC3339))
	}
	return nil
}
