package gossip

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/capstan-ota/capstan/release"
)

// Config configures a Node. Build one with DefaultConfig (or
// DefaultLocalConfig) and change what you need; New copies it and never
// writes back into it. A zero duration or count in a tuning field means the
// DefaultConfig value.
type Config struct {
	// Name is the node's unique name in the cluster. Empty means the host
	// name plus a random suffix, so that a restarted node never collides
	// with its own earlier incarnation.
	Name string

	// BindAddr is the "host:port" memberlist listens on for both UDP and
	// TCP. Port 0 lets the OS choose; Node.Addr reports the result.
	// Default "0.0.0.0:7946".
	BindAddr string

	// AdvertiseAddr is the optional "ip:port" other nodes use to reach
	// this one (for NAT or containers); it must be an IP, not a host name.
	// Empty means the bind address, or a private IP of this host when
	// bound to 0.0.0.0 (New fails if the host has none: bind 127.0.0.1 or
	// set AdvertiseAddr).
	AdvertiseAddr string

	// Join lists seed nodes ("host:port") that New contacts. Empty starts a
	// new cluster.
	Join []string

	// Meta is what this node tells the others about itself. Its encoding
	// must fit memberlist's 512-byte NodeMeta limit; New checks.
	Meta Meta

	// SecretKey, if set, enables memberlist's AES-GCM encryption of all
	// gossip, and so authenticates membership: a node without the key
	// cannot join, and its packets are dropped. It must be 16, 24 or 32
	// bytes. It is the key this node encrypts with; see ExtraKeys.
	SecretKey []byte

	// ExtraKeys are further keys this node accepts (decrypts with) but
	// does not send with: the keyring that lets a cluster change its key
	// without downtime (add the new key everywhere, then make it the
	// SecretKey everywhere, then drop the old one; Node.SetKeys changes
	// them on a running node). They need SecretKey.
	ExtraKeys [][]byte

	// Label, if set, separates clusters that share a network (staging and
	// production): nodes only talk to nodes with the same label. It is
	// sent in the clear with every packet and comes out of the packet
	// budget (see MaxRecordBytes), so keep it short; at most 255 bytes.
	Label string

	// Verify, if set, is called for every record that is newer than the one
	// held, before it is stored or relayed. A non-nil error drops the
	// record (it is logged at Debug). Typical use: check the origin's
	// signature and the record's expiry.
	Verify func(env *release.Envelope, ch *release.Channel) error

	// MaxSeqAhead bounds how far a record's Seq may be ahead of this
	// node's clock. Origins set Seq to at least the clock in milliseconds
	// (release.Channel), so a Seq far in the future is a forgery or a
	// broken clock: held, it would make every real record of its channel
	// "not newer" until the clock catches up. Default 24 h; negative
	// disables the check.
	MaxSeqAhead time.Duration

	// Now is the clock for MaxSeqAhead; nil means time.Now.
	Now func() time.Time

	// OnRecord, if set, is called once for every record this node accepts
	// (newer than the one held and passing Verify), including records given
	// to Publish. Calls are serial, in acceptance order, so per channel
	// they arrive in increasing Seq. It runs on memberlist's receive path:
	// it must not block long and must not call Publish. env and ch are
	// shared with Records and must not be modified. Records received while
	// joining arrive before New returns, so OnRecord (and Verify) must not
	// depend on having the *Node yet.
	OnRecord func(env *release.Envelope, ch *release.Channel)

	// Logger receives the package's and memberlist's logs. nil discards.
	Logger *slog.Logger

	// Transport, if set, replaces memberlist's UDP/TCP transport (tests
	// use it for in-memory networks and fault injection). BindAddr is then
	// only used to compute the advertised address.
	Transport memberlist.Transport

	// JoinTimeout bounds how long New keeps retrying cfg.Join when no seed
	// answers. Default 5 s.
	JoinTimeout time.Duration

	// RejoinInterval is how often a node with seeds checks that it is still
	// in a cluster: when it sees no other member, or (for any node) no
	// origin, it joins its seeds again. This heals a partition that
	// memberlist alone would not (both sides declare the other dead and
	// stop talking). Default 10 s; negative disables.
	RejoinInterval time.Duration

	// LeaveTimeout bounds the graceful leave that Shutdown performs when
	// Leave was not called. Default 2 s.
	LeaveTimeout time.Duration

	// GossipInterval is how often a node sends queued broadcasts to
	// GossipNodes random peers. Propagation time is about
	// log(N)/log(GossipNodes) rounds of this. It costs nothing while no
	// broadcast is queued. Default 100 ms (memberlist LAN: 200 ms).
	GossipInterval time.Duration

	// GossipNodes is the fan-out of each gossip round. Default 3.
	GossipNodes int

	// RetransmitMult sets how often each of memberlist's own broadcasts
	// (alive, suspect, dead) is sent by each node: RetransmitMult ×
	// ceil(log10(N+1)). Default 4.
	RetransmitMult int

	// RecordRetransmitMult is the same for record broadcasts. Every node
	// relays a record it accepts, so a node misses it only if all the
	// others' sends skip it; push/pull then repairs it, seconds later.
	// Measured on 7 nodes (limit = mult × 1): 4 missed 4 of 420
	// node-records, 8 missed none. Records are rare and small, so the
	// extra ~2.5 KB per record per node is cheap. Default 8.
	RecordRetransmitMult int

	// PushPullInterval is how often a node exchanges full state with one
	// random peer; it bounds how long a lost broadcast stays missing.
	// Default 15 s (memberlist LAN: 30 s; our state is small).
	PushPullInterval time.Duration

	// ProbeInterval and ProbeTimeout drive failure detection. A timeout
	// under ~500 ms causes false suspicion on busy machines. Defaults 1 s
	// and 500 ms.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration

	// SuspicionMult scales how long a suspected node has to refute before
	// it is declared dead: SuspicionMult × max(1, log10 N) × ProbeInterval.
	// Default 4.
	SuspicionMult int

	// TCPTimeout bounds push/pull and join connections. Default 10 s.
	TCPTimeout time.Duration
}

