package gossip

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/release"
)

// Multi-node tests run real memberlist nodes on 127.0.0.1 with OS-chosen
// ports, in one process. Timeouts are bounds for polling, never
// assertions about speed (see BenchmarkPropagation10 for that).

// converge is generous: on 2 shared cores under a parallel test run, memberlist
// convergence that takes ~0.5 s alone can take several seconds.
const converge = 30 * time.Second

func TestOriginToFiveEdges(t *testing.T) {
	key := testKey(t)
	c := newCluster(t)
	origin, _ := c.start(testConfig(RoleOrigin))
	var edges []*Node
	for range 5 {
		e, _ := c.start(testConfig(RoleEdge, origin.Addr()))
		edges = append(edges, e)
	}
	c.waitMembers(6)

	for seq := uint64(1); seq <= 3; seq++ {
		if err := origin.Publish(signedRecord(t, key, "app", "prod", seq)); err != nil {
			t.Fatal(err)
		}
		eventually(t, converge, func() bool {
			for _, r := range c.recs {
				if s := r.get("app/prod"); len(s) == 0 || s[len(s)-1] != seq {
					return false
				}
			}
			return true
		}, "seq %d reaches every node", seq)
	}
	for i, r := range c.recs {
		if got := r.get("app/prod"); !reflect.DeepEqual(got, []uint64{1, 2, 3}) {
			t.Errorf("node %d: OnRecord saw %v, want [1 2 3]", i, got)
		}
		r.checkIncreasing(t, c.nodes[i].Name())
	}
	for _, e := range edges {
		if e.LastUpdate().IsZero() {
			t.Errorf("%s: LastUpdate not set", e.Name())
		}
		if len(e.Records()) != 1 {
			t.Errorf("%s: %d records, want 1", e.Name(), len(e.Records()))
		}
	}
}

// TestRelay shows that nodes relay: a record handed to one edge's delegate
// (as if one UDP packet from the origin reached only that edge) reaches
// every node, although push/pull is off and that edge is the only one that
// ever had it from outside.
func TestRelay(t *testing.T) {
	key := testKey(t)
	c := newCluster(t)
	ocfg := testConfig(RoleOrigin)
	ocfg.PushPullInterval = time.Hour
	origin, _ := c.start(ocfg)
	for range 6 {
		ecfg := testConfig(RoleEdge, origin.Addr())
		ecfg.PushPullInterval = time.Hour
		c.start(ecfg)
	}
	c.waitMembers(7)

	for seq := uint64(1); seq <= 3; seq++ {
		r, err := encodeRecord(signedRecord(t, key, "app", "prod", seq))
		if err != nil {
			t.Fatal(err)
		}
		first := c.nodes[1+int(seq)%6]
		first.d.NotifyMsg(r.wire)
		eventually(t, converge, func() bool {
			for _, n := range c.nodes {
				if !hasSeq(n, "app/prod", seq) {
					return false
				}
			}
			return true
		}, "seq %d reaches every node by relay from %s: %v", seq, first.Name(), c)
	}
}

func TestLateJoinerGetsEverything(t *testing.T) {
	key := testKey(t)
	c := newCluster(t)
	origin, _ := c.start(testConfig(RoleOrigin))
	e1, _ := c.start(testConfig(RoleEdge, origin.Addr()))
	c.start(testConfig(RoleEdge, origin.Addr()))

	want := map[string]uint64{}
	for i := range 20 {
		ch := fmt.Sprintf("ch%02d", i)
		for seq := uint64(1); seq <= uint64(1+i%3); seq++ {
			if err := origin.Publish(signedRecord(t, key, "app", ch, seq)); err != nil {
				t.Fatal(err)
			}
			want["app/"+ch] = seq
		}
	}
	eventually(t, converge, func() bool {
		for k, s := range want {
			if !hasSeq(e1, k, s) {
				return false
			}
		}
		return true
	}, "first edge has all records")

	// The late edge joins through the other edge, not the origin. Join is a
	// push/pull, so when New returns the records are there.
	late, rec := c.start(testConfig(RoleEdge, e1.Addr()))
	got := map[string]uint64{}
	for _, env := range late.Records() {
		ch, err := env.Channel()
		if err != nil {
			t.Fatal(err)
		}
		got[ch.Key()] = ch.Seq
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("late joiner holds %v, want %v", got, want)
	}
	for k, s := range want {
		if seqs := rec.get(k); !reflect.DeepEqual(seqs, []uint64{s}) {
			t.Errorf("%s: OnRecord %v, want just [%d]", k, seqs, s)
		}
	}
}

