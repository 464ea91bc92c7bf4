package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/release"
)

// TestKeyRotationWithoutDowntime rotates the cluster key of a running
// three-node cluster in the documented three steps (add the new key
// everywhere, send with it everywhere, drop the old one). After every step
// a new record reaches every node and nobody is declared dead; at the end
// a node with only the old key cannot join, one with the new key can.
func TestKeyRotationWithoutDowntime(t *testing.T) {
	key := testKey(t)
	oldKey := bytes.Repeat([]byte{1}, 32)
	newKey := bytes.Repeat([]byte{2}, 32)
	c := newCluster(t)
	ocfg := testConfig(RoleOrigin)
	ocfg.SecretKey = oldKey
	origin, _ := c.start(ocfg)
	for range 2 {
		ecfg := testConfig(RoleEdge, origin.Addr())
		ecfg.SecretKey = oldKey
		c.start(ecfg)
	}
	c.waitMembers(3)

	seq := uint64(0)
	spread := func(step string) {
		t.Helper()
		seq++
		if err := origin.Publish(signedRecord(t, key, "app", "prod", seq)); err != nil {
			t.Fatal(err)
		}
		eventually(t, converge, func() bool {
			for _, n := range c.nodes {
				if !hasSeq(n, "app/prod", seq) {
					return false
				}
			}
			return true
		}, "%s: seq %d on every node (%s)", step, seq, c)
		for _, n := range c.nodes {
			if m := len(n.Members()); m != 3 {
				t.Fatalf("%s: %s sees %d members, want 3", step, n.Name(), m)
			}
		}
	}
	spread("before")
	steps := []struct {
		name    string
		primary []byte
		extra   [][]byte
	}{
		{"1: accept the new key", oldKey, [][]byte{newKey}},
		{"2: send with the new key", newKey, [][]byte{oldKey}},
		{"3: drop the old key", newKey, nil},
	}
	for _, st := range steps {
		// One node at a time, with a record in between: the cluster is
		// mixed for a while, as in a real rolling change.
		for i, n := range c.nodes {
			if err := n.SetKeys(st.primary, st.extra); err != nil {
				t.Fatal(err)
			}
			spread(fmt.Sprintf("step %s, %d of 3 nodes", st.name, i+1))
		}
	}

	stale := testConfig(RoleEdge, origin.Addr())
	stale.SecretKey = oldKey
	stale.JoinTimeout = 300 * time.Millisecond
	if n, err := New(stale); err == nil {
		_ = n.Shutdown()
		t.Fatal("a node with only the retired key joined")
	}
	fresh := testConfig(RoleEdge, origin.Addr())
	fresh.SecretKey = newKey
	n, _ := c.start(fresh)
	eventually(t, converge, func() bool { return hasSeq(n, "app/prod", seq) }, "a node with the new key joins and gets the records")
}

func TestSetKeysNeedsEncryption(t *testing.T) {
	n, _ := startSingle(t, testConfig(RoleEdge))
	if err := n.SetKeys(bytes.Repeat([]byte{1}, 32), nil); err == nil {
		t.Fatal("SetKeys on a node started without encryption succeeded")
	}
	cfg := testConfig(RoleEdge)
	cfg.SecretKey = bytes.Repeat([]byte{1}, 16)
	n2, _ := startSingle(t, cfg)
	if err := n2.SetKeys([]byte("short"), nil); err == nil {
		t.Fatal("SetKeys took a 5-byte key")
	}
}

// TestSeqTooFarAheadRefused: a record whose seq is more than a day ahead of
// the node's clock (seq is at least the origin's clock in milliseconds) is
// neither stored nor relayed, so it cannot block the channel's real
// records.
func TestSeqTooFarAheadRefused(t *testing.T) {
	key := testKey(t)
	now := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	cfg := testConfig(RoleEdge)
	cfg.Now = func() time.Time { return now }
	n, rec := startSingle(t, cfg)
	nowMS := uint64(now.UnixMilli())
	for _, seq := range []uint64{1 << 62, 1<<64 - 1, nowMS + uint64(25*time.Hour/time.Millisecond)} {
		if err := n.Publish(signedRecord(t, key, "app", "prod", seq)); !errors.Is(err, ErrSeqAhead) {
			t.Fatalf("seq %d: got %v, want ErrSeqAhead", seq, err)
		}
	}
	if len(rec.get("app/prod")) != 0 {
		t.Fatal("a record from the future was reported")
	}
	real := nowMS + uint64(time.Hour/time.Millisecond) // a clock an hour fast is fine
	if err := n.Publish(signedRecord(t, key, "app", "prod", real)); err != nil {
		t.Fatalf("seq an hour ahead: %v", err)
	}
}

// TestChannelsPerAppBounded: one app cannot hold more than
// release.MaxChannelsPerApp channels on a node; other apps are unaffected.
func TestChannelsPerAppBounded(t *testing.T) {
	key := testKey(t)
	n, _ := startSingle(t, testConfig(RoleEdge))
	for i := range release.MaxChannelsPerApp {
		if err := n.Publish(signedRecord(t, key, "flood", fmt.Sprintf("c%d", i), 1)); err != nil {
			t.Fatalf("channel %d: %v", i, err)
		}
	}
	if err := n.Publish(signedRecord(t, key, "flood", "one-more", 1)); !errors.Is(err, ErrTooManyChannels) {
		t.Fatalf("channel %d of one app: got %v, want ErrTooManyChannels", release.MaxChannelsPerApp+1, err)
	}
	if err := n.Publish(signedRecord(t, key, "flood", "c0", 2)); err != nil {
		t.Fatalf("a newer record of a held channel: %v", err)
	}
	if err := n.Publish(signedRecord(t, key, "other", "prod", 1)); err != nil {
		t.Fatalf("another app: %v", err)
	}
}
