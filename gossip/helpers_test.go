package gossip

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/capstan-ota/capstan/release"
)

// eventually polls cond until it is true or timeout passes, then fails the
// test. It never sleeps as an assertion: the timeout is only a bound.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %v: "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testLogger discards logs unless GOSSIP_TEST_LOG is set (logging to
// t.Log would panic when memberlist goroutines log after the test).
func testLogger() *slog.Logger {
	if os.Getenv("GOSSIP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testKey returns a fresh ed25519 key.
func testKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	k, err := release.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signedRecord returns a realistic signed channel record.
func signedRecord(t testing.TB, key ed25519.PrivateKey, app, channel string, seq uint64) *release.Envelope {
	t.Helper()
	now := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	ver := fmt.Sprintf("1.%d.0", seq)
	ch := release.Channel{
		App:        app,
		Channel:    channel,
		Seq:        seq,
		Release:    release.Ref{Version: ver, ID: release.Sum([]byte(app + ver))},
		RolloutBPS: 2500,
		Stable:     &release.Ref{Version: "1.0.0", ID: release.Sum([]byte(app + "1.0.0"))},
		Issued:     now,
		Expires:    now.Add(7 * 24 * time.Hour),
	}
	b, err := ch.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return release.Seal(b, key)
}

// seqOf decodes an envelope's channel Seq.
func seqOf(t testing.TB, env *release.Envelope) uint64 {
	t.Helper()
	ch, err := env.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch.Seq
}

// hasSeq reports whether n holds a record for key with at least seq.
func hasSeq(n *Node, key string, seq uint64) bool {
	r, ok := n.held(key)
	return ok && r.ch.Seq >= seq
}

// recorder collects OnRecord calls and checks they are never concurrent.
type recorder struct {
	busy atomic.Bool
	mu   sync.Mutex // guards seqs, at, overlap
	seqs map[string][]uint64
	at   map[string]time.Time // "key@seq" → arrival
	// overlap is set if two OnRecord calls ran at once.
	overlap bool
}

func newRecorder() *recorder {
	return &recorder{seqs: map[string][]uint64{}, at: map[string]time.Time{}}
}

func (r *recorder) onRecord(env *release.Envelope, ch *release.Channel) {
	now := time.Now()
	if !r.busy.CompareAndSwap(false, true) {
		r.mu.Lock()
		r.overlap = true
		r.mu.Unlock()
		return
	}
	defer r.busy.Store(false)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seqs[ch.Key()] = append(r.seqs[ch.Key()], ch.Seq)
	r.at[fmt.Sprintf("%s@%d", ch.Key(), ch.Seq)] = now
}

func (r *recorder) get(key string) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.seqs[key]...)
}

func (r *recorder) arrival(key string, seq uint64) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.at[fmt.Sprintf("%s@%d", key, seq)]
	return at, ok
}

// checkIncreasing fails if OnRecord overlapped or a channel's Seqs did not
// strictly increase.
func (r *recorder) checkIncreasing(t testing.TB, name string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.overlap {
		t.Errorf("%s: OnRecord calls overlapped", name)
	}
	for k, s := range r.seqs {
		for i := 1; i < len(s); i++ {
			if s[i] <= s[i-1] {
				t.Errorf("%s: OnRecord for %s not increasing: %v", name, k, s)
				break
			}
		}
	}
}

// testConfig is DefaultLocalConfig with a test logger and the given role.
func testConfig(role Role, join ...string) Config {
	c := DefaultLocalConfig()
	c.Logger = testLogger()
	c.Meta = Meta{Role: role}
	c.Join = join
	return c
}

// cluster is a set of nodes started in one test and shut down together.
type cluster struct {
	t     testing.TB
	nodes []*Node
	recs  []*recorder
}

func newCluster(t testing.TB) *cluster {
	c := &cluster{t: t}
	t.Cleanup(c.shutdown)
	return c
}

