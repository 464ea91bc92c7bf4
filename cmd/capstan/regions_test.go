package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/bench/regions"
	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/internal/netsim"
	"github.com/capstan-ota/capstan/internal/testutil"
)

// TestRegionsLoopback runs three edges as processes, 5, 40 and 120 ms away
// behind delaying proxies on loopback: devices pick the nearest, fail over
// in rank order when it is killed, and return to it when it is back.
func TestRegionsLoopback(t *testing.T) { testRegions(t, false) }

// TestRegionsNetns is the same test with each edge in its own network
// namespace (root and iproute2 needed; skipped otherwise). The delay is tc
// netem on the namespace's link where the kernel has netem, else the
// loopback variant's proxy in front of the namespace.
func TestRegionsNetns(t *testing.T) { testRegions(t, true) }

func testRegions(t *testing.T, netns bool) {
	if testing.Short() {
		t.Skip("fleet of processes")
	}
	z1 := testutil.Fixture(t, "swagger-ui/www-5.34.0.zip")
	z2 := testutil.Fixture(t, "swagger-ui/www-5.34.1.zip")
	bin := testutil.Binary(t)
	// About 20 s on an idle machine; the deadline leaves room for a busy one.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, err := regions.StartFleet(ctx, regions.FleetConfig{Binary: bin, Dir: t.TempDir(), Netns: netns, Logf: t.Logf})
	if netns && errors.Is(err, netsim.ErrUnavailable) {
		t.Skipf("skipping the namespace variant (TestRegionsLoopback covers the behaviour): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("removing the fleet: %v", err)
		}
	})
	t.Logf("delay mode: %s", f.Mode())
	const app, channel = "com.example.swagger", "production"
	near, mid, far := f.Edges[0], f.Edges[1], f.Edges[2]
	if err := f.Upload(ctx, app, channel, "5.34.0", z1); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitServing(ctx, 20*time.Second, app, channel, "5.34.0"); err != nil {
		t.Fatal(err)
	}

	// Three devices, each shipping one edge URL; the calendar is fake so
	// that the ranking's retry interval passes without waiting.
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	var devs []*device.Device
	var dirs []string
	for i, shipped := range []*regions.Edge{far, mid, near} {
		dirs = append(dirs, filepath.Join(t.TempDir(), "phone"))
		d, err := device.New(device.Config{Dir: dirs[i], Edges: []string{shipped.URL},
			App: app, Channel: channel, Now: now, Ranking: device.RankConfig{Seed: uint64(i + 1)}})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	run := func(phase string, update bool, want *regions.Edge, version string) {
		t.Helper()
		for i, d := range devs {
			var r device.Result
			if update {
				r = d.Update(ctx)
			} else {
				r = d.Check(ctx)
			}
			if r.Status == device.StatusFailed || r.Edge != want.URL || r.To != version {
				t.Fatalf("%s: device %d: %+v, want %s from %s (%s)\nranking: %+v", phase, i, r, version, want.Region, want.URL, d.Ranking())
			}
		}
	}
	run("first run", true, near, "5.34.0")
	// The command does the same: it ships the far edge and installs from
	// the near one, keeping the ranking in its folder.
	cliDir := filepath.Join(t.TempDir(), "cli-phone")
	out := runCLI(t, "", true, "device", "--edge", far.URL, "--app", app, "--channel", channel, "--dir", cliDir, "--json", "--check", "--insecure-no-verify")
	var cr struct{ Status, Edge string }
	if err := json.Unmarshal([]byte(out), &cr); err != nil || cr.Status != "available" || cr.Edge != near.URL {
		t.Fatalf("capstan device --check shipping the far edge: %s (%v), want available from %s", out, err, near.URL)
	}
	if _, err := os.Stat(filepath.Join(cliDir, ".capstan", "edges.json")); err != nil {
		t.Fatalf("capstan device keeps no ranking: %v", err)
	}
	for i, d := range devs {
		r := d.Ranking()
		var got []string
		for _, e := range r.Edges {
			got = append(got, e.Region)
		}
		if !slices.Equal(got, []string{"eu-west", "us-east", "ap-south"}) {
			t.Fatalf("device %d ranking %v", i, r.Edges)
		}
		t.Logf("device %d: %s %dµs, %s %dµs, %s %dµs", i, r.Edges[0].Region, r.Edges[0].RTTMicros, r.Edges[1].Region, r.Edges[1].RTTMicros, r.Edges[2].Region, r.Edges[2].RTTMicros)
	}

	// The nearest edge dies; a new release arrives: every device gets it
	// from the next edge in its ranking.
	f.Kill(0)
	if err := f.Upload(ctx, app, channel, "5.34.1", z2); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitServing(ctx, 20*time.Second, app, channel, "5.34.1", 1, 2); err != nil {
		t.Fatal(err)
	}
	run("near edge killed", true, mid, "5.34.1")
	// The failover made each device rank again at its next run, without
	// the dead edge, which it keeps looking for.
	run("after failover", false, mid, "5.34.1")
	for i, d := range devs {
		if r := d.Ranking(); r.Stale || len(r.Lost) != 1 || r.Lost[0].URL != near.URL {
			t.Fatalf("device %d ranking after failover: %+v", i, r)
		}
	}

	// Back: after the retry interval, devices return to it.
	if err := f.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitServing(ctx, 20*time.Second, app, channel, "5.34.1"); err != nil {
		t.Fatal(err)
	}
	run("within the retry interval", false, mid, "5.34.1")
	clock.Add(int64(time.Minute + time.Second))
	run("near edge back", false, near, "5.34.1")
	for i, d := range devs {
		if r := d.Ranking(); len(r.Lost) != 0 || r.Edges[0].URL != near.URL {
			t.Fatalf("device %d ranking after return: %+v", i, r)
		}
		if _, err := os.Stat(filepath.Join(dirs[i], ".capstan", "edges.json")); err != nil {
			t.Fatalf("device %d keeps no ranking file: %v", i, err)
		}
	}
}
