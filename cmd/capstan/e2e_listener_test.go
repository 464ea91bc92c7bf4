package main

import (
	"bufio"
	"crypto/ed25519"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/release"
	"golang.org/x/sys/unix"
)

// originKeyFile writes a fresh origin public key for a standalone edge.
func originKeyFile(t *testing.T) string {
	t.Helper()
	k, err := release.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := release.EncodePublicKey(k.Public().(ed25519.PublicKey), release.RoleOrigin)
	p := filepath.Join(t.TempDir(), "origin.key.pub")
	if err := os.WriteFile(p, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// standaloneEdgeArgs starts no cluster: an edge alone is enough to load
// its listener.
func standaloneEdgeArgs(t *testing.T) []string {
	return []string{"edge", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--gossip", "127.0.0.1:0",
		"--insecure-gossip", "--origin-key", originKeyFile(t), "--rate-limit-loopback"}
}

// answers reports whether the edge at addr answers GET /v1/edges from the
// loopback address src within a second.
func answers(addr, src string) bool {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	c.Write([]byte("GET /v1/edges HTTP/1.1\r\nHost: edge\r\n\r\n"))
	b := make([]byte, 12)
	n, _ := c.Read(b)
	return strings.HasPrefix(string(b[:n]), "HTTP/1.1 200")
}

// TestEdgeSurvivesDescriptorExhaustion is finding 3 of issue 16: an edge
// run out of file descriptors (RLIMIT_NOFILE 128, idle connections) must
// answer again once they are gone. fasthttp's Serve returns on the first
// EMFILE, which left the process alive in gossip and deaf for good.
func TestEdgeSurvivesDescriptorExhaustion(t *testing.T) {
	args := append([]string{testutil.Binary(t)}, standaloneEdgeArgs(t)...)
	for i, a := range args {
		args[i] = "'" + a + "'"
	}
	p := testutil.Start(t, nil, "/bin/sh", "-c", "ulimit -n 128 && exec "+strings.Join(args, " "))
	addr := strings.TrimPrefix(p.WaitFor(t, 30*time.Second, edgeAddrs)[1], "http://")
	testutil.Eventually(t, 10*time.Second, "the edge to answer", func() bool { return answers(addr, "127.0.0.1") })

	// More idle connections than the edge has descriptors: the kernel
	// completes the handshakes, the edge's accepts fail with EMFILE.
	var flood []net.Conn
	for i := 0; i < 300; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			break
		}
		flood = append(flood, c)
	}
	testutil.Eventually(t, 10*time.Second, "the edge to run out of descriptors", func() bool {
		return strings.Contains(p.Output(), "accepting connections fails")
	})
	if answers(addr, "127.0.0.2") {
		t.Log("the edge answered while out of descriptors (a slot was free)")
	}
	for _, c := range flood {
		c.Close()
	}
	testutil.Eventually(t, 15*time.Second, "the edge to answer again once the flood is gone", func() bool { return answers(addr, "127.0.0.2") })
	select {
	case <-p.Exited():
		t.Fatal("the edge exited")
	default:
	}
}

// TestEdgeExitsWhenListenerDies: when the edge's listening socket fails in
// a way retrying cannot mend (here: shut down from outside, through a
// duplicate of the descriptor), the process leaves the cluster and exits
// non-zero for its supervisor, instead of lingering and answering nothing.
func TestEdgeExitsWhenListenerDies(t *testing.T) {
	p := testutil.Start(t, nil, testutil.Binary(t), standaloneEdgeArgs(t)...)
	addr := strings.TrimPrefix(p.WaitFor(t, 30*time.Second, edgeAddrs)[1], "http://")
	pid := p.Cmd.Process.Pid
	fd := listeningFD(t, pid, addr)
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Skipf("pidfd_open: %v", err)
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		t.Skipf("pidfd_getfd (needs ptrace rights over the child): %v", err)
	}
	defer unix.Close(dup)
	if err := unix.Shutdown(dup, unix.SHUT_RDWR); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(20 * time.Second):
		t.Fatalf("the edge did not exit after its listener died:\n%s", p.Output())
	}
	if code := p.Cmd.ProcessState.ExitCode(); code == 0 {
		t.Fatalf("exit code 0 after the listener died:\n%s", p.Output())
	}
	if !strings.Contains(p.Output(), "stopped serving") {
		t.Errorf("the edge did not say why it stopped:\n%s", p.Output())
	}
}

// listeningFD finds the descriptor number of the TCP socket pid listens on
// at addr, through /proc.
func listeningFD(t *testing.T, pid int, addr string) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	pn, _ := strconv.Atoi(port)
	tcp, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	// local_address is hex ip:port, st 0A is LISTEN; inode is field 10.
	re := regexp.MustCompile(fmt.Sprintf(`(?m)^\s*\d+: [0-9A-F]{8}:%04X [0-9A-F:]+ 0A (?:\S+\s+){5}(\d+)`, pn))
	m := re.FindSubmatch(tcp)
	if m == nil {
		t.Fatalf("no listening socket on port %d in /proc/%d/net/tcp", pn, pid)
	}
	want := "socket:[" + string(m[1]) + "]"
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if l, _ := os.Readlink(filepath.Join(dir, e.Name())); l == want {
			n, _ := strconv.Atoi(e.Name())
			return n
		}
	}
	t.Fatalf("socket %s not found among /proc/%d/fd", want, pid)
	return -1
}

// edgeConnsPerAddress is edge.DefaultConnsPerAddress, which the flood
// test expects one address to hold.
const edgeConnsPerAddress = edge.DefaultConnsPerAddress

