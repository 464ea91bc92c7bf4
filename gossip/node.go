package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/capstan-ota/capstan/release"
)

// maxQueued bounds the broadcast queue. Beyond it the oldest, most
// transmitted records are dropped from the queue; push/pull still repairs.
const maxQueued = 1024

// Node is one member of a Capstan gossip cluster. Create it with New and
// stop it with Shutdown. All methods are safe for concurrent use.
type Node struct {
	cfg   Config // defaulted copy of the caller's Config; read-only
	log   *slog.Logger
	ml    *memberlist.Memberlist // set by New before any caller sees the Node
	addr  string                 // our gossip address, set by New
	d     *delegate
	queue *memberlist.TransmitLimitedQueue
	// keyring is memberlist's keyring, nil without encryption.
	keyring *memberlist.Keyring

	// applyMu serializes acceptance of records: the Seq check, Verify,
	// storing, queuing and OnRecord, so hooks never run concurrently and
	// OnRecord sees each channel's records in increasing Seq.
	applyMu sync.Mutex

	mu         sync.Mutex         // guards records, perApp, lastUpdate
	records    map[string]*record // newest record per channel key
	perApp     map[string]int     // channels held per app
	lastUpdate time.Time          // when the newest accepted record arrived

	refused atomic.Uint64 // records dropped by a check (not merely stale)

	lifeMu   sync.Mutex // guards left, shutdown; held across Leave and Shutdown
	left     bool
	shutdown bool

	stop chan struct{} // closed by Shutdown; stops the rejoin loop
	wg   sync.WaitGroup
}

// New starts a node: it binds cfg.BindAddr, announces cfg.Meta and joins
// cfg.Join, retrying for up to cfg.JoinTimeout while no seed answers. It
// returns an error if the config is invalid or no seed could be reached.
// At join the node exchanges full state with the seeds, so when New
// returns it already holds every record the seeds held. New never
// modifies cfg.
func New(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	meta, err := cfg.Meta.encode()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.Name),
		records: make(map[string]*record),
		perApp:  make(map[string]int),
		stop:    make(chan struct{}),
	}
	n.d = &delegate{n: n, meta: meta, members: make(map[string]Member)}
	n.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       n.d.numNodes,
		RetransmitMult: cfg.RecordRetransmitMult,
	}
	mc, err := cfg.memberlistConfig(n.d, newStdLogger(n.log))
	if err != nil {
		return nil, err
	}
	n.keyring = mc.Keyring
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: start memberlist on %s: %w", cfg.BindAddr, err)
	}
	n.ml = ml
	self, ok := n.d.member(cfg.Name)
	if !ok { // memberlist reports its own node while creating it
		_ = ml.Shutdown()
		return nil, errors.New("gossip: memberlist did not announce the local node")
	}
	n.addr = self.Addr
	if len(cfg.Join) > 0 {
		if err := n.joinRetry(cfg.Join, cfg.JoinTimeout); err != nil {
			_ = ml.Shutdown()
			return nil, err
		}
	}
	if cfg.RejoinInterval > 0 && len(cfg.Join) > 0 {
		n.wg.Add(1)
		go n.rejoinLoop()
	}
	n.log.Info("gossip: node started", "addr", n.Addr(), "role", cfg.Meta.Role, "members", ml.NumMembers())
	return n, nil
}

// joinRetry joins seeds, retrying with backoff until one answers or the
// timeout passes.
func (n *Node) joinRetry(seeds []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	wait := 100 * time.Millisecond
	for {
		_, err := n.Join(seeds)
		if err == nil {
			return nil
		}
		if time.Now().Add(wait).After(deadline) {
			return err
		}
		n.log.Debug("gossip: join failed, retrying", "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-n.stop:
			return err
		}
		wait = min(2*wait, time.Second)
	}
}

// rejoinLoop joins the seeds again whenever this node sees no other member,
// or no origin. memberlist does not reconnect nodes that declared each
// other dead, so without this a healed partition stays split (until some
// member joins again).
func (n *Node) rejoinLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.RejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.lifeMu.Lock()
		left := n.left
		n.lifeMu.Unlock()
		if left {
			return
		}
		if len(n.Members()) > 1 && len(n.Origins()) > 0 {
			continue
		}
		if k, err := n.Join(n.cfg.Join); err != nil {
			n.log.Debug("gossip: rejoin failed", "err", err)
		} else {
			n.log.Info("gossip: rejoined cluster", "seeds", k, "members", n.ml.NumMembers())
		}
	}
}

