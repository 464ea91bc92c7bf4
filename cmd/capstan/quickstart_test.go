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
// then every command of docs/quickstart.md. Each documented command must
// exit 0, and the outputs the docs promise must appear.
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the documented walk-throughs")
	}
	w := newWalkthrough(t)

	// make dev: the Makefile's own recipe, in the reader's folder.
	w.makeDev()
	// The README's "Try it", on the data folder `make dev` made.
	w.runDoc("README.md", "## Try it", "## Layout")
	w.expect("README.md", "<h1>Hello</h1>", `"status":"updated"`)
	w.stopServers()

	w.runDoc("docs/quickstart.md", "", "")
	w.expect("docs/quickstart.md", "Hello, version 1", "Hello, version 2", `"mode":"delta"`, `"status":"updated"`)
	w.stopServers()
	t.Logf("ran %d documented commands", w.ran)
}

// walkthrough runs documented shell commands in one folder, as a reader
// types them: servers (capstan dev|origin|edge, or a line ending in &) run
// in the background until the doc stops them (kill %1) or ends; `export`
// lines change the environment of the lines after them; every other line
// must exit 0. The docs' default addresses are mapped to free ports.
type walkthrough struct {
	t       *testing.T
	dir     string
	env     []string
	subst   []string // old, new pairs applied to every line
	api     string   // host:port of the API of `capstan dev`
	edge    string   // host:port of its edge
	gossip  string   // host:port of its gossip
	servers []*testutil.Proc
	output  map[string]*strings.Builder // per doc
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
	w := &walkthrough{t: t, dir: dir, output: map[string]*strings.Builder{}}
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
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
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
			w.ran++
			switch {
			case line == "kill %1":
				if len(w.servers) == 0 {
					t.Fatalf("%s: kill %%1 with no server running", doc)
				}
				w.servers[0].Stop(t)
				w.servers = w.servers[1:]
			case strings.HasPrefix(line, "export "):
				w.export(doc, line)
			case serverLine.MatchString(line):
				w.start(doc, w.withDevAddrs(strings.TrimSuffix(line, "&")))
			default:
				w.runLine(doc, w.withEdge(line))
			}
		}
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
	ready := regexp.MustCompile(`capstan dev: origin API|msg="gossip listening"|msg="joined the cluster"|msg="edge listening"`)
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
	w.servers = append(w.servers, p)
	return p
}

// stopServers stops what a doc left running, as its reader would before
// the next doc.
func (w *walkthrough) stopServers() {
	for i := len(w.servers) - 1; i >= 0; i-- {
		w.servers[i].Stop(w.t)
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
func (w *walkthrough) runLine(doc, line string) {
	out := w.shell(doc, line)
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