// DefaultConfig returns a Config for a production LAN fleet, derived from
// memberlist.DefaultLANConfig with a faster gossip interval (records must
// reach every edge within a second) and a shorter push/pull interval.
func DefaultConfig() Config {
	lan := memberlist.DefaultLANConfig()
	return Config{
		BindAddr:             "0.0.0.0:7946",
		JoinTimeout:          5 * time.Second,
		RejoinInterval:       10 * time.Second,
		LeaveTimeout:         2 * time.Second,
		GossipInterval:       100 * time.Millisecond,
		GossipNodes:          lan.GossipNodes,    // 3
		RetransmitMult:       lan.RetransmitMult, // 4
		RecordRetransmitMult: 8,
		PushPullInterval:     15 * time.Second,
		ProbeInterval:        lan.ProbeInterval, // 1 s
		ProbeTimeout:         lan.ProbeTimeout,  // 500 ms
		SuspicionMult:        lan.SuspicionMult, // 4
		TCPTimeout:           lan.TCPTimeout,    // 10 s
		MaxSeqAhead:          release.MaxSeqAhead,
	}
}

// DefaultLocalConfig returns a Config for nodes on one machine (capstan dev,
// tests): bound to 127.0.0.1 on an OS-chosen port, with fast gossip,
// push/pull and rejoin. It keeps the LAN probe timeout, because shorter ones
// cause false suspicion when a few cores run many nodes.
func DefaultLocalConfig() Config {
	c := DefaultConfig()
	c.BindAddr = "127.0.0.1:0"
	c.JoinTimeout = 2 * time.Second
	c.RejoinInterval = 500 * time.Millisecond
	c.LeaveTimeout = time.Second
	c.GossipInterval = 50 * time.Millisecond
	c.PushPullInterval = 2 * time.Second
	c.TCPTimeout = 2 * time.Second
	return c
}

