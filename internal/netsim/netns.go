package netsim

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrUnavailable is returned by NewNet where namespaces cannot be made:
// not root, no iproute2, or a sandbox that refuses `ip netns add`.
var ErrUnavailable = errors.New("netsim: network namespaces unavailable")

// Net is a set of network namespaces ("hosts") joined by veth pairs to a
// bridge inside a hub namespace, plus a veth from the calling (root)
// namespace to the same bridge. Every host gets 10.200.N.(10+i)/24; the
// root namespace gets 10.200.N.1, so processes in it reach every host and
// hosts reach it. Each host's link carries its own netem delay.
//
// Close removes everything; a Net is not safe for concurrent use.
type Net struct {
	id     string // 4 hex digits, in every name
	subnet int    // N of 10.200.N.0/24
	hub    string
	hosts  []*Host
	logf   func(string, ...any)
	// netem reports whether the kernel has the netem qdisc (sch_netem);
	// some VM kernels do not.
	netem bool
}

// Host is one namespace of a Net.
type Host struct {
	// NS is the namespace's name, for `ip netns exec NS …`.
	NS string
	// IP is the host's address.
	IP string
	// Delay is the round-trip time its link should add.
	Delay time.Duration
	// Netem is true when the link itself carries Delay (tc netem, half
	// each way). False where the kernel has no netem: the caller must add
	// the delay some other way, e.g. with a Proxy in front of the host.
	Netem bool
}

// NewNet creates the hub namespace, its bridge and the root veth. It
// returns an error wrapping ErrUnavailable where namespaces cannot be made.
// logf (may be nil) receives each command run.
func NewNet(ctx context.Context, logf func(string, ...any)) (*Net, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: needs root (running as uid %d)", ErrUnavailable, os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("%w: no ip command (apt-get install -y iproute2): %v", ErrUnavailable, err)
	}
	if _, err := exec.LookPath("tc"); err != nil {
		return nil, fmt.Errorf("%w: no tc command (apt-get install -y iproute2): %v", ErrUnavailable, err)
	}
	var b [2]byte
	rand.Read(b[:])
	n := &Net{id: hex.EncodeToString(b[:]), logf: logf}
	n.hub = "capstan-" + n.id + "-hub"
	subnet, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	n.subnet = subnet
	if err := n.run(ctx, "ip", "netns", "add", n.hub); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	root, hubEnd := "cs"+n.id+"r", "cs"+n.id+"h"
	steps := [][]string{
		{"ip", "-n", n.hub, "link", "set", "lo", "up"},
		{"ip", "-n", n.hub, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", n.hub, "link", "set", "br0", "up"},
		{"ip", "link", "add", root, "type", "veth", "peer", "name", hubEnd, "netns", n.hub},
		{"ip", "-n", n.hub, "link", "set", hubEnd, "master", "br0"},
		{"ip", "-n", n.hub, "link", "set", hubEnd, "up"},
		{"ip", "addr", "add", n.RootIP() + "/24", "dev", root},
		{"ip", "link", "set", root, "up"},
	}
	for _, s := range steps {
		if err := n.run(ctx, s[0], s[1:]...); err != nil {
			n.Close()
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	// Is there netem? Try it on the hub end of the root veth.
	if n.run(ctx, "ip", "netns", "exec", n.hub, "tc", "qdisc", "add", "dev", hubEnd, "root", "netem", "delay", "1ms") == nil {
		n.netem = true
		n.run(ctx, "ip", "netns", "exec", n.hub, "tc", "qdisc", "del", "dev", hubEnd, "root")
	}
	return n, nil
}

// Netem reports whether hosts' links carry their delay (tc netem). Where
// the kernel lacks sch_netem it is false and AddHost adds no delay.
func (n *Net) Netem() bool { return n.netem }

// RootIP is the address of the calling namespace on the Net.
func (n *Net) RootIP() string { return fmt.Sprintf("10.200.%d.1", n.subnet) }

// AddHost creates a namespace on the bridge whose link adds rtt to every
// round trip (netem, rtt/2 each way), if the kernel has netem (see
// Host.Netem).
func (n *Net) AddHost(ctx context.Context, rtt time.Duration) (*Host, error) {
	i := len(n.hosts)
	if i >= 200 {
		return nil, errors.New("netsim: too many hosts")
	}
	h := &Host{NS: fmt.Sprintf("capstan-%s-h%d", n.id, i), IP: fmt.Sprintf("10.200.%d.%d", n.subnet, 10+i), Delay: rtt, Netem: n.netem && rtt > 0}
	hubEnd, hostEnd := fmt.Sprintf("cs%s%dh", n.id, i), fmt.Sprintf("cs%s%de", n.id, i)
	if err := n.run(ctx, "ip", "netns", "add", h.NS); err != nil {
		return nil, err
	}
	n.hosts = append(n.hosts, h)
	half := strconv.FormatFloat(float64(rtt)/2/float64(time.Millisecond), 'f', 3, 64) + "ms"
	steps := [][]string{
		{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		{"ip", "-n", n.hub, "link", "add", hubEnd, "type", "veth", "peer", "name", hostEnd, "netns", h.NS},
		{"ip", "-n", n.hub, "link", "set", hubEnd, "master", "br0"},
		{"ip", "-n", n.hub, "link", "set", hubEnd, "up"},
		{"ip", "-n", h.NS, "addr", "add", h.IP + "/24", "dev", hostEnd},
		{"ip", "-n", h.NS, "link", "set", hostEnd, "up"},
	}
	if h.Netem {
		steps = append(steps,
			[]string{"ip", "netns", "exec", h.NS, "tc", "qdisc", "add", "dev", hostEnd, "root", "netem", "delay", half},
			[]string{"ip", "netns", "exec", n.hub, "tc", "qdisc", "add", "dev", hubEnd, "root", "netem", "delay", half})
	}
	for _, s := range steps {
		if err := n.run(ctx, s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Command returns a command that runs name with args inside h's namespace.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Close kills any process left in the Net's namespaces (all started by
// its user) and deletes the namespaces, which removes the veths.
func (n *Net) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, ns := range n.namespaces() {
		out, _ := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for _, ns := range n.namespaces() {
		if err := n.run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	// The root end goes with its peer; make sure of it.
	exec.CommandContext(ctx, "ip", "link", "del", "cs"+n.id+"r").Run()
	n.hosts = nil
	return errors.Join(errs...)
}

// namespaces lists the hosts' namespaces, then the hub.
func (n *Net) namespaces() []string {
	var out []string
	for _, h := range n.hosts {
		out = append(out, h.NS)
	}
	return append(out, n.hub)
}

func (n *Net) run(ctx context.Context, name string, args ...string) error {
	n.logf("%s %s", name, strings.Join(args, " "))
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("netsim: %s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// freeSubnet picks N so that 10.200.N.0/24 is on no interface of the
// calling namespace, starting from a number derived from the process id so
// that parallel test processes tend to differ.
func freeSubnet() (int, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return 0, fmt.Errorf("netsim: list addresses: %w", err)
	}
	start := os.Getpid() % 250
	for k := 0; k < 250; k++ {
		n := 1 + (start+k)%250
		prefix := fmt.Sprintf("10.200.%d.", n)
		used := false
		for _, a := range addrs {
			if strings.HasPrefix(a.String(), prefix) {
				used = true
				break
			}
		}
		if !used {
			return n, nil
		}
	}
	return 0, errors.New("netsim: no free 10.200.N.0/24")
}
