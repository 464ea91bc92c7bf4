package gossip

import (
	"net"
	"strconv"
	"sync"

	"github.com/hashicorp/memberlist"
)

// delegate connects memberlist to a Node. memberlist calls its methods
// concurrently from its packet, stream and timer goroutines.
type delegate struct {
	n    *Node
	meta []byte // encoded Meta, validated by New; never modified

	// mu guards members: the nodes memberlist reports alive or suspect,
	// kept from join/update/leave events. memberlist.Members returns
	// pointers into its own state, which it rewrites under its lock while
	// callers read them (a data race); events run with that lock held, so
	// copying there is safe. mu is a leaf lock.
	mu      sync.Mutex
	members map[string]Member
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

// NotifyJoin records a member. Called with memberlist's node lock held.
func (d *delegate) NotifyJoin(node *memberlist.Node) {
	d.put(node)
	d.n.log.Debug("gossip: member joined", "name", node.Name, "addr", node.Address())
}

// NotifyLeave forgets a member (it left or was declared dead). Called with
// memberlist's node lock held.
func (d *delegate) NotifyLeave(node *memberlist.Node) {
	d.mu.Lock()
	delete(d.members, node.Name)
	d.mu.Unlock()
	d.n.log.Debug("gossip: member left", "name", node.Name, "addr", node.Address())
}

// NotifyUpdate records a member's new meta. Called with memberlist's node
// lock held.
func (d *delegate) NotifyUpdate(node *memberlist.Node) {
	d.put(node)
	d.n.log.Debug("gossip: member updated", "name", node.Name)
}

// put copies node into the member table.
func (d *delegate) put(node *memberlist.Node) {
	m := Member{Name: node.Name, Addr: net.JoinHostPort(node.Addr.String(), strconv.Itoa(int(node.Port)))}
	meta, err := decodeMeta(node.Meta)
	if err != nil {
		d.n.log.Debug("gossip: unreadable member meta", "member", node.Name, "err", err)
	} else {
		m.Meta = meta
	}
	d.mu.Lock()
	d.members[node.Name] = m
	d.mu.Unlock()
}

// memberList returns a copy of the member table.
func (d *delegate) memberList() []Member {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Member, 0, len(d.members))
	for _, m := range d.members {
		out = append(out, m)
	}
	return out
}

// member returns one member by name.
func (d *delegate) member(name string) (Member, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m, ok := d.members[name]
	return m, ok
}

// numNodes is the queue's estimate of the cluster size (at least 1).
func (d *delegate) numNodes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return max(1, len(d.members))
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