// Validate reports the first problem with c (after defaults are applied):
// bad addresses, a Meta that does not fit NodeMeta, a bad key length, or a
// probe timeout not shorter than the probe interval. New calls it.
func (c Config) Validate() error {
	c = c.withDefaults()
	if _, err := c.Meta.encode(); err != nil {
		return err
	}
	_, err := c.memberlistConfig(nil, nil)
	return err
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.BindAddr == "" {
		c.BindAddr = d.BindAddr
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = d.JoinTimeout
	}
	if c.RejoinInterval == 0 {
		c.RejoinInterval = d.RejoinInterval
	}
	if c.LeaveTimeout <= 0 {
		c.LeaveTimeout = d.LeaveTimeout
	}
	if c.GossipInterval <= 0 {
		c.GossipInterval = d.GossipInterval
	}
	if c.GossipNodes <= 0 {
		c.GossipNodes = d.GossipNodes
	}
	if c.RetransmitMult <= 0 {
		c.RetransmitMult = d.RetransmitMult
	}
	if c.RecordRetransmitMult <= 0 {
		c.RecordRetransmitMult = d.RecordRetransmitMult
	}
	if c.PushPullInterval <= 0 {
		c.PushPullInterval = d.PushPullInterval
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = d.ProbeInterval
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = d.ProbeTimeout
	}
	if c.SuspicionMult <= 0 {
		c.SuspicionMult = d.SuspicionMult
	}
	if c.TCPTimeout <= 0 {
		c.TCPTimeout = d.TCPTimeout
	}
	if c.MaxSeqAhead == 0 {
		c.MaxSeqAhead = d.MaxSeqAhead
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Name == "" {
		c.Name = defaultName()
	}
	c.Join = append([]string(nil), c.Join...)
	c.SecretKey = append([]byte(nil), c.SecretKey...)
	extra := make([][]byte, 0, len(c.ExtraKeys))
	for _, k := range c.ExtraKeys {
		extra = append(extra, append([]byte(nil), k...))
	}
	c.ExtraKeys = extra
	return c
}

// checkKey reports whether k is a valid AES key for memberlist.
func checkKey(k []byte) error {
	switch len(k) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("gossip: secret key must be 16, 24 or 32 bytes, got %d", len(k))
}

// keyring builds memberlist's keyring from SecretKey and ExtraKeys; nil
// (no encryption) when SecretKey is empty.
func (c *Config) keyring() (*memberlist.Keyring, error) {
	if len(c.SecretKey) == 0 {
		if len(c.ExtraKeys) > 0 {
			return nil, errors.New("gossip: ExtraKeys need a SecretKey")
		}
		return nil, nil
	}
	var extra [][]byte
	for _, k := range append([][]byte{c.SecretKey}, c.ExtraKeys...) {
		if err := checkKey(k); err != nil {
			return nil, err
		}
		extra = append(extra, bytes.Clone(k))
	}
	kr, err := memberlist.NewKeyring(extra[1:], extra[0])
	if err != nil {
		return nil, fmt.Errorf("gossip: keyring: %w", err)
	}
	return kr, nil
}

// defaultName is the host name plus 8 random hex digits.
func defaultName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "capstan"
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return host + "-" + hex.EncodeToString(b[:])
}

// splitHostPort parses "host:port" into memberlist's separate fields.
func splitHostPort(what, hp string) (string, int, error) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("gossip: %s %q: %w", what, hp, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("gossip: %s %q: bad port", what, hp)
	}
	return host, port, nil
}

// memberlistConfig builds the memberlist configuration for an
// already-defaulted Config. The result is private to the Node: memberlist
// writes the chosen port into it.
func (c *Config) memberlistConfig(d *delegate, logger *log.Logger) (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.Name
	host, port, err := splitHostPort("bind address", c.BindAddr)
	if err != nil {
		return nil, err
	}
	if host == "" {
		host = "0.0.0.0"
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = "", port
	if c.AdvertiseAddr != "" {
		host, port, err := splitHostPort("advertise address", c.AdvertiseAddr)
		if err != nil {
			return nil, err
		}
		mc.AdvertiseAddr, mc.AdvertisePort = host, port
	}
	kr, err := c.keyring()
	if err != nil {
		return nil, err
	}
	mc.Keyring = kr
	if len(c.Label) > memberlist.LabelMaxSize {
		return nil, fmt.Errorf("gossip: label of %d bytes is over %d", len(c.Label), memberlist.LabelMaxSize)
	}
	mc.Label = c.Label
	mc.Transport = c.Transport
	if d != nil {
		mc.Delegate = d
		mc.Events = d
	}
	mc.Logger = logger
	mc.LogOutput = nil
	mc.GossipInterval = c.GossipInterval
	mc.GossipNodes = c.GossipNodes
	mc.RetransmitMult = c.RetransmitMult
	mc.PushPullInterval = c.PushPullInterval
	mc.ProbeInterval = c.ProbeInterval
	mc.ProbeTimeout = c.ProbeTimeout
	mc.SuspicionMult = c.SuspicionMult
	mc.TCPTimeout = c.TCPTimeout
	// A node that comes back under the same name on another address (a
	// fixed Name in a container) may take its name back after this long,
	// instead of never (memberlist's default).
	mc.DeadNodeReclaimTime = 30 * time.Second
	if c.ProbeTimeout >= c.ProbeInterval {
		return nil, fmt.Errorf("gossip: probe timeout %v must be shorter than probe interval %v", c.ProbeTimeout, c.ProbeInterval)
	}
	return mc, nil
}
