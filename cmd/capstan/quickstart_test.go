package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/testutil"
)

// TestQuickstart is a new user's first hour, in one folder, in order, as a
// reader does it: `make dev` (stopped with Ctrl-C), the README's "Try it",
// every command of docs/quickstart.md, then the walk-throughs of
// docs/operations.md (a fleet: an origin and two edges) and docs/ci.md (the
// pipeline, against that fleet). Each documented command must exit 0, and
// the outputs the docs promise must appear. Addresses and paths of other
// machines are mapped onto this one (see walkthrough).
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the documented walk-throughs")
	}
	w := newWalkthrough(t)

	// make dev: the Makefile's own recipe, in the reader's folder.
	w.makeDev()
	// The README's "Try it", on the data folder `make dev` made.
	w.runDoc("README.md", "## Try it", "## Layout")
	w.expect("README.md", "<h1>Hello</h1>", `"status":"updated"`, "CAPSTAN_ADMIN_KEY was new to capstan-data/origin",
		"15 B unpacked (", " zip sent)")
	w.stopServers()

	w.runDoc("docs/quickstart.md", "", "")
	w.expect("docs/quickstart.md", "Hello, version 1", "Hello, version 2", `"mode":"delta"`, `"status":"updated"`)
	w.stopServers() // Ctrl-C: the fleet of docs/operations.md takes over

	w.runDoc("docs/operations.md", "", "")
	w.expect("docs/operations.md",
		"com.example.app/beta serves 1.4.0 {device-select}",
		"com.example.app/production serves 1.6.0 to 10.00% of devices (others stay on 1.5.0)",
		"rolled back: com.example.app/production serves 1.5.0",
		"rolled back: com.example.app/production serves the bundle built into the app",
		`"status":"updated"`, "confirmed: ", "channel production")

	// docs/ci.md by hand, against the fleet still running; the reader's
	// app is a package.json and a built dist/.
	w.write("package.json", `{"name":"example","version":"1.7.0"}`)
	w.write("dist/index.html", "<h1>Hello, 1.7.0</h1>")
	w.runDoc("docs/ci.md", "", "")
	w.expect("docs/ci.md", "uploaded com.example.app 1.7.0", "signed with key",
		"com.example.app/production serves 1.7.0 to 10.00% of devices", "com.example.app/production serves 1.7.0 to 50.00% of devices",
		"rolled back:")
	w.stopServers()
	t.Logf("ran %d documented commands", w.ran)
}

// walkthrough runs documented shell commands in one folder, as a reader
// types them: servers (capstan dev|origin|edge, or a line ending in &) run
// in the background until the doc stops them (kill %1) or ends; `export`
// lines change the environment of the lines after them; every other line
// must exit 0. The docs' default addresses are mapped to free ports.
//
// A doc written for several machines (docs/operations.md) is run on this
// one as a reader trying it would: every server's listen address gets a
// free port, its --public-url (and every later mention of it) points
// there, each gossip address of the doc gets a port of its own, absolute
// paths (/var/lib/…, /etc/capstan/…) live under the reader's folder, and
// the cluster key file the doc says to copy to each edge is copied. A
// block marked `<!-- walkthrough: not run … -->` (it needs PostgreSQL and
// S3, or runs a step on every node by PID) says which test runs it.
type walkthrough struct {
	t       *testing.T
	dir     string
	env     []string
	subst   []string          // old, new pairs applied to every line
	api     string            // host:port of the API of `capstan dev`
	edge    string            // host:port of its edge
	gossip  string            // host:port of its gossip
	urls    map[string]string // public URL in a doc → URL on this machine
	gossips map[string]string // gossip address in a doc → address on this machine
	servers []server
	output  map[string]*strings.Builder // per doc: what its commands and servers printed
	ran     int
}

