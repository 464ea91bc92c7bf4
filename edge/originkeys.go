package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/release"
)

// originTrust checks channel records against the origin keys the operator
// gave the edge, and follows the origin's key rotations. An edge that
// checks signatures cannot be fed records by a rogue gossip member or a
// spoofed origin: above all, not a record with a huge Seq that would wedge
// the channel, since the edge only ever moves to a larger Seq.
type originTrust struct {
	mu      sync.Mutex // guards keys, lastFetch
	keys    []release.PublicKey
	lastFet time.Time
}

// rotationFetchEvery bounds how often records signed by an unknown key
// make the edge ask an origin for rotation statements, so a flood of
// forged records costs the origins one small request per interval.
const rotationFetchEvery = 10 * time.Second

// VerifyRecord checks that a channel record is signed by an origin key the
// edge trusts (Config.OriginKeys, moved on by rotation statements). With
// no OriginKeys configured every record passes: devices verify anyway,
// and the edge then only trusts its gossip cluster's secret key. It is
// safe for concurrent use and can be a gossip node's Verify hook.
func (s *Server) VerifyRecord(env *release.Envelope, _ *release.Channel) error {
	t := &s.trust.origin
	t.mu.Lock()
	keys := release.KeysFor(t.keys, release.RoleOrigin)
	t.mu.Unlock()
	if len(keys) == 0 && len(s.cfg.OriginKeys) == 0 {
		return nil
	}
	err := env.Verify(keys)
	if !errors.Is(err, release.ErrUnsigned) || !s.followOriginRotations() {
		if err != nil {
			return fmt.Errorf("edge: channel record: %w", err)
		}
		return nil
	}
	t.mu.Lock()
	keys = release.KeysFor(t.keys, release.RoleOrigin)
	t.mu.Unlock()
	if err := env.Verify(keys); err != nil {
		return fmt.Errorf("edge: channel record: %w", err)
	}
	return nil
}

// followOriginRotations asks an origin for rotation statements (at most
// once per rotationFetchEvery) and applies those that chain from the
// trusted keys. It reports whether the keys changed.
func (s *Server) followOriginRotations() bool {
	t := &s.trust.origin
	now := s.cfg.Now()
	t.mu.Lock()
	if now.Sub(t.lastFet) < rotationFetchEvery {
		t.mu.Unlock()
		return false
	}
	t.lastFet = now
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := s.fetchSmall(ctx, "/v1/keys/rotations", maxRotationsBody)
	if err != nil {
		s.log.Warn("fetch key rotations", "err", err)
		return false
	}
	var doc struct {
		Rotations []*release.Envelope `json:"rotations"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		s.log.Warn("key rotations", "err", err)
		return false
	}
	if len(doc.Rotations) > release.MaxRotations {
		doc.Rotations = doc.Rotations[len(doc.Rotations)-release.MaxRotations:]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	next, applied, err := release.ApplyRotations(t.keys, doc.Rotations)
	if err != nil {
		s.log.Warn("key rotations", "err", err)
	}
	if len(applied) == 0 {
		return false
	}
	t.keys = next
	s.log.Warn("origin key rotation followed", "statements", len(applied))
	return true
}
