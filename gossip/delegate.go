package gossip

import (
	"sync/atomic"

	"github.com/hashicorp/memberlist"
)

// delegate connects memberlist to a Node. memberlist calls its methods
// concurrently from its packet, stream and timer goroutines.
type delegate struct {
	n    *Node
	meta []byte // encoded Meta, validated by New; never modified

	// members counts alive members from join/leave events, for the
	// broadcast queue's retransmit limit. Events fire with memberlist's
	// node lock held, so the queue must not ask memberlist itself.
	members atomic.Int64
}

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
)

// NodeMeta returns the encoded Meta. It was checked against
// memberlist.MetaMaxSize in New; if memberlist ever asks with a smaller
// limit, no meta is better than its panic.
func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}

// NotifyMsg handles a broadcast record. It runs in memberlist's packet
// handler; b is only valid during the call (decodeRecord copies it).
func (d *delegate) NotifyMsg(b []byte) {
	rec, err := decodeRecord(b)
	if err != nil {
		d.n.log.Debug("gossip: dropped message", "err", err)
		return
	}
	d.n.accept(rec, true)
}

// GetBroadcasts hands memberlist the queued records that fit in limit.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.n.queue.GetBroadcasts(overhead, limit)
}

// LocalState returns every newest record, for push/pull.
func (d *delegate) LocalState(join bool) []byte {
	return encodeState(d.n.snapshot())
}

// MergeRemoteState accepts the newer records of a peer's state. It relays
// at most maxMergeRelay of them: after a partition a few missed records
// should spread fast, but a node that joins with an empty state must not
// flood the cluster with thousands of records everyone already has;
// push/pull repairs the rest.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	msgs, err := splitState(buf)
	if err != nil {
		d.n.log.Warn("gossip: dropped push/pull state", "err", err, "join", join)
		return
	}
	relays := maxMergeRelay
	for _, m := range msgs {
		rec, err := decodeRecord(m)
		if err != nil {
			d.n.log.Debug("gossip: dropped record from push/pull state", "err", err)
			continue
		}
		if d.n.accept(rec, relays > 0) {
			relays--
		}
	}
}

// maxMergeRelay bounds the records one push/pull merge re-broadcasts.
const maxMergeRelay = 64

// NotifyJoin counts a member. Called with memberlist's node lock held.
func (d *delegate) NotifyJoin(node *memberlist.Node) {
	d.members.Add(1)
	d.n.log.Debug("gossip: member joined", "name", node.Name, "addr", node.Address())
}

// NotifyLeave uncounts a member. Called with memberlist's node lock held.
func (d *delegate) NotifyLeave(node *memberlist.Node) {
	d.members.Add(-1)
	d.n.log.Debug("gossip: member left", "name", node.Name, "addr", node.Address())
}

// NotifyUpdate is called when a member's meta changes.
func (d *delegate) NotifyUpdate(node *memberlist.Node) {}

// numNodes is the queue's estimate of the cluster size (at least 1).
func (d *delegate) numNodes() int {
	return int(max(1, d.members.Load()))
}

// recordBroadcast is one queued record. It is named by its channel key, so
// queuing a newer record for a channel drops the older one from the queue.
type recordBroadcast struct {
	key string
	msg []byte // the record's wire form; shared, never modified
}

var _ memberlist.NamedBroadcast = (*recordBroadcast)(nil)

// Invalidates reports whether b replaces other: same channel.
func (b *recordBroadcast) Invalidates(other memberlist.Broadcast) bool {
	nb, ok := other.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.Name()
}

// Name is the queue identity of the broadcast: the channel key.
func (b *recordBroadcast) Name() string { return "record:" + b.key }

// Message returns the record message.
func (b *recordBroadcast) Message() []byte { return b.msg }

// Finished is a no-op: nobody waits for a record broadcast.
func (b *recordBroadcast) Finished() {}