// SetKeys changes the cluster keys of a running node: primary is the key
// it encrypts with from now on, and it accepts primary and every key of
// extra. A key rotation without downtime is three SetKeys on every node
// (see Config.ExtraKeys). The node must have been started with a
// SecretKey: encryption cannot be turned on or off while running.
func (n *Node) SetKeys(primary []byte, extra [][]byte) error {
	if n.keyring == nil {
		return errors.New("gossip: set keys: this node was started without encryption")
	}
	want := append([][]byte{primary}, extra...)
	for _, k := range want {
		if err := checkKey(k); err != nil {
			return err
		}
	}
	// Add first, then switch, then remove: at no moment does the node lack
	// a key the others may still send with.
	for _, k := range want {
		if err := n.keyring.AddKey(bytes.Clone(k)); err != nil {
			return fmt.Errorf("gossip: set keys: %w", err)
		}
	}
	if err := n.keyring.UseKey(primary); err != nil {
		return fmt.Errorf("gossip: set keys: %w", err)
	}
	for _, k := range n.keyring.GetKeys() {
		if !slices.ContainsFunc(want, func(w []byte) bool { return bytes.Equal(w, k) }) {
			if err := n.keyring.RemoveKey(k); err != nil {
				return fmt.Errorf("gossip: set keys: %w", err)
			}
		}
	}
	n.log.Info("gossip: cluster keys changed", "keys", len(n.keyring.GetKeys()))
	return nil
}

// Join contacts addrs ("host:port") and merges state with each. It returns
// how many answered, and an error only if none did.
func (n *Node) Join(addrs []string) (int, error) {
	k, err := n.ml.Join(addrs)
	if err != nil {
		return k, fmt.Errorf("gossip: join %v: %w", addrs, err)
	}
	return k, nil
}

// Publish stores env as the newest record of its channel, reports it to
// OnRecord and broadcasts it. It checks the record like any received one
// (decoding, size, Verify). Publishing the record already held is a no-op;
// publishing one with a smaller Seq, or the same Seq with other content,
// returns ErrStale. A record over MaxRecordBytes returns ErrRecordTooLarge.
func (n *Node) Publish(env *release.Envelope) error {
	rec, err := encodeRecord(env)
	if err != nil {
		return err
	}
	if held, ok := n.held(rec.ch.Key()); ok && held.id == rec.id {
		return nil
	}
	if err := n.acceptErr(rec, true); err != nil {
		return err
	}
	return nil
}

// held returns the record held for key.
func (n *Node) held(key string) (*record, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.records[key]
	return r, ok
}

// accept is acceptErr for records from the network: errors are logged.
func (n *Node) accept(rec *record, relay bool) bool {
	err := n.acceptErr(rec, relay)
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrStale):
		// The common case: every relay of a record arrives several times.
	default:
		n.refused.Add(1)
		n.log.Debug("gossip: dropped record", "channel", rec.ch.Key(), "seq", rec.ch.Seq, "err", err)
	}
	return false
}

// acceptErr stores rec if it is newer than the record held for its channel
// and passes Verify, then queues it for broadcast (if relay) and calls
// OnRecord.
func (n *Node) acceptErr(rec *record, relay bool) error {
	key := rec.ch.Key()
	n.applyMu.Lock()
	defer n.applyMu.Unlock()

	n.mu.Lock()
	held, ok := n.records[key]
	full := !ok && len(n.records) >= MaxChannels
	appFull := !ok && n.perApp[rec.ch.App] >= release.MaxChannelsPerApp
	n.mu.Unlock()
	if ok && rec.ch.Seq <= held.ch.Seq {
		return fmt.Errorf("%w: %s seq %d, holding %d", ErrStale, key, rec.ch.Seq, held.ch.Seq)
	}
	if full {
		return fmt.Errorf("%w: %s would be channel %d, limit %d", ErrTooManyChannels, key, MaxChannels+1, MaxChannels)
	}
	if appFull {
		return fmt.Errorf("%w: %s would be channel %d of app %s, limit %d", ErrTooManyChannels, key, release.MaxChannelsPerApp+1, rec.ch.App, release.MaxChannelsPerApp)
	}
	if ahead := n.cfg.MaxSeqAhead; ahead > 0 {
		if limit := n.cfg.Now().Add(ahead).UnixMilli(); limit > 0 && rec.ch.Seq > uint64(limit) {
			return fmt.Errorf("%w: %s seq %d is more than %v ahead of this node's clock", ErrSeqAhead, key, rec.ch.Seq, ahead)
		}
	}
	if n.cfg.Verify != nil {
		if err := n.cfg.Verify(rec.env, rec.ch); err != nil {
			return fmt.Errorf("gossip: record %s seq %d rejected: %w", key, rec.ch.Seq, err)
		}
	}

	n.mu.Lock()
	if _, had := n.records[key]; !had {
		n.perApp[rec.ch.App]++
	}
	n.records[key] = rec
	n.lastUpdate = time.Now()
	n.mu.Unlock()

	if relay {
		n.queue.QueueBroadcast(&recordBroadcast{key: key, msg: rec.wire})
		if n.queue.NumQueued() > maxQueued {
			n.queue.Prune(maxQueued)
		}
	}
	n.log.Debug("gossip: accepted record", "channel", key, "seq", rec.ch.Seq, "relay", relay)
	if n.cfg.OnRecord != nil {
		n.cfg.OnRecord(rec.env, rec.ch)
	}
	return nil
}