// TestHelperHoldConns is not a test: TestIdleConnectionFlood runs it in
// child processes (a process may hold only so many descriptors) to open
// CAPSTAN_HOLD="addr count firstSrc perSrc" idle connections, each after
// one request (keep-alive), from loopback addresses firstSrc, firstSrc+1,
// … (perSrc each). It closes those the edge refuses, prints how many it
// holds, and keeps them until its stdin closes.
func TestHelperHoldConns(t *testing.T) {
	spec := os.Getenv("CAPSTAN_HOLD")
	if spec == "" {
		t.Skip("helper process for TestIdleConnectionFlood")
	}
	var addr string
	var count, first, per int
	fmt.Sscan(spec, &addr, &count, &first, &per)
	held := holdConns(addr, count, first, per)
	fmt.Printf("held %d\n", len(held))
	io.Copy(io.Discard, os.Stdin)
}

// holdConns opens count connections to addr from 127.0.0.(first + i/per)
// and sends one request on each; it keeps those the edge keeps open.
func holdConns(addr string, count, first, per int) []net.Conn {
	var held []net.Conn
	batch := make([]net.Conn, 0, 500)
	sweep := func() {
		// The edge answers the request at once on a connection it keeps
		// and "429, Connection: close" on one over its address's cap.
		kept := make([]bool, len(batch))
		var wg sync.WaitGroup
		for i, c := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				kept[i] = strings.HasPrefix(line, "HTTP/1.1 200")
				c.SetReadDeadline(time.Time{})
			}()
		}
		wg.Wait()
		for i, c := range batch {
			if kept[i] {
				held = append(held, c)
			} else {
				c.Close()
			}
		}
		batch = batch[:0]
	}
	for i := 0; i < count; i++ {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, byte((first+i/per)/250), byte(1+(first+i/per)%250))}
		d := net.Dialer{LocalAddr: src, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			continue
		}
		c.Write([]byte("GET /v1/edges HTTP/1.1\r\nHost: edge\r\n\r\n"))
		batch = append(batch, c)
		if len(batch) == cap(batch) {
			sweep()
		}
	}
	sweep()
	return held
}

// rssKB reads a process's resident set size.
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no VmRSS")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestIdleConnectionFlood is the flood of finding 3 of issue 16, and
// more: 20,000 idle connections from one address (the edge keeps its cap
// of 1,024 and closes the rest at once), then 18,000 idle keep-alive
// connections from 18 more addresses. Another address is answered at
// once throughout, and the edge stays under 150 MB RSS.
func TestIdleConnectionFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("38,000 connections")
	}
	var lim unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	if lim.Max < 19500 {
		t.Skipf("RLIMIT_NOFILE hard limit %d: the edge needs ~19,100 descriptors", lim.Max)
	}
	args := append([]string{testutil.Binary(t)}, standaloneEdgeArgs(t)...)
	for i, a := range args {
		args[i] = "'" + a + "'"
	}
	p := testutil.Start(t, nil, "/bin/sh", "-c", fmt.Sprintf("ulimit -n %d && exec %s", min(lim.Max, 32768), strings.Join(args, " ")))
	addr := strings.TrimPrefix(p.WaitFor(t, 30*time.Second, edgeAddrs)[1], "http://")
	testutil.Eventually(t, 10*time.Second, "the edge to answer", func() bool { return answers(addr, "127.0.0.250") })
	pid := p.Cmd.Process.Pid
	base := rssKB(t, pid)

	type helper struct {
		cmd  *exec.Cmd
		done func()
	}
	var helpers []helper
	defer func() {
		for _, h := range helpers {
			h.done()
		}
	}()
	start := func(count, first, per int) int {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldConns$", "-test.v")
		cmd.Env = append(os.Environ(), fmt.Sprintf("CAPSTAN_HOLD=%s %d %d %d", addr, count, first, per))
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		helpers = append(helpers, helper{cmd, func() { in.Close(); cmd.Wait() }})
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var n int
			if _, err := fmt.Sscanf(sc.Text(), "held %d", &n); err == nil {
				go io.Copy(io.Discard, out)
				return n
			}
		}
		t.Fatalf("helper ended without holding connections")
		return 0
	}
	began := time.Now()
	one := start(20000, 0, 20000) // 127.0.0.1 only
	if one != edgeConnsPerAddress {
		t.Errorf("one address holds %d connections, want the cap %d", one, edgeConnsPerAddress)
	}
	if !answers(addr, "127.0.0.250") {
		t.Fatal("another address is not answered during the flood")
	}
	many := start(9000, 1, 1000) + start(9000, 10, 1000) // 127.0.0.2–19
	t.Logf("held %d + %d idle connections after %s", one, many, time.Since(began).Round(time.Millisecond))
	if many < 17500 {
		t.Errorf("18 addresses hold only %d connections", many)
	}
	answered := time.Now()
	if !answers(addr, "127.0.0.250") {
		t.Fatal("another address is not answered with 19,000 idle connections open")
	}
	rss := rssKB(t, pid)
	t.Logf("edge RSS: %d MB idle, %d MB with %d idle connections (%.1f KB each); another address answered in %s",
		base/1024, rss/1024, one+many, float64(rss-base)/float64(one+many), time.Since(answered).Round(time.Millisecond))
	if rss > 150*1024 {
		t.Fatalf("edge RSS %d MB with %d idle connections, want under 150 MB", rss/1024, one+many)
	}
}
