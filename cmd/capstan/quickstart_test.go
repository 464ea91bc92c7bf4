package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/testutil"
)

// TestQuickstart runs every command of docs/quickstart.md in order, as a
// new user would, in a fresh folder. `capstan dev` is started on free ports
// and the doc's default URLs are rewritten to them.
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the quick start")
	}
	doc, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "docs", "quickstart.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 5 {
		t.Fatalf("quick start has only %d shell blocks", len(blocks))
	}
	work := t.TempDir()
	binDir := filepath.Dir(testutil.Binary(t))
	env := append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"))
	var api, edgeURL string
	var outputs []string
	ran := 0
	for _, b := range blocks {
		for _, line := range strings.Split(strings.TrimSpace(b[1]), "\n") {
			line = strings.TrimSpace(line)
			switch {
			case line == "" || strings.HasPrefix(line, "#"):
				continue
			case strings.HasPrefix(line, "go build"):
				continue // the test has built the binary already
			case strings.Contains(line, "capstan dev ") || strings.HasSuffix(line, "capstan dev"):
				p := testutil.Start(t, []string{"CAPSTAN_ADMIN_KEY=dev-admin-key"}, testutil.Binary(t),
					"dev", "--data", filepath.Join(work, "capstan-data"), "--api", "127.0.0.1:0", "--edge", "127.0.0.1:0", "--gossip", "127.0.0.1:0")
				m := p.WaitFor(t, 60*time.Second, testutil.DevAddrs)
				api, edgeURL = m[1], m[2]
				ran++
				continue
			}
			line = strings.ReplaceAll(line, "http://127.0.0.1:7070", api)
			line = strings.ReplaceAll(line, "http://127.0.0.1:7080", edgeURL)
			if strings.HasPrefix(line, "export ") {
				env = append(env, strings.Fields(strings.TrimPrefix(line, "export "))...)
				ran++
				continue
			}
			cmd := exec.Command("bash", "-euo", "pipefail", "-c", line)
			cmd.Dir, cmd.Env = work, env
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				t.Fatalf("quick start command failed: %s\n%v\n%s", line, err, out.String())
			}
			outputs = append(outputs, out.String())
			ran++
		}
	}
	all := strings.Join(outputs, "\n")
	for _, want := range []string{"Hello, version 1", "Hello, version 2", `"mode":"delta"`, `"status":"updated"`} {
		if !strings.Contains(all, want) {
			t.Errorf("quick start output lacks %q:\n%s", want, all)
		}
	}
	t.Logf("ran %d quick start commands", ran)
}
