package edge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/release"
	"github.com/dgraph-io/badger/v4"
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

// VerifyRecord checks a channel record that reaches the edge's gossip
// node before the node stores or relays it, as the origin's VerifyRecord
// does for its node: it is signed by an origin key the edge trusts
// (Config.OriginKeys, moved on by rotation statements), its Seq is at most
// release.MaxSeqAhead ahead of the edge's clock, and it has not expired (a
// device refuses an expired record as a freeze, so relaying one helps
// nobody).
// With no OriginKeys configured the signature is not checked (devices
// verify anyway) and the record counts as unverified: it never raises the
// staleness alarm.
//
// It never blocks, so it can be a gossip node's Verify hook (which runs on
// memberlist's receive path). A record signed by a key the edge does not
// know is refused at once, and starts a background fetch of the origin's
// rotation statements; when they introduce the key, the edge pulls the
// origin's state again, so the refused records arrive within a round trip.
// It is safe for concurrent use.
func (s *Server) VerifyRecord(env *release.Envelope, ch *release.Channel) error {
	if _, err := s.verifyRecord(env, ch); err != nil {
		return err
	}
	if now := s.cfg.Now(); now.After(ch.Expires) {
		return fmt.Errorf("edge: channel record %s expired at %s", ch.Key(), ch.Expires.Format(time.RFC3339))
	}
	return nil
}

// verifyRecord is VerifyRecord, also reporting whether the signature was
// checked.
func (s *Server) verifyRecord(env *release.Envelope, ch *release.Channel) (verified bool, err error) {
	if release.SeqTooFarAhead(ch.Seq, s.cfg.Now()) {
		return false, fmt.Errorf("edge: channel record %s: seq %d is more than %v ahead of this edge's clock", ch.Key(), ch.Seq, release.MaxSeqAhead)
	}
	t := &s.trust.origin
	t.mu.Lock()
	keys := release.KeysFor(t.keys, release.RoleOrigin)
	t.mu.Unlock()
	if len(keys) == 0 && len(s.cfg.OriginKeys) == 0 {
		return false, nil
	}
	err = env.Verify(keys)
	if errors.Is(err, release.ErrUnsigned) {
		s.refreshOriginKeys()
	}
	if err != nil {
		return false, fmt.Errorf("edge: channel record: %w", err)
	}
	return true, nil
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
	s.persistOriginKeys(next)
	s.log.Warn("origin key rotation followed", "statements", len(applied))
	return true
}

// The trusted origin keys the edge moved on to are kept in its cache, so
// that after a restart it still verifies the records it holds (signed by
// the new key) with every origin away. They are tied to the configured
// OriginKeys: an edge given other keys starts from those.
const keyTrustedOrigin = "t/origin-keys"

type persistedKeys struct {
	Pin  string              `json:"pin"`
	Keys []release.PublicKey `json:"keys"`
}

// originKeysPin identifies the configured OriginKeys.
func (s *Server) originKeysPin() string {
	h := sha256.New()
	for _, k := range s.cfg.OriginKeys {
		h.Write([]byte(k.Role))
		h.Write([]byte{0})
		h.Write(k.Key)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Server) persistOriginKeys(keys []release.PublicKey) {
	b, err := json.Marshal(persistedKeys{Pin: s.originKeysPin(), Keys: keys})
	if err == nil {
		err = s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keyTrustedOrigin), b) })
	}
	if err != nil {
		s.log.Warn("persist trusted origin keys", "err", err)
	}
}

// loadOriginKeys returns the keys persistOriginKeys kept for the
// configured OriginKeys, or nil.
func (s *Server) loadOriginKeys() []release.PublicKey {
	var p persistedKeys
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(keyTrustedOrigin))
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error { return json.Unmarshal(b, &p) })
	})
	if err != nil || p.Pin != s.originKeysPin() || len(s.cfg.OriginKeys) == 0 {
		return nil
	}
	return p.Keys
}