func newWalkthrough(t *testing.T) *walkthrough {
	t.Helper()
	bin := testutil.Binary(t)
	dir := t.TempDir()
	// The README runs bin/capstan from the checkout; the quick start puts
	// bin/ on PATH.
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(dir, "bin", "capstan")); err != nil {
		t.Fatal(err)
	}
	w := &walkthrough{t: t, dir: dir, output: map[string]*strings.Builder{}, urls: map[string]string{}, gossips: map[string]string{}}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAPSTAN_") && !strings.HasPrefix(kv, "PATH=") {
			w.env = append(w.env, kv)
		}
	}
	w.env = append(w.env, "PATH="+filepath.Join(dir, "bin")+":"+os.Getenv("PATH"))
	w.api, w.edge, w.gossip = freeAddr(t), freeAddr(t), freeAddr(t)
	w.subst = []string{
		"127.0.0.1:7070", w.api,
		"127.0.0.1:7080", w.edge,
		"127.0.0.1:7946", w.gossip,
	}
	// The CLI's and the device's defaults are the same addresses.
	w.env = append(w.env, "CAPSTAN_SERVER=http://"+w.api)
	return w
}

// server is a background server a doc started.
type server struct {
	doc string
	p   *testutil.Proc
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// makeDev runs what `make dev` runs, in the reader's folder, waits until it
// serves, and stops it as a reader does with Ctrl-C.
func (w *walkthrough) makeDev() {
	t := w.t
	flags := fmt.Sprintf("DEV_FLAGS=--api %s --edge %s --gossip %s", w.api, w.edge, w.gossip)
	out, err := exec.Command("make", "-s", "-n", "-C", testutil.RepoRoot(t), "dev", flags).Output()
	if err != nil {
		t.Fatalf("make -n dev: %v", err)
	}
	var recipe string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "./") {
			recipe = l
		}
	}
	if !strings.Contains(recipe, "dev --api") {
		t.Fatalf("make dev does not pass DEV_FLAGS to capstan dev: %q", out)
	}
	p := w.start("make dev", recipe)
	if !strings.Contains(p.Output(), "A new admin API key was generated") {
		t.Errorf("make dev on an empty folder printed no admin key:\n%s", p.Output())
	}
	p.Cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("make dev did not stop on Ctrl-C")
	}
	w.servers = w.servers[:len(w.servers)-1]
}

// stop stops a server as its reader would (Ctrl-C, kill %1) and keeps
// what it printed with its doc's output.
func (w *walkthrough) stop(s server) {
	s.p.Stop(w.t)
	w.keep(s.doc, s.p.Output())
}

// shellBlocks returns the ```sh blocks of doc between the headings from
// and to ("" for the start and the end of the file).
func (w *walkthrough) shellBlocks(doc, from, to string) []string {
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(w.t), doc))
	if err != nil {
		w.t.Fatal(err)
	}
	text := string(b)
	if from != "" {
		i := strings.Index(text, "\n"+from+"\n")
		if i < 0 {
			w.t.Fatalf("%s has no heading %q", doc, from)
		}
		text = text[i:]
	}
	if to != "" {
		if i := strings.Index(text, "\n"+to+"\n"); i >= 0 {
			text = text[:i]
		}
	}
	var out []string
	for _, m := range regexp.MustCompile("(?s)(<!-- walkthrough: not run[^\n]*-->\n)?```sh\n(.*?)```").FindAllStringSubmatch(text, -1) {
		if m[1] == "" {
			out = append(out, m[2])
		}
	}
	if len(out) == 0 {
		w.t.Fatalf("%s has no shell block between %q and %q", doc, from, to)
	}
	return out
}

var (
	serverLine = regexp.MustCompile(`(^|[\s;&])(bin/)?capstan (dev|origin|edge)(\s|$)`)
	shellCmnt  = regexp.MustCompile(`\s+#\s.*$`)
)

