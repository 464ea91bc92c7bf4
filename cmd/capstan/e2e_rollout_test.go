package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/release"
)

// rolloutBinary returns the capstan binary shared by the end-to-end tests.
func rolloutBinary(t *testing.T, _ string) string { return testutil.Binary(t) }

// rolloutDev runs `capstan dev` on free ports and returns the origin and
// edge URLs; the process is stopped when the test ends.
func rolloutDev(t *testing.T, bin, data string, args ...string) (api, edgeURL string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"dev", "--data", data, "--api", "127.0.0.1:0", "--edge", "127.0.0.1:0", "--gossip", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "CAPSTAN_ADMIN_KEY="+e2eAdminKey)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	re := testutil.DevAddrs
	found := make(chan [2]string, 1)
	var logMu sync.Mutex
	var log bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- [2]string{m[1], m[2]}
			}
		}
	}()
	select {
	case u := <-found:
		return u[0], u[1]
	case <-time.After(30 * time.Second):
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("capstan dev did not start:\n%s", log.String())
	}
	return "", ""
}

// rolloutRun runs a client command, with --json when out is not nil (and
// decodes its output into out), and returns what it printed.
func rolloutRun(t *testing.T, bin, api string, wantOK bool, out any, args ...string) string {
	t.Helper()
	if out != nil {
		args = append(args, "--json")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "CAPSTAN_SERVER="+api, "CAPSTAN_API_KEY="+e2eAdminKey)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if (err == nil) != wantOK {
		t.Fatalf("capstan %s: err=%v, want ok=%v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, wantOK, stdout.String(), stderr.String())
	}
	if out != nil {
		if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
			t.Fatalf("capstan %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, stdout.String())
		}
	}
	return stdout.String() + stderr.String()
}

type rolloutDeviceResult struct {
	Status, From, To, Reason, Code, Reverted, Error string
}

type rolloutStats struct {
	Channels []struct {
		Channel  string
		Paused   bool
		Releases []struct {
			Version    string
			Installs   uint64
			Confirms   uint64
			Reverts    uint64
			Devices    uint64
			AutoPaused *struct{ FailureRate float64 } `json:"auto_paused"`
		}
	}
}

func TestRolloutE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the capstan binary")
	}
	tmp := t.TempDir()
	bin := rolloutBinary(t, tmp)
	api, edgeURL := rolloutDev(t, bin, filepath.Join(tmp, "data"), "--auto-pause-failure-rate", "50", "--auto-pause-min-devices", "100")
	const app = "com.example.e2e"
	mk := func(name, content string) string {
		dir := filepath.Join(tmp, name)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "index.html"), []byte(content), 0o644)
		return dir
	}
	www1, www2, www3, builtin := mk("www1", "v1"), mk("www2", "v2"), mk("www3", "v3"), mk("builtin", "shipped")
	dev := func(name string, wantOK bool, extra ...string) rolloutDeviceResult {
		var r rolloutDeviceResult
		args := append([]string{"device", "--insecure-no-verify", "--edge", edgeURL, "--app", app, "--dir", filepath.Join(tmp, name), "--device-id", name, "--builtin", builtin}, extra...)
		rolloutRun(t, bin, api, wantOK, &r, args...)
		return r
	}
	index := func(name string) string {
		b, err := os.ReadFile(filepath.Join(tmp, name, "current", "index.html"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	// Upload with --rollout, then finish the rollout.
	rolloutRun(t, bin, api, true, nil, "upload", "--app", app, "--version", "1.0.0", "--channel", "production", www1)
	if r := dev("phone-a", true); r.Status != "updated" || r.To != "1.0.0" {
		t.Fatalf("phone-a: %+v", r)
	}
	if r := dev("phone-a", true, "--confirm"); r.Status != "confirmed" {
		t.Fatalf("confirm: %+v", r)
	}
	rolloutRun(t, bin, api, true, nil, "upload", "--app", app, "--version", "1.1.0", "--channel", "production", "--rollout", "0", www2)
	if r := dev("phone-a", true); r.Status != "up-to-date" || r.To != "1.0.0" {
		t.Fatalf("phone-a at rollout 0: %+v", r)
	}
	var ch struct {
		RolloutBPS int  `json:"rollout_bps"`
		Paused     bool `json:"paused"`
	}
	rolloutRun(t, bin, api, true, &ch, "channel", "set", "--app", app, "--channel", "production", "--finish", "--auto-pause-failure-rate", "10", "--auto-pause-min-devices", "1", "--auto-pause-min-addresses", "1")
	if ch.RolloutBPS != 10000 || ch.Paused {
		t.Fatalf("after --finish: %+v", ch)
	}

	// phone-b installs 1.1.0 and confirms it; phone-a installs it and never
	// confirms: its next run past --confirm-timeout reverts it.
	if r := dev("phone-b", true); r.To != "1.1.0" {
		t.Fatalf("phone-b: %+v", r)
	}
	dev("phone-b", true, "--confirm")
	if r := dev("phone-a", true); r.Status != "updated" || r.To != "1.1.0" || index("phone-a") != "v2" {
		t.Fatalf("phone-a update: %+v", r)
	}
	r := dev("phone-a", true, "--confirm-timeout", "1ns")
	if r.Status != "reverted" || r.Reverted != "1.1.0" || r.To != "1.0.0" || index("phone-a") != "v1" {
		t.Fatalf("phone-a revert: %+v", r)
	}
	if r := dev("phone-a", true); r.Status != "up-to-date" || r.Code != "failed_on_device" {
		t.Fatalf("phone-a after revert: %+v", r)
	}

	// The revert (1 of 2 devices, over the channel's 10 %) auto-pauses the
	// rollout; capstan stats says so.
	var st rolloutStats
	deadline := time.Now().Add(30 * time.Second)
	for {
		rolloutRun(t, bin, api, true, &st, "stats", "--app", app)
		ok := false
		for _, c := range st.Channels {
			for _, rel := range c.Releases {
				if rel.Version == "1.1.0" && rel.Installs == 2 && rel.Reverts == 1 && rel.Confirms == 1 && rel.AutoPaused != nil && c.Paused {
					ok = true
				}
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats never showed 2 installs, 1 confirm, 1 revert and the auto-pause of 1.1.0: %+v", st)
		}
		time.Sleep(100 * time.Millisecond) // polling the real binary; the deadline bounds it
	}
	human := rolloutRun(t, bin, api, true, nil, "stats", "--app", app, "--channel", "production")
	if !strings.Contains(human, "AUTO-PAUSED") || !strings.Contains(human, "[rollout paused]") {
		t.Fatalf("capstan stats does not say the rollout auto-paused:\n%s", human)
	}
	t.Logf("capstan stats:\n%s", human)

	// Rollback: the channel goes back to 1.0.0 as a new record; phone-b,
	// on 1.1.0, moves back.
	rolloutRun(t, bin, api, true, nil, "rollback", "--app", app, "--channel", "production")
	if r := dev("phone-b", true); r.Status != "updated" || r.To != "1.0.0" || index("phone-b") != "v1" {
		t.Fatalf("phone-b after rollback: %+v", r)
	}
	dev("phone-b", true, "--confirm")
	// Rollback to the bundle shipped in the app.
	rolloutRun(t, bin, api, true, nil, "rollback", "--app", app, "--channel", "production", "--to", "builtin")
	if r := dev("phone-b", true); r.Status != "updated" || index("phone-b") != "shipped" {
		t.Fatalf("phone-b after rollback to builtin: %+v", r)
	}

	// Version rules: a release needing native 2.0.0 is not offered to 1.x.
	rolloutRun(t, bin, api, true, nil, "upload", "--app", app, "--version", "2.0.0", "--min-native", "2.0.0", "--channel", "production", www3)
	if r := dev("phone-c", true, "--native-version", "1.4.0"); r.Status != "up-to-date" || r.Code != "disable_auto_update_under_native" {
		t.Fatalf("phone-c on native 1.4.0: %+v", r)
	}
	if r := dev("phone-d", true, "--native-version", "2.0.0"); r.To != "2.0.0" || index("phone-d") != "v3" {
		t.Fatalf("phone-d on native 2.0.0: %+v", r)
	}

	// Channels: beta refuses devices until it allows selection; promote;
	// list.
	rolloutRun(t, bin, api, true, nil, "channel", "set", "--app", app, "--channel", "beta", "--version", "1.1.0", "--new-channel")
	if r := dev("phone-e", false, "--channel", "beta"); !strings.Contains(r.Error, "does not let devices choose it") {
		t.Fatalf("phone-e on beta: %+v", r)
	}
	rolloutRun(t, bin, api, true, nil, "channel", "set", "--app", app, "--channel", "beta", "--device-select")
	if r := dev("phone-e", true, "--channel", "beta"); r.To != "1.1.0" {
		t.Fatalf("phone-e on selectable beta: %+v", r)
	}
	rolloutRun(t, bin, api, true, nil, "channel", "promote", "--app", app, "--from", "production", "--to", "beta")
	var list struct {
		Channels []struct {
			Channel string
			Release struct{ Version string }
		}
	}
	rolloutRun(t, bin, api, true, &list, "channel", "list", "--app", app)
	if len(list.Channels) != 2 {
		t.Fatalf("channel list: %+v", list)
	}
	for _, c := range list.Channels {
		if c.Release.Version != "2.0.0" {
			t.Fatalf("channel %s serves %s after promote, want 2.0.0", c.Channel, c.Release.Version)
		}
	}

	// docs/ci.md's "widen" after a promote at 100 %: beta at 50 % keeps
	// 1.1.0 for the devices outside, and the Go device outside gets it.
	var beta struct {
		Release struct{ ID string }
		Stable  *struct{ Version string }
	}
	rolloutRun(t, bin, api, true, &beta, "channel", "set", "--app", app, "--channel", "beta", "--rollout", "50")
	if beta.Stable == nil || beta.Stable.Version != "1.1.0" {
		t.Fatalf("beta at 50%% after a promote: stable %+v, want 1.1.0", beta.Stable)
	}
	rel, err := release.ParseHash(beta.Release.ID)
	if err != nil {
		t.Fatal(err)
	}
	outside := ""
	for i := 0; outside == ""; i++ {
		if id := fmt.Sprintf("phone-f%d", i); !release.InRollout(id, rel, 5000) {
			outside = id
		}
	}
	if r := dev(outside, true, "--channel", "beta"); r.Status != "updated" || r.To != "1.1.0" || index(outside) != "v2" {
		t.Fatalf("a device outside beta's 50%%: %+v, want 1.1.0 installed", r)
	}
}