// TestStaleNodeCannotRollBack joins a node holding older records to a
// cluster holding newer ones: nobody goes back, the stale node catches up,
// and what it holds that is new spreads.
func TestStaleNodeCannotRollBack(t *testing.T) {
	key := testKey(t)
	c := newCluster(t)
	origin, _ := c.start(testConfig(RoleOrigin))
	e1, _ := c.start(testConfig(RoleEdge, origin.Addr()))
	e2, _ := c.start(testConfig(RoleEdge, origin.Addr()))
	for seq := uint64(1); seq <= 5; seq++ {
		if err := origin.Publish(signedRecord(t, key, "app", "prod", seq)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, converge, func() bool { return hasSeq(e1, "app/prod", 5) && hasSeq(e2, "app/prod", 5) },
		"seq 5 everywhere")

	// A node from another, older world: it holds prod seq 3 and a channel
	// nobody else has.
	stale, staleRec := c.start(testConfig(RoleOrigin))
	if err := stale.Publish(signedRecord(t, key, "app", "prod", 3)); err != nil {
		t.Fatal(err)
	}
	if err := stale.Publish(signedRecord(t, key, "app", "fresh", 1)); err != nil {
		t.Fatal(err)
	}
	// Also deliver the old record to a member directly, as a late UDP
	// packet would.
	old, _ := encodeRecord(signedRecord(t, key, "app", "prod", 2))
	e1.d.NotifyMsg(old.wire)

	if _, err := stale.Join([]string{e2.Addr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, func() bool {
		for _, n := range c.nodes {
			if !hasSeq(n, "app/fresh", 1) || !hasSeq(n, "app/prod", 5) {
				return false
			}
		}
		return true
	}, "everyone holds prod 5 and fresh 1")

	for i, r := range c.recs[:3] {
		if got := r.get("app/prod"); !isIncreasingTo(got, 5) {
			t.Errorf("node %d: OnRecord for prod %v", i, got)
		}
		r.checkIncreasing(t, c.nodes[i].Name())
	}
	if got := staleRec.get("app/prod"); !reflect.DeepEqual(got, []uint64{3, 5}) {
		t.Errorf("stale node: OnRecord for prod %v, want [3 5]", got)
	}
}

func isIncreasingTo(s []uint64, last uint64) bool {
	for i := 1; i < len(s); i++ {
		if s[i] <= s[i-1] {
			return false
		}
	}
	return len(s) > 0 && s[len(s)-1] == last
}

// TestVerifyRejectsAcrossCluster: a rogue member (no Verify) publishes a
// record signed by an untrusted key, then a trusted one. Edges that verify
// never hold the rogue record; the trusted one, sent after it, reaches all
// of them and serves as the barrier.
func TestVerifyRejectsAcrossCluster(t *testing.T) {
	trusted, untrusted := testKey(t), testKey(t)
	pub := []ed25519.PublicKey{trusted.Public().(ed25519.PublicKey)}
	var rejected atomic.Int64
	verify := func(env *release.Envelope, ch *release.Channel) error {
		if err := env.Verify(pub); err != nil {
			rejected.Add(1)
			return err
		}
		return nil
	}
	c := newCluster(t)
	rogue, _ := c.start(testConfig(RoleOrigin))
	var edges []*Node
	for range 4 {
		cfg := testConfig(RoleEdge, rogue.Addr())
		cfg.Verify = verify
		e, _ := c.start(cfg)
		edges = append(edges, e)
	}
	c.waitMembers(5)

	if err := rogue.Publish(signedRecord(t, untrusted, "app", "evil", 100)); err != nil {
		t.Fatal(err)
	}
	if err := rogue.Publish(signedRecord(t, trusted, "app", "good", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, func() bool {
		for _, e := range edges {
			if !hasSeq(e, "app/good", 1) {
				return false
			}
		}
		return true
	}, "trusted record reaches every edge")
	eventually(t, converge, func() bool { return rejected.Load() > 0 }, "some edge saw and rejected the rogue record")
	for _, e := range edges {
		if _, ok := e.Record("app/evil"); ok {
			t.Errorf("%s holds the rogue record", e.Name())
		}
	}
}

func TestMetaAndLeave(t *testing.T) {
	c := newCluster(t)
	ocfg := testConfig(RoleOrigin)
	ocfg.Meta = Meta{Role: RoleOrigin, HTTP: "http://127.0.0.1:7070", Region: "eu-west"}
	// A long suspicion timeout: removal must come from the leave message.
	ocfg.SuspicionMult = 8
	origin, _ := c.start(ocfg)
	var edges []*Node
	for i := range 3 {
		cfg := testConfig(RoleEdge, origin.Addr())
		cfg.Meta.HTTP = fmt.Sprintf("http://127.0.0.1:%d", 7081+i)
		cfg.SuspicionMult = 8
		e, _ := c.start(cfg)
		edges = append(edges, e)
	}
	c.waitMembers(4)

	for _, n := range c.nodes {
		o := n.Origins()
		if len(o) != 1 || o[0].Meta != ocfg.Meta || o[0].Name != origin.Name() || o[0].Addr != origin.Addr() {
			t.Fatalf("%s: Origins() = %+v", n.Name(), o)
		}
		es := n.Edges()
		if len(es) != 3 {
			t.Fatalf("%s: Edges() = %+v", n.Name(), es)
		}
		for i, e := range es { // sorted by name: edge-1, edge-2, edge-3
			if want := fmt.Sprintf("http://127.0.0.1:%d", 7081+i); e.Meta.HTTP != want || e.Meta.Role != RoleEdge {
				t.Fatalf("%s: edge %d meta %+v, want HTTP %s", n.Name(), i, e.Meta, want)
			}
		}
	}

	gone := edges[2]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := gone.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if err := gone.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// The suspicion timeout is at least 8 s here; a leave shows in well
	// under that.
	eventually(t, 6*time.Second, func() bool {
		for _, n := range c.nodes[:3] {
			if len(n.Members()) != 3 {
				return false
			}
		}
		return true
	}, "the leaver disappears from every member")
}

// TestPartitionHeals cuts one edge off the cluster until it declares the
// origin dead, publishes while it is away, then heals the network: the
// edge rejoins its seed and catches up by push/pull.
func TestPartitionHeals(t *testing.T) {
	key := testKey(t)
	c := newCluster(t)
	origin, _ := c.start(testConfig(RoleOrigin))
	e1, _ := c.start(testConfig(RoleEdge, origin.Addr()))

	ft := newFaultTransport(t)
	cfg := testConfig(RoleEdge, origin.Addr())
	cfg.Transport = ft
	// Suspicion ends after 2 × ProbeInterval without confirmations, so the
	// cut-off node gives up on the others quickly.
	cfg.SuspicionMult = 2
	cut, _ := c.start(cfg)
	c.waitMembers(3)

	if err := origin.Publish(signedRecord(t, key, "app", "prod", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, func() bool { return hasSeq(cut, "app/prod", 1) }, "seq 1 before the partition")

	ft.blocked.Store(true)
	eventually(t, 20*time.Second, func() bool { return len(cut.Origins()) == 0 }, "the cut-off edge declares the origin dead")

	for seq := uint64(2); seq <= 4; seq++ {
		if err := origin.Publish(signedRecord(t, key, "app", "prod", seq)); err != nil {
			t.Fatal(err)
		}
	}
	if err := origin.Publish(signedRecord(t, key, "app", "beta", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, func() bool { return hasSeq(e1, "app/prod", 4) && hasSeq(e1, "app/beta", 1) },
		"the connected edge gets the new records")
	if hasSeq(cut, "app/prod", 2) {
		t.Fatal("a record crossed the partition")
	}

	ft.blocked.Store(false)
	eventually(t, 20*time.Second, func() bool {
		return hasSeq(cut, "app/prod", 4) && hasSeq(cut, "app/beta", 1) && len(cut.Members()) == 3
	}, "the healed edge catches up and sees everyone")
	eventually(t, 20*time.Second, func() bool { return len(origin.Members()) == 3 }, "the origin sees the healed edge")
}

// TestEncryptedCluster checks that records and meta flow with a shared
// SecretKey and that a node with another key cannot join.
func TestEncryptedCluster(t *testing.T) {
	key := testKey(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	c := newCluster(t)
	ocfg := testConfig(RoleOrigin)
	ocfg.SecretKey = secret
	origin, _ := c.start(ocfg)
	ecfg := testConfig(RoleEdge, origin.Addr())
	ecfg.SecretKey = secret
	edge, _ := c.start(ecfg)
	if err := origin.Publish(signedRecord(t, key, "app", "prod", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, func() bool { return hasSeq(edge, "app/prod", 1) }, "record reaches the edge")

	bad := testConfig(RoleEdge, origin.Addr())
	bad.SecretKey = []byte("fedcba9876543210")
	bad.JoinTimeout = 300 * time.Millisecond
	n, err := New(bad)
	if err == nil {
		_ = n.Shutdown()
		t.Fatal("a node with the wrong key joined")
	}

	// Same key, other label: another cluster.
	other := testConfig(RoleEdge, origin.Addr())
	other.SecretKey = secret
	other.Label = "staging"
	other.JoinTimeout = 300 * time.Millisecond
	n, err = New(other)
	if err == nil {
		_ = n.Shutdown()
		t.Fatal("a node with another label joined")
	}
}

// TestOriginRestart restarts the only origin (which has no seeds) under a
// new name on the same address: the edges' rejoin loop finds it, it learns
// the fleet's records at that join, and its new records reach the edges.
func TestOriginRestart(t *testing.T) {
	key := testKey(t)
	c := newCluster(t)
	o1, _ := c.start(testConfig(RoleOrigin))
	addr := o1.Addr()
	e1, _ := c.start(testConfig(RoleEdge, addr))
	e2, _ := c.start(testConfig(RoleEdge, addr))
	if err := o1.Publish(signedRecord(t, key, "app", "prod", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, func() bool { return hasSeq(e1, "app/prod", 1) && hasSeq(e2, "app/prod", 1) },
		"seq 1 on both edges")

	if err := o1.Shutdown(); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, func() bool { return len(e1.Origins()) == 0 && len(e2.Origins()) == 0 },
		"edges see the origin leave")

	cfg := testConfig(RoleOrigin)
	cfg.Name = "origin-again"
	cfg.BindAddr = addr
	o2, _ := c.start(cfg)
	eventually(t, converge, func() bool {
		return len(e1.Origins()) == 1 && len(e2.Origins()) == 1 && len(o2.Members()) == 3
	}, "edges rejoin the restarted origin")
	if !hasSeq(o2, "app/prod", 1) {
		t.Fatal("the restarted origin did not learn the fleet's records at join")
	}
	if err := o2.Publish(signedRecord(t, key, "app", "prod", 2)); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, func() bool { return hasSeq(e1, "app/prod", 2) && hasSeq(e2, "app/prod", 2) },
		"seq 2 from the restarted origin on both edges")
}