// runDoc runs every command of doc's shell blocks between two headings.
func (w *walkthrough) runDoc(doc, from, to string) {
	t := w.t
	for _, block := range w.shellBlocks(doc, from, to) {
		sc := bufio.NewScanner(strings.NewReader(strings.ReplaceAll(block, "\\\n", " ")))
		for sc.Scan() {
			line := strings.TrimSpace(shellCmnt.ReplaceAllString(sc.Text(), ""))
			switch {
			case line == "" || strings.HasPrefix(line, "#"):
				continue
			case strings.HasPrefix(line, "go build") || line == "make build":
				continue // the test built the binary
			}
			for i := 0; i < len(w.subst); i += 2 {
				line = strings.ReplaceAll(line, w.subst[i], w.subst[i+1])
			}
			line = w.onThisMachine(line)
			w.ran++
			switch {
			case line == "kill %1":
				if len(w.servers) == 0 {
					t.Fatalf("%s: kill %%1 with no server running", doc)
				}
				w.stop(w.servers[0])
				w.servers = w.servers[1:]
			case strings.HasPrefix(line, "export "):
				w.export(doc, line)
			case serverLine.MatchString(line):
				line = strings.TrimSpace(strings.TrimSuffix(line, "&"))
				if !strings.Contains(line, "capstan dev") {
					line = w.serverOnThisMachine(line)
				}
				w.start(doc, w.withDevAddrs(line))
			default:
				w.runLine(doc, w.withEdge(line))
			}
		}
	}
}

var (
	listenFlag  = regexp.MustCompile(`--(api|http) (\S+)`)
	publicFlag  = regexp.MustCompile(`--public-url (\S+)`)
	gossipFlag  = regexp.MustCompile(`--(gossip|join) (\S+)`)
	machinePath = regexp.MustCompile(`(^|[\s=])(/var/lib/|/etc/capstan/)`)
)

// serverOnThisMachine gives a server line of a multi-machine doc a free
// port to listen on, and remembers where its public URL now is; gossip
// addresses map to ports of their own.
func (w *walkthrough) serverOnThisMachine(line string) string {
	addr := ""
	line = listenFlag.ReplaceAllStringFunc(line, func(m string) string {
		f := listenFlag.FindStringSubmatch(m)
		addr = freeAddr(w.t)
		return "--" + f[1] + " " + addr
	})
	if m := publicFlag.FindStringSubmatch(line); m != nil && addr != "" {
		w.urls[m[1]] = "http://" + addr
		line = strings.Replace(line, m[0], "--public-url http://"+addr, 1)
	}
	line = gossipFlag.ReplaceAllStringFunc(line, func(m string) string {
		f := gossipFlag.FindStringSubmatch(m)
		var mapped []string
		for _, a := range strings.Split(f[2], ",") {
			if _, ok := w.gossips[a]; !ok {
				if f[1] == "join" {
					w.t.Fatalf("--join %s: no server of the doc listens there", a)
				}
				w.gossips[a] = freeAddr(w.t)
			}
			mapped = append(mapped, w.gossips[a])
		}
		return "--" + f[1] + " " + strings.Join(mapped, ",")
	})
	// The doc says to copy the origin's cluster key file to every edge.
	if i := strings.Index(line, "--cluster-key "); i >= 0 {
		dst := strings.Fields(line[i+len("--cluster-key "):])[0]
		if _, err := os.Stat(dst); os.IsNotExist(err) {
			keys, _ := filepath.Glob(filepath.Join(w.dir, "var", "lib", "*", "cluster.key"))
			if len(keys) == 0 {
				w.t.Fatalf("%s: no origin made a cluster key file to copy", line)
			}
			b, err := os.ReadFile(keys[0])
			if err != nil {
				w.t.Fatal(err)
			}
			w.write(strings.TrimPrefix(dst, w.dir+"/"), string(b))
		}
	}
	return line
}

// onThisMachine maps what a line says about other machines onto this one:
// public URLs of the servers started so far, and absolute paths.
func (w *walkthrough) onThisMachine(line string) string {
	for from, to := range w.urls {
		line = strings.ReplaceAll(line, from, to)
	}
	return machinePath.ReplaceAllString(line, "${1}"+w.dir+"${2}")
}

