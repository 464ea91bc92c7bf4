package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/release"
)

var (
	originAddrs = regexp.MustCompile(`origin API listening.*addr=(http://\S+)[\s\S]*gossip listening.*addr=(\S+)`)
	edgeAddrs   = regexp.MustCompile(`edge listening.*addr=(http://\S+)`)
	edgeJoined  = regexp.MustCompile(`joined the cluster`)
)

type fleetEdge struct {
	proc *testutil.Proc
	url  string
}

// fleetOrigin is an origin process started as docs/operations.md shows.
type fleetOrigin struct {
	proc *testutil.Proc
	api  string // API URL
	seed string // gossip address edges join
	data string // data folder
	key  string // the cluster key file it made on first start
}

func startFleetOrigin(t *testing.T, extra ...string) fleetOrigin {
	t.Helper()
	data := t.TempDir()
	args := append([]string{"origin", "--data", data, "--api", "127.0.0.1:0", "--gossip", "127.0.0.1:0"}, extra...)
	p := testutil.Start(t, []string{"CAPSTAN_ADMIN_KEY=" + e2eAdminKey}, testutil.Binary(t), args...)
	m := p.WaitFor(t, 30*time.Second, originAddrs)
	return fleetOrigin{proc: p, api: m[1], seed: m[2], data: data, key: filepath.Join(data, "cluster.key")}
}

// startFleetEdge starts an edge that joins through seed with the origin's
// cluster key file, and waits until it has joined.
func startFleetEdge(t *testing.T, o fleetOrigin, extra ...string) fleetEdge {
	t.Helper()
	args := append([]string{"edge", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--gossip", "127.0.0.1:0",
		"--join", o.seed, "--cluster-key", o.key, "--cache-size", "64MiB"}, extra...)
	p := testutil.Start(t, nil, testutil.Binary(t), args...)
	m := p.WaitFor(t, 30*time.Second, edgeAddrs)
	p.WaitFor(t, 30*time.Second, edgeJoined)
	return fleetEdge{proc: p, url: m[1]}
}

// checkVersion returns the version an edge offers a fresh device, or "".
func checkVersion(url string) string {
	resp, err := http.Get(url + "/v1/check?app=com.example.swagger&channel=production&device=probe")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ans struct {
		Channel *release.Envelope `json:"channel"`
	}
	if json.Unmarshal(b, &ans) != nil || ans.Channel == nil {
		return ""
	}
	c, err := ans.Channel.Channel()
	if err != nil {
		return ""
	}
	return c.Release.Version
}

// TestFleet runs one origin and five edges as processes: a release reaches
// every edge by gossip, edges keep serving with the origin stopped, and a
// new edge joins and serves.
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("fleet of processes")
	}
	z1 := testutil.Fixture(t, "swagger-ui/www-5.34.0.zip")
	z2 := testutil.Fixture(t, "swagger-ui/www-5.34.1.zip")
	o := startFleetOrigin(t)
	op, api := o.proc, o.api

	var edges []fleetEdge
	for i := 0; i < 5; i++ {
		edges = append(edges, startFleetEdge(t, o))
	}
	runCLI(t, api, true, "upload", "--app", "com.example.swagger", "--version", "5.34.0", "--channel", "production", z1)
	for i, e := range edges {
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("edge %d to serve 5.34.0", i), func() bool { return checkVersion(e.url) == "5.34.0" })
	}
	// A device installs through edge 0, warming its cache.
	phone := filepath.Join(t.TempDir(), "phone")
	if r := runDevice(t, edges[0].url, phone); r.Status != "updated" {
		t.Fatalf("device: %+v", r)
	}
	runCLI(t, api, true, "upload", "--app", "com.example.swagger", "--version", "5.34.1", "--channel", "production", z2)
	for i, e := range edges {
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("edge %d to serve 5.34.1", i), func() bool { return checkVersion(e.url) == "5.34.1" })
	}

	// Origin away: every edge still answers checks from memory; an edge
	// that holds the bundle still installs it; a miss is a fast 503.
	op.Stop(t)
	for i, e := range edges {
		if v := checkVersion(e.url); v != "5.34.1" {
			t.Fatalf("edge %d with the origin stopped serves %q", i, v)
		}
	}
	r := runDeviceExpect(t, false, edges[1].url, filepath.Join(t.TempDir(), "cold"))
	if r.Status != "failed" || !strings.Contains(r.Error, "503") {
		t.Fatalf("cold edge with origin away should fail clearly with 503, got %+v", r)
	}
	// A killed edge: the device moves on to the next edge in its list. The
	// warm edge holds 5.34.0's files, so a fresh device still gets the
	// answer and fails only on the 5.34.1 files nobody can pull.
	edges[1].proc.Kill()
	fr := runDeviceExpect(t, false, edges[1].url+","+edges[0].url, filepath.Join(t.TempDir(), "phone2"))
	if fr.To != "5.34.1" || !strings.Contains(fr.Error, "503") {
		t.Fatalf("device did not move on to the next edge: %+v", fr)
	}
}

// TestEdgeJoinsRunningFleet: a new edge is serving within seconds of start.
func TestEdgeJoinsRunningFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("fleet of processes")
	}
	z1 := testutil.Fixture(t, "swagger-ui/www-5.34.0.zip")
	o := startFleetOrigin(t)
	api := o.api
	first := startFleetEdge(t, o)
	runCLI(t, api, true, "upload", "--app", "com.example.swagger", "--version", "5.34.0", "--channel", "production", z1)
	testutil.Eventually(t, 10*time.Second, "first edge", func() bool { return checkVersion(first.url) == "5.34.0" })

	start := time.Now()
	late := startFleetEdge(t, o)
	testutil.Eventually(t, 5*time.Second, "late edge to serve", func() bool { return checkVersion(late.url) == "5.34.0" })
	t.Logf("late edge serving %s after start", time.Since(start).Round(time.Millisecond))
	phone := filepath.Join(t.TempDir(), "phone")
	if r := runDevice(t, late.url, phone); r.Status != "updated" || r.To != "5.34.0" {
		t.Fatalf("device through the late edge: %+v", r)
	}
	resp, err := http.Get(late.url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz of the late edge: %v %v", err, resp)
	}
}
