package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/internal/testutil"
)

// TestBenchDeltaScript runs scripts/bench-delta.sh (make bench-delta) on
// tiny pairs: one found in a fixtures folder (two zips whose versions sort
// only numerically), one given in BENCH_PAIRS. Each must get a row in the
// three tables, with the device's bytes measured through capstan dev and
// below what a file-level update sends.
func TestBenchDeltaScript(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the benchmark script and the binary")
	}
	for _, tool := range []string{"bash", "bsdiff", "zstd", "xdelta3", "jq", "unzip", "/usr/bin/time"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is missing (.ci/run installs it): %v", tool, err)
		}
	}
	dir := t.TempDir()
	fx := filepath.Join(dir, "fixtures", "tiny")
	if err := os.MkdirAll(fx, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, version := range map[string]string{"www-1.9.0.zip": "1.9.0", "www-1.10.0.zip": "1.10.1"} {
		if err := os.WriteFile(filepath.Join(fx, name), slowLinkBundle(t, version), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	extraA, extraB := filepath.Join(dir, "x-a.zip"), filepath.Join(dir, "x-b.zip")
	os.WriteFile(extraA, slowLinkBundle(t, "2.0.0"), 0o644)
	os.WriteFile(extraB, slowLinkBundle(t, "2.0.1"), 0o644)

	cmd := exec.Command("bash", "scripts/bench-delta.sh")
	cmd.Dir = testutil.RepoRoot(t)
	cmd.Env = append(os.Environ(), "CAPSTAN_BIN="+testutil.Binary(t), "CAPSTAN_FIXTURES="+filepath.Join(dir, "fixtures"),
		"BENCH_RUNS=1", "BENCH_PAIRS=extra="+extraA+":"+extraB, "BENCH_LINK_ARGS=--link-down 50 --link-rtt 10ms",
		"TMPDIR="+dir)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("bench-delta.sh: %v\n%s\n%s", err, out, stderr)
	}
	text := string(out)
	for _, h := range []string{"#### What a device downloads", "#### What it costs to build", "#### Update time on a slow link"} {
		if !strings.Contains(text, h) {
			t.Errorf("output lacks %q:\n%s", h, text)
		}
	}
	for _, label := range []string{"tiny 1.9.0 → 1.10.0", "extra"} {
		rows := regexp.MustCompile(`(?m)^\| `+regexp.QuoteMeta(label)+` \|.*$`).FindAllString(text, -1)
		if len(rows) != 3 {
			t.Errorf("pair %q has %d rows, want one per table:\n%s", label, len(rows), text)
			continue
		}
		// | pair | files | new or changed | **device** | patch | bsdiff | zstd | xdelta3 | gzip each | Capgo | ratio |
		cells := strings.Split(rows[0], "|")
		n := func(i int) int {
			v, err := strconv.Atoi(strings.NewReplacer(",", "", "*", "", " ", "").Replace(cells[i]))
			if err != nil {
				t.Fatalf("column %d of %q: %v", i, rows[0], err)
			}
			return v
		}
		if n(2) != 2 || n(3) != 1 {
			t.Errorf("%s: %d files, %d changed; want 2 and 1: %s", label, n(2), n(3), rows[0])
		}
		if dev, capgo := n(4), n(10); dev <= 0 || dev*10 > capgo || capgo < 200<<10 {
			t.Errorf("%s: device %d B, Capgo manifest mode %d B (a 200 KB file changed by one byte): %s", label, dev, capgo, rows[0])
		}
		if !strings.HasSuffix(strings.TrimSpace(cells[11]), "×") {
			t.Errorf("%s: no ratio in %s", label, rows[0])
		}
	}
}