// write makes a file in the reader's folder.
func (w *walkthrough) write(name, content string) {
	p := filepath.Join(w.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		w.t.Fatal(err)
	}
}

// withDevAddrs gives `capstan dev` the walk-through's addresses where the
// doc relies on the defaults.
func (w *walkthrough) withDevAddrs(line string) string {
	if !strings.Contains(line, "capstan dev") {
		return line
	}
	for _, f := range [][2]string{{"--api", w.api}, {"--edge", w.edge}, {"--gossip", w.gossip}} {
		if !strings.Contains(line, f[0]+" ") {
			line = strings.TrimSpace(line) + " " + f[0] + " " + f[1]
		}
	}
	return line
}

// withEdge gives `capstan device` the walk-through's edge where the doc
// relies on the default one.
func (w *walkthrough) withEdge(line string) string {
	if strings.Contains(line, "capstan device") && !strings.Contains(line, "--edge") {
		return line + " --edge http://" + w.edge
	}
	return line
}

// start runs a server line in the background and waits until it listens.
func (w *walkthrough) start(doc, line string) *testutil.Proc {
	t := w.t
	// env -C and bash -c exec in turn, so the process is the server itself
	// and a signal reaches it as Ctrl-C would.
	p := testutil.Start(t, w.env, "env", "-C", w.dir, "bash", "-c", line)
	// Ready: capstan dev serves; an origin has its gossip node; an edge has
	// joined the cluster (it answers devices only with what it holds).
	ready := regexp.MustCompile(`capstan dev: origin API|msg="gossip listening"|msg="joined the cluster"`)
	deadline := time.Now().Add(60 * time.Second)
	for !ready.MatchString(p.Output()) {
		select {
		case <-p.Exited():
			t.Fatalf("%s: server exited: %s\n%s", doc, line, p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: server not ready after 60s: %s\n%s", doc, line, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.servers = append(w.servers, server{doc, p})
	return p
}

// stopServers stops what a doc left running, as its reader would before
// the next doc.
func (w *walkthrough) stopServers() {
	for i := len(w.servers) - 1; i >= 0; i-- {
		w.stop(w.servers[i])
	}
	w.servers = nil
}

// export evaluates an export line with bash and takes the variables it set.
func (w *walkthrough) export(doc, line string) {
	out := w.shell(doc, line+` && env -0`)
	w.env = nil
	for _, kv := range strings.Split(out, "\x00") {
		if kv != "" && !strings.HasPrefix(kv, "_=") && !strings.HasPrefix(kv, "SHLVL=") && !strings.HasPrefix(kv, "PWD=") && !strings.HasPrefix(kv, "OLDPWD=") {
			w.env = append(w.env, kv)
		}
	}
}

// runLine runs one command line and keeps its output.
func (w *walkthrough) runLine(doc, line string) { w.keep(doc, w.shell(doc, line)) }

// keep adds output to what a doc's commands printed.
func (w *walkthrough) keep(doc, out string) {
	sb := w.output[doc]
	if sb == nil {
		sb = &strings.Builder{}
		w.output[doc] = sb
	}
	sb.WriteString(out + "\n")
}

func (w *walkthrough) shell(doc, line string) string {
	w.t.Helper()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", line)
	cmd.Dir, cmd.Env = w.dir, w.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			w.t.Fatalf("%s: command failed: %s\n%v\n%s", doc, line, err, out.String())
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Signal(syscall.SIGKILL)
		w.t.Fatalf("%s: command did not finish in 2 minutes: %s\n%s", doc, line, out.String())
	}
	return out.String()
}

// expect checks that a doc's commands printed what the doc promises.
func (w *walkthrough) expect(doc string, wants ...string) {
	all := ""
	if sb := w.output[doc]; sb != nil {
		all = sb.String()
	}
	for _, want := range wants {
		if !strings.Contains(all, want) {
			w.t.Errorf("%s: the commands' output lacks %q:\n%s", doc, want, all)
		}
	}
}
