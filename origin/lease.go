package origin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
)

// Build leases make a derived blob (a patch, a Capgo zip) be built once
// across every origin that shares the records: l/<index key> → buildLease.
// The origin that takes the lease builds and renews it; the others wait for
// the index entry, and take the lease over if it expires (its holder died).
const pfxLease = "l/"

// Lease timing: a holder renews every leaseTTL/3, so a lease expires only
// when its holder stopped; a waiter looks again every leasePoll.
var (
	leaseTTL  = 30 * time.Second
	leasePoll = 250 * time.Millisecond
)

type buildLease struct {
	Node  string    `json:"node"`
	Until time.Time `json:"until"`
}

// newNodeID names this origin process in leases: the host, for the
// operator reading the table, and a random part, for two origins on one
// host or a restarted one.
func newNodeID() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// buildLeased runs build under the lease of key unless another origin
// holds it, in which case it waits for that origin's result; either way it
// returns the blob indexed at key once there is one, and the index entry is
// written here, after build's blob.
func (s *Server) buildLeased(ctx context.Context, key string, build func(ctx context.Context) (release.Hash, error)) (release.Hash, error) {
	for {
		h, done, mine, err := s.takeLease(key)
		if err != nil {
			return release.Hash{}, fmt.Errorf("origin: lease %s: %w", key, err)
		}
		if done {
			return h, nil
		}
		if mine {
			break
		}
		select {
		case <-ctx.Done():
			return release.Hash{}, ctx.Err()
		case <-time.After(leasePoll):
		}
	}
	rctx, stopRenew := context.WithCancel(ctx)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(leaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				if err := s.renewLease(key); err != nil {
					s.log.Warn("renew build lease", "key", key, "err", err)
				}
			}
		}
	}()
	h, err := build(ctx)
	stopRenew()
	<-renewed
	uerr := s.db.Update(func(txn store.Txn) error {
		if err == nil {
			if err := txn.Set(key, h[:]); err != nil {
				return err
			}
		}
		var l buildLease
		if getJSON(txn, pfxLease+key, &l) == nil && l.Node == s.node {
			return txn.Delete(pfxLease + key)
		}
		return nil
	})
	if err != nil {
		return release.Hash{}, err
	}
	if uerr != nil {
		return release.Hash{}, fmt.Errorf("origin: index %s: %w", key, uerr)
	}
	return h, nil
}

// takeLease reports the indexed blob if key is built (done), or takes the
// lease if nobody holds a live one (mine).
func (s *Server) takeLease(key string) (h release.Hash, done, mine bool, err error) {
	err = s.db.Update(func(txn store.Txn) error {
		done, mine = false, false
		switch b, err := txn.Get(key); {
		case err == nil && len(b) == len(h):
			copy(h[:], b)
			done = true
			return nil
		case err != nil && !errors.Is(err, ErrNotFound):
			return err
		}
		// A sweep deleting blobs: wait, a build may produce (reuse) one
		// of the blobs it is about to delete.
		if locked, err := sweepLocked(txn, s.node); err != nil || locked {
			return err
		}
		now := time.Now()
		var l buildLease
		switch err := getJSON(txn, pfxLease+key, &l); {
		case err == nil && l.Node != s.node && now.Before(l.Until):
			return nil // another origin is building it
		case err != nil && !errors.Is(err, ErrNotFound):
			return err
		}
		mine = true
		return setJSON(txn, pfxLease+key, &buildLease{Node: s.node, Until: now.Add(leaseTTL)})
	})
	return h, done, mine, err
}

func (s *Server) renewLease(key string) error {
	return s.db.Update(func(txn store.Txn) error {
		var l buildLease
		if err := getJSON(txn, pfxLease+key, &l); err != nil || l.Node != s.node {
			return err // gone or taken over: nothing to renew
		}
		l.Until = time.Now().Add(leaseTTL)
		b, err := json.Marshal(&l)
		if err != nil {
			return err
		}
		return txn.Set(pfxLease+key, b)
	})
}
