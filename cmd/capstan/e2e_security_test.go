package main

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/gossip"
	"github.com/capstan-ota/capstan/gossip/gossiptest"
	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/release"
)

// uploadSmall uploads a small generated bundle as version to the
// production channel of com.example.swagger.
func uploadSmall(t *testing.T, api, version string, i int) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "b.zip")
	if err := os.WriteFile(p, smallBundle(i), 0o644); err != nil {
		t.Fatal(err)
	}
	runCLI(t, api, true, "upload", "--app", "com.example.swagger", "--version", version, "--channel", "production", p)
}

// edgeHealth returns an edge's /healthz status code and body.
func edgeHealth(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatalf("healthz: %v", err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// TestEdgeNeedsClusterKey: the origin makes the cluster key file on first
// start and says where it is; an edge without it refuses to start (exit 2,
// one line saying what to give); with --insecure-gossip it starts and says
// so in its log and in /healthz.
func TestEdgeNeedsClusterKey(t *testing.T) {
	o := startFleetOrigin(t)
	if !strings.Contains(o.proc.Output(), "A new cluster key file was made: "+o.key) {
		t.Fatalf("origin did not say where the cluster key file is:\n%s", o.proc.Output())
	}
	if fi, err := os.Stat(o.key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cluster key file: %v %v (want mode 0600)", fi, err)
	}

	cmd := exec.Command(testutil.Binary(t), "edge", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--join", o.seed)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err == nil || !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "--cluster-key") {
		t.Fatalf("edge without cluster key: err %v, output:\n%s", err, out)
	}

	insecure := testutil.Start(t, nil, testutil.Binary(t), "edge", "--data", t.TempDir(), "--http", "127.0.0.1:0",
		"--gossip", "127.0.0.1:0", "--origin-key", filepath.Join(o.data, "origin.key.pub"), "--insecure-gossip")
	m := insecure.WaitFor(t, 30*time.Second, edgeAddrs)
	if !strings.Contains(insecure.Output(), "NOT authenticated") {
		t.Errorf("an insecure edge did not say so at start:\n%s", insecure.Output())
	}
	_, body := edgeHealth(t, m[1])
	if body["insecure_gossip"] != true {
		t.Errorf("/healthz of an insecure edge: %v", body)
	}
}

// TestStrangerCannotJoin is finding 1 of issue 16: a process on the
// network joins the memberlist cluster announcing role origin with its own
// URL. In the documented setup it must not get in: the edge's /v1/edges
// does not list it, and device events (with the events token) go to the
// real origin, never to the stranger.
func TestStrangerCannotJoin(t *testing.T) {
	var stolen atomic.Int64
	rogue := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/events" {
			stolen.Add(1)
		}
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"accepted":1}`)
	}))
	defer rogue.Close()

	o := startFleetOrigin(t)
	e := startFleetEdge(t, o)
	uploadSmall(t, o.api, "1.0.0", 1)
	testutil.Eventually(t, 10*time.Second, "edge serves 1.0.0", func() bool { return checkVersion(e.url) == "1.0.0" })

	for _, role := range []gossip.Role{gossip.RoleOrigin, gossip.RoleEdge} {
		cfg := gossiptest.Config(role, o.seed)
		cfg.Meta.HTTP = rogue.URL
		cfg.JoinTimeout = time.Second
		if n, err := gossip.New(cfg); err == nil {
			defer n.Shutdown()
			t.Errorf("a stranger without the cluster key joined as %s", role)
		}
	}

	resp, err := http.Get(e.url + "/v1/edges")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), rogue.URL) {
		t.Errorf("/v1/edges lists the stranger: %s", b)
	}
	postFailures(t, e.url, "1.0.0", 3)
	testutil.Eventually(t, 15*time.Second, "events to reach the real origin", func() bool {
		var rep struct {
			Channels []struct {
				Releases []struct {
					Version  string `json:"version"`
					Failures int    `json:"failures"`
				} `json:"releases"`
			} `json:"channels"`
		}
		out := runCLI(t, o.api, true, "stats", "--app", "com.example.swagger", "--json")
		json.Unmarshal([]byte(out), &rep)
		for _, c := range rep.Channels {
			for _, r := range c.Releases {
				if r.Version == "1.0.0" && r.Failures == 3 {
					return true
				}
			}
		}
		return false
	})
	if n := stolen.Load(); n != 0 {
		t.Errorf("the stranger received %d event batches", n)
	}
}

// postFailures posts n fail events of distinct devices about version of
// com.example.swagger/production to an edge.
func postFailures(t *testing.T, edgeURL, version string, n int) {
	t.Helper()
	id := releaseID(t, edgeURL, version)
	var evs []string
	for i := range n {
		evs = append(evs, fmt.Sprintf(`{"action":"fail","app":"com.example.swagger","channel":"production","device":"dev-%d","release":%q,"version":%q,"error":"crash","cause":"install"}`, i, id, version))
	}
	resp, err := http.Post(edgeURL+"/v1/events", "application/json", strings.NewReader("["+strings.Join(evs, ",")+"]"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), fmt.Sprintf(`"accepted":%d`, n)) {
		t.Fatalf("post events: %d %s", resp.StatusCode, b)
	}
}

// releaseID returns the ID of the release the edge offers a fresh device,
// which must be version.
func releaseID(t *testing.T, edgeURL, version string) string {
	t.Helper()
	resp, err := http.Get(edgeURL + "/v1/check?app=com.example.swagger&channel=production&device=probe")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		Channel *struct {
			Signed json.RawMessage `json:"signed"`
		} `json:"channel"`
	}
	json.NewDecoder(resp.Body).Decode(&ans)
	var ch struct {
		Release struct {
			Version string `json:"version"`
			ID      string `json:"id"`
		} `json:"release"`
	}
	if ans.Channel == nil || json.Unmarshal(ans.Channel.Signed, &ch) != nil || ch.Release.Version != version {
		t.Fatalf("edge does not serve %s", version)
	}
	return ch.Release.ID
}

// TestClusterKeyRotation rotates the cluster key of a running origin and
// two edges (processes) in the three steps docs/operations.md gives,
// editing each node's key file and sending SIGHUP: after every step a
// channel change reaches both edges by gossip. At the end an edge with the
// old key file cannot join.
func TestClusterKeyRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("fleet of processes")
	}
	o := startFleetOrigin(t)
	old, err := os.ReadFile(o.key)
	if err != nil {
		t.Fatal(err)
	}
	oldKF, err := gossip.ParseKeyFile(old)
	if err != nil {
		t.Fatal(err)
	}
	files := []string{o.key}
	procs := []*testutil.Proc{o.proc}
	var edges []fleetEdge
	for i := range 2 {
		f := filepath.Join(t.TempDir(), fmt.Sprintf("edge%d.key", i))
		os.WriteFile(f, old, 0o600)
		e := startFleetEdge(t, fleetOrigin{seed: o.seed, key: f})
		edges = append(edges, e)
		files = append(files, f)
		procs = append(procs, e.proc)
	}
	version, reloads := 0, 0
	spread := func(step string) {
		t.Helper()
		version++
		v := fmt.Sprintf("1.0.%d", version)
		uploadSmall(t, o.api, v, version)
		for i, e := range edges {
			testutil.Eventually(t, 15*time.Second, fmt.Sprintf("%s: edge %d to serve %s by gossip", step, i, v), func() bool { return checkVersion(e.url) == v })
		}
	}
	spread("before")
	newKey := gossip.NewClusterKey()
	write := func(keys ...[]byte) {
		kf := &gossip.KeyFile{Keys: keys, OriginKeys: oldKF.OriginKeys}
		b, err := kf.Encode()
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range files {
			if err := os.WriteFile(f, b, 0o600); err != nil {
				t.Fatal(err)
			}
			procs[i].Cmd.Process.Signal(syscall.SIGHUP)
		}
		reloaded := regexp.MustCompile(fmt.Sprintf(`(?s)(cluster keys reloaded.*){%d}`, reloads+1))
		for _, p := range procs {
			p.WaitFor(t, 10*time.Second, reloaded)
		}
		reloads++
	}
	write(oldKF.Keys[0], newKey)
	spread("step 1, both keys accepted")
	write(newKey, oldKF.Keys[0])
	spread("step 2, sending with the new key")
	write(newKey)
	spread("step 3, old key dropped")

	stale := filepath.Join(t.TempDir(), "stale.key")
	os.WriteFile(stale, old, 0o600)
	p := testutil.Start(t, nil, testutil.Binary(t), "edge", "--data", t.TempDir(), "--http", "127.0.0.1:0",
		"--gossip", "127.0.0.1:0", "--join", o.seed, "--cluster-key", stale)
	p.WaitFor(t, 30*time.Second, regexp.MustCompile(`cannot join the cluster yet`))
	if strings.Contains(p.Output(), "joined the cluster") {
		t.Fatal("an edge with the retired cluster key joined")
	}
}

// TestMemberCannotPoseAsOrigin: a member that holds the cluster key (a
// compromised edge host, say) joins announcing role origin with its own
// URL. Edges do not believe it: device events (with the events token) and
// patch pulls go only to the origin whose signed statement names its URL;
// devices still install the real patch.
func TestMemberCannotPoseAsOrigin(t *testing.T) {
	var events, patches atomic.Int64
	rogue := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/events":
			events.Add(1)
		case strings.HasPrefix(r.URL.Path, "/v1/patches/"):
			patches.Add(1)
		}
		io.WriteString(w, "garbage")
	}))
	defer rogue.Close()
	o := startFleetOrigin(t)
	e := startFleetEdge(t, o)
	uploadSmall(t, o.api, "1.0.0", 1)
	testutil.Eventually(t, 10*time.Second, "edge serves 1.0.0", func() bool { return checkVersion(e.url) == "1.0.0" })
	phone := filepath.Join(t.TempDir(), "phone")
	if r := runDevice(t, e.url, phone); r.Status != "updated" {
		t.Fatalf("first install: %+v", r)
	}

	kf, err := gossip.ReadKeyFile(o.key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := gossiptest.Config(gossip.RoleOrigin, o.seed)
	cfg.Meta.HTTP = rogue.URL
	cfg.SecretKey = kf.Keys[0]
	gossiptest.Start(t, cfg)
	resp, err := http.Get(e.url + "/v1/edges")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	uploadSmall(t, o.api, "1.0.1", 2)
	testutil.Eventually(t, 10*time.Second, "edge serves 1.0.1", func() bool { return checkVersion(e.url) == "1.0.1" })
	if r := runDevice(t, e.url, phone); r.Status != "updated" || r.Mode != "delta" {
		t.Fatalf("patch install with a rogue origin in the cluster: %+v", r)
	}
	postFailures(t, e.url, "1.0.1", 2)
	testutil.Eventually(t, 15*time.Second, "events at the real origin", func() bool {
		return strings.Contains(runCLI(t, o.api, true, "stats", "--app", "com.example.swagger", "--json"), `"failures":2`)
	})
	if events.Load() != 0 || patches.Load() != 0 {
		t.Fatalf("the member posing as an origin got %d event batches and %d patch requests", events.Load(), patches.Load())
	}
	if !strings.Contains(e.proc.Output(), "cannot prove it") {
		t.Errorf("the edge did not log the unproven origin:\n%s", e.proc.Output())
	}
}

// gauge reads one unlabelled value from a node's /metrics.
func gauge(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	var v float64
	fmt.Sscan(string(m[1]), &v)
	return v
}

// TestForgedRecordsRefusedEverywhere is finding 2 of issue 16: a member
// (here with the cluster key) gossips a forged record with seq 2^62 for a
// real channel, a forged expired record for a made-up app with seq = max,
// and hundreds of channels of one app. Neither the origin's own node nor
// an edge stores any of them: the origin's next real change reaches the
// edge by gossip at once, and a brand-new edge is healthy.
func TestForgedRecordsRefusedEverywhere(t *testing.T) {
	o := startFleetOrigin(t)
	e := startFleetEdge(t, o)
	uploadSmall(t, o.api, "1.0.0", 1)
	testutil.Eventually(t, 10*time.Second, "edge serves 1.0.0", func() bool { return checkVersion(e.url) == "1.0.0" })

	kf, err := gossip.ReadKeyFile(o.key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := gossiptest.Config(gossip.RoleEdge, o.seed)
	cfg.SecretKey = kf.Keys[0]
	cfg.MaxSeqAhead = -1 // the forger's own node takes anything
	rogue := gossiptest.Start(t, cfg)
	forger, _ := release.GenerateKey()
	now := time.Now().UTC()
	forge := func(app, channel string, seq uint64, issued time.Time) {
		c := release.Channel{App: app, Channel: channel, Seq: seq, RolloutBPS: release.FullRollout,
			Release: release.Ref{Version: "9.9.9", ID: release.Sum([]byte(app + channel))}, Issued: issued, Expires: issued.Add(time.Hour)}
		b, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := rogue.Publish(release.Seal(b, forger)); err != nil {
			t.Fatalf("forger: %v", err)
		}
	}
	forge("com.example.swagger", "production", 1<<62, now)
	forge("com.made.up", "x", 1<<64-1, now.Add(-48*time.Hour))
	for i := range release.MaxChannelsPerApp {
		forge("com.flood", fmt.Sprintf("c%d", i), 1, now)
	}
	const forged = 2 + release.MaxChannelsPerApp
	for name, base := range map[string]string{"origin": o.api, "edge": e.url} {
		testutil.Eventually(t, 30*time.Second, name+" to refuse every forged record", func() bool {
			return gauge(t, base, "capstan_gossip_records_refused_total") >= forged
		})
		if n := gauge(t, base, "capstan_gossip_records"); n != 1 {
			t.Errorf("%s's gossip node holds %v records, want the 1 real one", name, n)
		}
	}
	uploadSmall(t, o.api, "1.0.1", 2)
	testutil.Eventually(t, 10*time.Second, "the origin's next change to reach the edge by gossip", func() bool { return checkVersion(e.url) == "1.0.1" })
	if strings.Contains(o.proc.Output(), "publish channel record") {
		t.Errorf("the origin could not publish its own record:\n%s", o.proc.Output())
	}
	fresh := startFleetEdge(t, o)
	testutil.Eventually(t, 10*time.Second, "a new edge serves 1.0.1", func() bool { return checkVersion(fresh.url) == "1.0.1" })
	if code, body := edgeHealth(t, fresh.url); code != 200 || body["status"] != "ok" {
		t.Fatalf("a new edge's health: %d %v", code, body)
	}
}

// postFailuresFrom posts one revert per device (ids prefix-0…) about
// version to an edge from the loopback address src.
func postFailuresFrom(t *testing.T, edgeURL, src, prefix, version string, n int) {
	t.Helper()
	id := releaseID(t, edgeURL, version)
	var evs []string
	for i := range n {
		evs = append(evs, fmt.Sprintf(`{"action":"revert","app":"com.example.swagger","channel":"production","device":"%s-%d","release":%q,"version":%q}`, prefix, i, id, version))
	}
	c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}}
	resp, err := c.Post(edgeURL+"/v1/events", "application/json", strings.NewReader("["+strings.Join(evs, ",")+"]"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("post events: %s", resp.Status)
	}
}

// channelPaused reads whether production is paused, from the origin.
func channelPaused(t *testing.T, api string) bool {
	out := runCLI(t, api, true, "stats", "--app", "com.example.swagger", "--channel", "production", "--json")
	var rep struct {
		Channels []struct {
			Paused bool `json:"paused"`
		} `json:"channels"`
	}
	json.Unmarshal([]byte(out), &rep)
	return len(rep.Channels) == 1 && rep.Channels[0].Paused
}

// TestFakeEventsCannotPause is finding 4 of issue 16 against processes:
// twenty fake revert events in one POST to an edge paused a 100 % rollout,
// after which a new device got nothing. Now failures from one address do
// not pause it; failures of many devices from many addresses do, and then
// a device on the paused release keeps it while a new device gets the
// release the channel served before.
func TestFakeEventsCannotPause(t *testing.T) {
	o := startFleetOrigin(t)
	e := startFleetEdge(t, o)
	uploadSmall(t, o.api, "1.0.0", 1)
	uploadSmall(t, o.api, "1.0.1", 2)
	testutil.Eventually(t, 10*time.Second, "edge serves 1.0.1", func() bool { return checkVersion(e.url) == "1.0.1" })

	postFailuresFrom(t, e.url, "127.0.0.1", "fake", "1.0.1", 20)
	testutil.Eventually(t, 15*time.Second, "the fake events at the origin", func() bool {
		return strings.Contains(runCLI(t, o.api, true, "stats", "--app", "com.example.swagger", "--json"), `"reverts":20`)
	})
	if channelPaused(t, o.api) {
		t.Fatal("twenty made-up devices on one address paused the rollout")
	}
	for i := range 10 {
		postFailuresFrom(t, e.url, fmt.Sprintf("127.0.0.%d", 2+i), fmt.Sprintf("real%d", i), "1.0.1", 2)
	}
	testutil.Eventually(t, 15*time.Second, "the rollout to pause itself", func() bool { return channelPaused(t, o.api) })
	// The paused record names 1.0.0 for devices not on 1.0.1: a fresh
	// device installs it; one on 1.0.1 stays there.
	testutil.Eventually(t, 10*time.Second, "the paused record at the edge", func() bool {
		c := edgeRecord(t, e.url)
		return c != nil && c.Paused && c.Stable != nil && c.Stable.Version == "1.0.0"
	})
	fresh := filepath.Join(t.TempDir(), "fresh")
	if r := runDevice(t, e.url, fresh); r.Status != "updated" || r.To != "1.0.0" {
		t.Fatalf("a new device after the pause: %+v, want 1.0.0", r)
	}
	c := edgeRecord(t, e.url)
	if got, _ := c.Target("on-1.0.1", c.Release.ID); got.Version != "1.0.1" {
		t.Fatalf("a device on the paused release is offered %s", got.Version)
	}
}

// edgeRecord returns the production record an edge serves.
func edgeRecord(t *testing.T, edgeURL string) *release.Channel {
	t.Helper()
	resp, err := http.Get(edgeURL + "/v1/check?app=com.example.swagger&channel=production&device=probe")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var ans struct {
		Channel *release.Envelope `json:"channel"`
	}
	if json.NewDecoder(resp.Body).Decode(&ans) != nil || ans.Channel == nil {
		return nil
	}
	c, _ := ans.Channel.Channel()
	return c
}

// TestDeviceSafeDefaults is finding 6 of issue 16: `capstan device`
// without --public-key verified nothing and said nothing. It now refuses
// (exit 2) unless --insecure-no-verify, which its JSON reports; keys given
// once are pinned, so a later run without --public-key still verifies.
// And an origin refuses a CAPSTAN_ADMIN_KEY shorter than 128 bits.
func TestDeviceSafeDefaults(t *testing.T) {
	data := t.TempDir()
	_, api, edgeURL := startDev(t, data)
	uploadSmall(t, api, "1.0.0", 1)
	phone := filepath.Join(t.TempDir(), "phone")
	dev := func(extra ...string) (string, int) {
		cmd := exec.Command(testutil.Binary(t), append([]string{"device", "--edge", edgeURL, "--app", "com.example.swagger", "--channel", "production", "--dir", phone, "--json"}, extra...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return string(out), code
	}
	if out, code := dev(); code != 2 || !strings.Contains(out, "--insecure-no-verify") || strings.Contains(out, `"status":"updated"`) {
		t.Fatalf("a device with no key: exit %d\n%s", code, out)
	}
	if out, code := dev("--insecure-no-verify"); code != 0 || !strings.Contains(out, `"insecure_no_verify":true`) {
		t.Fatalf("--insecure-no-verify: exit %d\n%s", code, out)
	}

	// A device that pinned the origin key (and a release key the uploads
	// are not signed with) refuses the unsigned 1.0.1, also when run
	// without --public-key later.
	rel, _ := release.GenerateKey()
	relPub, _ := release.EncodePublicKey(rel.Public().(ed25519.PublicKey), release.RoleRelease)
	org, err := os.ReadFile(filepath.Join(data, "origin", "origin.key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	trust := filepath.Join(t.TempDir(), "trust.pem")
	os.WriteFile(trust, append(relPub, org...), 0o644)
	phone = filepath.Join(t.TempDir(), "pinned")
	if out, _ := dev("--public-key", trust, "--check"); !strings.Contains(out, `"status"`) || strings.Contains(out, "insecure") {
		t.Fatalf("a check with keys:\n%s", out)
	}
	uploadSmall(t, api, "1.0.1", 2)
	if out, code := dev(); code != 1 || !strings.Contains(out, "not signed by a trusted key") {
		t.Fatalf("a run without --public-key after keys were pinned: exit %d\n%s", code, out)
	}

	// The admin key: 13 characters are refused with a sentence, exit 2.
	cmd := exec.Command(testutil.Binary(t), "origin", "--data", t.TempDir(), "--api", "127.0.0.1:0", "--gossip", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "CAPSTAN_ADMIN_KEY=dev-admin-key")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "at least 32") {
		t.Fatalf("a 13-character admin key: %v\n%s", err, out)
	}
}