// snapshot returns the held records sorted by channel key.
func (n *Node) snapshot() []*record {
	n.mu.Lock()
	recs := make([]*record, 0, len(n.records))
	for _, r := range n.records {
		recs = append(recs, r)
	}
	n.mu.Unlock()
	slices.SortFunc(recs, func(a, b *record) int { return strings.Compare(a.ch.Key(), b.ch.Key()) })
	return recs
}

// Records returns the newest record of every channel, sorted by channel
// key. The envelopes are shared and must not be modified.
func (n *Node) Records() []*release.Envelope {
	recs := n.snapshot()
	out := make([]*release.Envelope, len(recs))
	for i, r := range recs {
		out[i] = r.env
	}
	return out
}

// Record returns the newest record of the channel key ("app/channel").
// The envelope is shared and must not be modified.
func (n *Node) Record(key string) (*release.Envelope, bool) {
	r, ok := n.held(key)
	if !ok {
		return nil, false
	}
	return r.env, true
}

// Refused returns how many records from the cluster this node dropped
// because a check refused them (Verify, the seq and channel bounds), not
// counting the many copies of records it already held. A rising count
// means someone sends records nobody should take.
func (n *Node) Refused() uint64 { return n.refused.Load() }

// LastUpdate returns when this node accepted its newest record (zero if it
// holds none), for a "state age" metric.
func (n *Node) LastUpdate() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lastUpdate
}

// Members returns the members this node believes alive (including suspected
// ones, which have not been declared dead yet), itself included, sorted by
// name. A member whose meta this version cannot read has a zero Meta.
func (n *Node) Members() []Member {
	out := n.d.memberList()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Origins returns the members with RoleOrigin, as Members does.
func (n *Node) Origins() []Member { return n.withRole(RoleOrigin) }

// Edges returns the members with RoleEdge, as Members does.
func (n *Node) Edges() []Member { return n.withRole(RoleEdge) }

func (n *Node) withRole(r Role) []Member {
	ms := n.Members()
	out := ms[:0]
	for _, m := range ms {
		if m.Meta.Role == r {
			out = append(out, m)
		}
	}
	return out
}

// Name returns the node's name in the cluster.
func (n *Node) Name() string { return n.cfg.Name }

// Addr returns the gossip address other nodes reach this one at,
// "host:port", with the port the OS chose if BindAddr had port 0.
func (n *Node) Addr() string { return n.addr }

// Leave tells the cluster this node is going away, so that the others drop
// it at once instead of after a suspicion timeout. It waits until the
// message went out or ctx is done (without a deadline, cfg.LeaveTimeout).
// The node keeps running until Shutdown. Calling Leave again is a no-op.
func (n *Node) Leave(ctx context.Context) error {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.shutdown {
		return errors.New("gossip: leave after shutdown")
	}
	if n.left {
		return nil
	}
	n.left = true
	timeout := n.cfg.LeaveTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return fmt.Errorf("gossip: leave: %w", context.DeadlineExceeded)
	}
	done := make(chan error, 1)
	go func() { done <- n.ml.Leave(timeout) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("gossip: leave: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gossip: leave: %w", ctx.Err())
	}
}

// Shutdown stops the node: it leaves the cluster first if Leave was not
// called (bounded by cfg.LeaveTimeout), then closes memberlist's listeners
// and stops background work. It is safe to call more than once.
func (n *Node) Shutdown() error {
	n.lifeMu.Lock()
	left, down := n.left, n.shutdown
	n.lifeMu.Unlock()
	if down {
		return nil
	}
	var errs []error
	if !left {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.LeaveTimeout)
		if err := n.Leave(ctx); err != nil {
			// Not fatal: the others will find out by probing.
			n.log.Warn("gossip: leave before shutdown failed", "err", err)
		}
		cancel()
	}
	n.lifeMu.Lock()
	if n.shutdown {
		n.lifeMu.Unlock()
		return nil
	}
	n.shutdown = true
	close(n.stop)
	n.lifeMu.Unlock()
	n.wg.Wait()
	if err := n.ml.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("gossip: shutdown: %w", err))
	}
	n.log.Info("gossip: node stopped")
	return errors.Join(errs...)
}
