package main

import (
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/testutil"
)

func TestCheckPprofAddr(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:6060", "localhost:0", "[::1]:6060", "127.1.2.3:0"} {
		if _, err := checkPprofAddr(ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{":6060", "0.0.0.0:6060", "10.0.0.5:6060", "[::]:6060", "example.com:6060", "6060"} {
		if _, err := checkPprofAddr(bad); err == nil {
			t.Errorf("%s accepted; profiles must stay on loopback", bad)
		}
	}
}

var pprofAddr = regexp.MustCompile(`msg="pprof listening" addr=(http://\S+/debug/pprof/)`)

// TestPprofListener runs `capstan dev --pprof` like an operator chasing a
// slow edge: the profile index answers on loopback, a heap profile comes
// back, and without the flag no profiling listener exists.
func TestPprofListener(t *testing.T) {
	p := testutil.Start(t, []string{"CAPSTAN_ADMIN_KEY=" + e2eAdminKey}, testutil.Binary(t),
		"dev", "--data", t.TempDir(), "--api", "127.0.0.1:0", "--edge", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--pprof", "127.0.0.1:0")
	p.WaitFor(t, 60*time.Second, testutil.DevAddrs)
	base := p.WaitFor(t, 10*time.Second, pprofAddr)[1]
	for _, path := range []string{"", "heap?debug=1", "goroutine?debug=1", "mutex?debug=1"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(b) == 0 {
			t.Errorf("GET %s%s: %s, %d bytes", base, path, resp.Status, len(b))
		}
		if path == "heap?debug=1" && !strings.Contains(string(b), "heap profile") {
			t.Errorf("heap profile: got %.200s", b)
		}
	}
	p.Stop(t)

	plain := testutil.Start(t, []string{"CAPSTAN_ADMIN_KEY=" + e2eAdminKey}, testutil.Binary(t),
		"dev", "--data", t.TempDir(), "--api", "127.0.0.1:0", "--edge", "127.0.0.1:0", "--gossip", "127.0.0.1:0")
	plain.WaitFor(t, 60*time.Second, testutil.DevAddrs)
	if strings.Contains(plain.Output(), "pprof") {
		t.Errorf("a profiling listener started without --pprof:\n%s", plain.Output())
	}
	plain.Stop(t)

	for _, sub := range []string{"edge", "origin"} {
		out, err := exec.Command(testutil.Binary(t), sub, "--data", t.TempDir(), "--pprof", "0.0.0.0:0").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "loopback only") {
			t.Errorf("capstan %s --pprof 0.0.0.0:0: err %v, output %s; want a refusal", sub, err, out)
		}
	}
}
