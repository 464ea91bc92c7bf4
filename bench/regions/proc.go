package regions

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"sync"
	"time"
)

// proc is a capstan process of the fleet, with its output kept for
// matching and for error messages.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex // guards out
	out  bytes.Buffer
	done chan struct{}
}

type procWriter struct{ p *proc }

func (w procWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	// Keep the first 1 MiB: enough to find the start-up lines and the
	// reason of a failure, bounded for long runs.
	if room := 1<<20 - w.p.out.Len(); room > 0 {
		w.p.out.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}

func startProc(cmd *exec.Cmd) (*proc, error) {
	p := &proc{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = procWriter{p}, procWriter{p}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("regions: start %s: %w", cmd.Path, err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitFor polls the output until it matches re, the process exits or
// timeout passes.
func (p *proc) waitFor(ctx context.Context, timeout time.Duration, re *regexp.Regexp) ([]string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := re.FindStringSubmatch(p.output()); m != nil {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.done:
			return nil, fmt.Errorf("regions: %v exited before printing %q:\n%s", p.cmd.Args, re, p.output())
		case <-deadline.C:
			return nil, fmt.Errorf("regions: %v did not print %q within %s:\n%s", p.cmd.Args, re, timeout, p.output())
		case <-tick.C:
		}
	}
}

// kill ends the process at once (SIGKILL, like a crash) and waits.
func (p *proc) kill() {
	if p == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
}
