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
	mu      sync.Mutex // guards keys, lastFet
	keys    []release.PublicKey
	lastFet time.Time // last rotation fetch started
}

// rotationFetchEvery bounds how often records signed by an unknown key
// make the edge ask an origin for rotation statements, so a flood of
// forged records costs the origins one small request per interval.
const rotationFetchEvery = 10 * time.Second

// VerifyRecord checks that a channel record is signed by an origin key the
// edge trusts (Config.OriginKeys, moved on by rotation statements). With
// no OriginKeys configured every record passes: devices verify anyway,
// and the edge then only trusts its gossip cluster's secret key.
//
// It never blocks, so it can be a gossip node's Verify hook (which runs on
// memberlist's receive path). A record signed by a key the edge does not
// know is refused at once, and starts a background fetch of the origin's
// rotation statements; when they introduce the key, the edge pulls the
// origin's state again, so the refused records arrive within a round trip.
// It is safe for concurrent use.
func (s *Server) VerifyRecord(env *release.Envelope, _ *release.Channel) error {
	t := &s.trust.origin
	t.mu.Lock()
	keys := release.KeysFor(t.keys, release.RoleOrigin)
	t.mu.Unlock()
	if len(keys) == 0 && len(s.cfg.OriginKeys) == 0 {
		return nil
	}
	err := env.Verify(keys)
	if errors.Is(err, release.ErrUnsigned) {
		s.refreshOriginKeys()
	}
	if err != nil {
		return fmt.Errorf("edge: channel record: %w", err)
	}
	return nil
}

// refreshOriginKeys follows the origin's rotation statements in the
// background (at most once per rotationFetchEvery) and, if the trusted
// keys changed, pulls the origin's state again.
func (s *Server) refreshOriginKeys() {
	t := &s.trust.origin
	now := s.cfg.Now()
	t.mu.Lock()
	due := now.Sub(t.lastFet) >= rotationFetchEvery
	if due {
		t.lastFet = now
	}
	t.mu.Unlock()
	select {
	case <-s.stop:
		return
	default:
	}
	if !due {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if !s.followOriginRotations() {
			return
		}
		// Statements refused for an unknown key may verify now.
		s.originChecks.mu.Lock()
		s.originChecks.m = nil
		s.originChecks.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.SyncFromOrigin(ctx); err != nil {
			s.log.Warn("pull state after origin key rotation", "err", err)
		}
	}()
}

// followOriginRotations asks an origin for rotation statements and applies
// those that chain from the trusted keys. It reports whether the keys
// changed.
func (s *Server) followOriginRotations() bool {
	t := &s.trust.origin
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Statements are self-authenticating, so any origin the edge has
	// heard of may deliver them: the edge may need them before it can
	// check any origin's statement.
	b, err := s.fetchFrom(ctx, s.candidateOrigins(), "/v1/keys/rotations", maxRotationsBody)
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