// start starts a node; the cluster records its OnRecord calls (chained
// after cfg.OnRecord, if any).
func (c *cluster) start(cfg Config) (*Node, *recorder) {
	c.t.Helper()
	rec := newRecorder()
	next := cfg.OnRecord
	cfg.OnRecord = func(env *release.Envelope, ch *release.Channel) {
		rec.onRecord(env, ch)
		if next != nil {
			next(env, ch)
		}
	}
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("%s-%d", cfg.Meta.Role, len(c.nodes))
	}
	n, err := New(cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", cfg.Name, err)
	}
	c.nodes = append(c.nodes, n)
	c.recs = append(c.recs, rec)
	return n, rec
}

// shutdown stops every node at once (each leaves first).
func (c *cluster) shutdown() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.Shutdown(); err != nil {
				c.t.Errorf("shutdown %s: %v", n.Name(), err)
			}
		}()
	}
	wg.Wait()
}

// waitMembers waits until every node sees want members.
func (c *cluster) waitMembers(want int) {
	c.t.Helper()
	eventually(c.t, 30*time.Second, func() bool {
		for _, n := range c.nodes {
			if len(n.Members()) != want {
				return false
			}
		}
		return true
	}, "every node sees %d members", want)
}

// faultTransport wraps a real NetTransport and can cut the node off from
// everyone (a partition): while blocked, outgoing packets vanish, dials
// fail, and incoming packets and streams are dropped.
type faultTransport struct {
	*memberlist.NetTransport
	blocked  atomic.Bool
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{}
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*faultTransport)(nil)

var errPartitioned = errors.New("test: partitioned")

func newFaultTransport(t testing.TB) *faultTransport {
	t.Helper()
	var nt *memberlist.NetTransport
	var err error
	for range 10 { // binding TCP and UDP on the same random port can race
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{"127.0.0.1"},
			Logger:    newStdLogger(testLogger()),
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	ft := &faultTransport{
		NetTransport: nt,
		packetCh:     make(chan *memberlist.Packet),
		streamCh:     make(chan net.Conn),
		done:         make(chan struct{}),
	}
	go ft.forwardPackets()
	go ft.forwardStreams()
	return ft
}

func (ft *faultTransport) forwardPackets() {
	for {
		select {
		case p := <-ft.NetTransport.PacketCh():
			if ft.blocked.Load() {
				continue
			}
			select {
			case ft.packetCh <- p:
			case <-ft.done:
				return
			}
		case <-ft.done:
			return
		}
	}
}

func (ft *faultTransport) forwardStreams() {
	for {
		select {
		case c := <-ft.NetTransport.StreamCh():
			if ft.blocked.Load() {
				_ = c.Close()
				continue
			}
			select {
			case ft.streamCh <- c:
			case <-ft.done:
				_ = c.Close()
				return
			}
		case <-ft.done:
			return
		}
	}
}

func (ft *faultTransport) PacketCh() <-chan *memberlist.Packet { return ft.packetCh }
func (ft *faultTransport) StreamCh() <-chan net.Conn           { return ft.streamCh }

func (ft *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if ft.blocked.Load() {
		return time.Now(), nil
	}
	return ft.NetTransport.WriteTo(b, addr)
}

func (ft *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if ft.blocked.Load() {
		return time.Now(), nil
	}
	return ft.NetTransport.WriteToAddress(b, a)
}

func (ft *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if ft.blocked.Load() {
		return nil, errPartitioned
	}
	return ft.NetTransport.DialTimeout(addr, timeout)
}

func (ft *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if ft.blocked.Load() {
		return nil, errPartitioned
	}
	return ft.NetTransport.DialAddressTimeout(a, timeout)
}

func (ft *faultTransport) Shutdown() error {
	ft.once.Do(func() { close(ft.done) })
	return ft.NetTransport.Shutdown()
}

// String lists each node's Seq for app/prod, for failure messages.
func (c *cluster) String() string {
	var b strings.Builder
	for _, n := range c.nodes {
		r, ok := n.held("app/prod")
		var seq uint64
		if ok {
			seq = r.ch.Seq
		}
		fmt.Fprintf(&b, "%s=%d(q%d,m%d) ", n.Name(), seq, n.queue.NumQueued(), len(n.Members()))
	}
	return b.String()
}
