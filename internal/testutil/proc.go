package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a capstan process started by a test. It is killed when the test
// ends if the test has not stopped it.
type Proc struct {
	Cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been waited for
	mu     sync.Mutex    // guards out
	out    bytes.Buffer
}

type lockedWriter struct{ p *Proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// Output returns everything the process printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Start runs bin with args and extra environment variables.
func Start(t testing.TB, env []string, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout = lockedWriter{p}
	p.Cmd.Stderr = lockedWriter{p}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() { p.Cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("output of %v:\n%s", args, p.Output())
		}
	})
	return p
}

// WaitFor waits until the output matches re and returns the submatches.
func (p *Proc) WaitFor(t testing.TB, timeout time.Duration, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	Eventually(t, timeout, "output matching "+re.String(), func() bool {
		m = re.FindStringSubmatch(p.Output())
		return m != nil
	})
	return m
}

// Exited is closed once the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Stop sends SIGTERM and waits for the process to exit.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		p.Kill()
		t.Fatalf("process did not stop within 20s after SIGTERM")
	}
}

// Kill sends SIGKILL and waits for the process to exit. It is safe to call
// more than once and from several goroutines.
func (p *Proc) Kill() {
	p.Cmd.Process.Kill()
	<-p.exited
}

// DevAddrs matches the line `capstan dev` prints once both servers listen.
var DevAddrs = regexp.MustCompile(`capstan dev: origin API (http://\S+), edge (http://\S+), gossip (\S+) `)
