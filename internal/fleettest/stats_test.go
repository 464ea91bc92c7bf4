package fleettest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/stats"
	"github.com/capstan-ota/capstan/wire"
)

func ev(action, device string, rel release.Ref, bytes int64) stats.Event {
	return stats.Event{Action: action, App: app, Channel: "production", Device: device, Release: rel.ID, Version: rel.Version, Bytes: bytes}
}

// sendAll posts events in device-sized batches.
func (f *fleet) sendAll(evs []stats.Event) {
	for len(evs) > 0 {
		n := min(len(evs), stats.MaxDeviceBatch)
		f.postEvents(evs[:n])
		evs = evs[n:]
	}
}

func releaseStats(t *testing.T, rep *wire.StatsReport, version string) wire.ReleaseStats {
	t.Helper()
	for _, c := range rep.Channels {
		for _, r := range c.Releases {
			if r.Version == version {
				return r
			}
		}
	}
	t.Fatalf("no stats for %s", version)
	return wire.ReleaseStats{}
}

func TestCountersMatchEventsAcrossRestart(t *testing.T) {
	f := newFleet(t, func(c *origin.Config) { c.EventsToken = "cluster-secret" })
	v1 := f.upload(app, "1.0.0", "production", 100, "")
	v2 := f.upload(app, "1.1.0", "production", 100, "")
	ids := deviceIDs(1000)
	var evs []stats.Event
	for i, id := range ids {
		evs = append(evs, ev(stats.ActionCheck, id, v1, 0), ev(stats.ActionDownload, id, v2, 1000), ev(stats.ActionInstall, id, v2, 0))
		switch {
		case i%10 == 0:
			evs = append(evs, ev(stats.ActionRevert, id, v2, 0))
		case i%25 == 1:
			evs = append(evs, ev(stats.ActionFail, id, v2, 0))
		default:
			evs = append(evs, ev(stats.ActionConfirm, id, v2, 0))
		}
	}
	// Events the origin must not count: an unknown release, an unknown
	// channel, a bad action. They are dropped, not fatal.
	evs = append(evs,
		stats.Event{Action: stats.ActionInstall, App: app, Channel: "production", Device: "x", Release: release.Sum([]byte("nope"))},
		stats.Event{Action: stats.ActionInstall, App: app, Channel: "nochannel", Device: "x", Release: v2.ID},
		stats.Event{Action: "explode", App: app, Channel: "production", Device: "x", Release: v2.ID})
	f.sendAll(evs)
	f.flush()

	want := wire.ReleaseStats{Version: "1.1.0", Release: v2.ID, Counters: wire.Counters{
		Downloads: 1000, Installs: 1000, Confirms: 860, Failures: 40, Reverts: 100, Bytes: 1000 * 1000,
		FailedAddresses: 1, // the whole fleet reports from loopback
	}}
	check := func(when string) {
		rep, err := f.api().Stats(context.Background(), app, "")
		if err != nil {
			t.Fatal(err)
		}
		got := releaseStats(t, rep, "1.1.0")
		g := got.Counters
		g.Devices, g.FailedDevices, g.FailureRate = 0, 0, 0
		if g != want.Counters {
			t.Fatalf("%s: counters %+v, want %+v", when, g, want.Counters)
		}
		// Distinct devices are a HyperLogLog estimate: within 3 %.
		if got.Devices < 970 || got.Devices > 1030 || got.FailedDevices < 135 || got.FailedDevices > 145 {
			t.Fatalf("%s: devices %d, failed devices %d; want about 1000 and 140", when, got.Devices, got.FailedDevices)
		}
		if r1 := releaseStats(t, rep, "1.0.0"); r1.Checks != 1000 {
			t.Fatalf("%s: 1.0.0 checks %d", when, r1.Checks)
		}
		if rep.Totals.Installs != 1000 || rep.Totals.Checks != 1000 {
			t.Fatalf("%s: app totals %+v", when, rep.Totals)
		}
	}
	check("before restart")
	f.restartOrigin()
	check("after restart")

	// /metrics exports the same counters.
	resp, err := http.Get(f.api().Server + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range []string{
		`capstan_release_events_total{action="install",app="com.example.app",channel="production",version="1.1.0"} 1000`,
		`capstan_release_events_total{action="revert",app="com.example.app",channel="production",version="1.1.0"} 100`,
		`capstan_release_download_bytes_total{app="com.example.app",channel="production",version="1.1.0"} 1e+06`,
	} {
		if !strings.Contains(string(body), line) {
			t.Fatalf("/metrics lacks %s", line)
		}
	}

	// Without the cluster token the origin refuses events.
	resp, err = http.Post(f.api().Server+"/v1/events", "application/json", strings.NewReader("[]"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("events without token: %s", resp.Status)
	}
}

func TestAutoPauseOnFailureSpike(t *testing.T) {
	// Every device of this in-process fleet reports from one loopback
	// address: the address rule is TestAutoPauseNeedsManyAddresses's.
	f := newFleet(t, func(c *origin.Config) {
		c.AutoPause = origin.AutoPausePolicy{FailureRate: 0.2, MinDevices: 50, MinAddresses: 1}
	})
	v1 := f.upload(app, "1.0.0", "production", 100, "")
	v2 := f.upload(app, "1.1.0", "production", 50, "")
	ids := deviceIDs(1000)

	// 40 devices, all failing: below the minimum, no pause.
	var evs []stats.Event
	for _, id := range ids[:40] {
		evs = append(evs, ev(stats.ActionInstall, id, v2, 0), ev(stats.ActionRevert, id, v2, 0))
	}
	f.sendAll(evs)
	f.flush()
	if f.channel(app, "production").Paused {
		t.Fatal("paused below the minimum number of devices")
	}

	// 400 more devices install it fine: 40/440 ≈ 9 %, under 20 %.
	evs = evs[:0]
	for _, id := range ids[40:440] {
		evs = append(evs, ev(stats.ActionInstall, id, v2, 0), ev(stats.ActionConfirm, id, v2, 0))
	}
	f.sendAll(evs)
	f.flush()
	if f.channel(app, "production").Paused {
		t.Fatal("paused at a 9% failure rate")
	}

	// 100 more fail: 140/540 ≈ 26 % > 20 %: the rollout pauses itself.
	evs = evs[:0]
	for _, id := range ids[440:540] {
		evs = append(evs, ev(stats.ActionInstall, id, v2, 0), ev(stats.ActionFail, id, v2, 0))
	}
	f.sendAll(evs)
	f.flush()
	c := f.channel(app, "production")
	if !c.Paused || c.Release.ID != v2.ID {
		t.Fatalf("not auto-paused: %+v", c)
	}
	rep, err := f.api().Stats(context.Background(), app, "production")
	if err != nil {
		t.Fatal(err)
	}
	rs := releaseStats(t, rep, "1.1.0")
	if rs.AutoPaused == nil || rs.AutoPaused.Seq != c.Seq || rs.AutoPaused.FailureRate <= 0.2 || !rep.Channels[0].Paused {
		t.Fatalf("stats do not say auto-paused: %+v", rs)
	}
	// Paused: devices not yet on 1.1.0 are not offered it; devices on it stay.
	for _, id := range ids[600:700] {
		if a := f.check(checkQuery(app, "production", id, v1, "")); a.Status != wire.StatusUpToDate {
			t.Fatalf("auto-paused rollout offered %s to %s", a.Status, id)
		}
	}

	// Download failures are the network's fault, not the release's: they
	// are counted but do not move the failure rate.
	before := releaseStats(t, rep, "1.1.0")
	evs = evs[:0]
	for _, id := range ids[700:800] {
		e := ev(stats.ActionFail, id, v2, 0)
		e.Cause = stats.CauseDownload
		evs = append(evs, e)
	}
	f.sendAll(evs)
	f.flush()
	rep, err = f.api().Stats(context.Background(), app, "production")
	if err != nil {
		t.Fatal(err)
	}
	after := releaseStats(t, rep, "1.1.0")
	if after.Failures != before.Failures+100 || after.FailedDevices != before.FailedDevices {
		t.Fatalf("download failures: failures %d→%d, failed devices %d→%d", before.Failures, after.Failures, before.FailedDevices, after.FailedDevices)
	}

	// An operator resumes: more failures do not pause it again.
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", RolloutBPS: -1, Paused: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	evs = evs[:0]
	for _, id := range ids[540:600] {
		evs = append(evs, ev(stats.ActionFail, id, v2, 0))
	}
	f.sendAll(evs)
	f.flush()
	if f.channel(app, "production").Paused {
		t.Fatal("re-paused after an operator resumed")
	}
}

func TestChannelAutoPauseOverride(t *testing.T) {
	f := newFleet(t, nil)
	f.upload(app, "1.0.0", "production", 100, "")
	v2 := f.upload(app, "1.1.0", "production", 50, "")
	off := -1.0
	if _, err := f.origin().SetChannelPolicy(app, "production", wire.ChannelPolicy{AutoPauseFailureRate: &off}); err != nil {
		t.Fatal(err)
	}
	var evs []stats.Event
	for _, id := range deviceIDs(100) {
		evs = append(evs, ev(stats.ActionFail, id, v2, 0))
	}
	f.sendAll(evs)
	f.flush()
	if f.channel(app, "production").Paused {
		t.Fatal("paused although auto-pause is off for the channel")
	}
	rate, n, one := 0.5, 10, 1 // one address: the whole fleet is on loopback
	if _, err := f.origin().SetChannelPolicy(app, "production", wire.ChannelPolicy{AutoPauseFailureRate: &rate, AutoPauseMinDevices: &n, AutoPauseMinAddresses: &one}); err != nil {
		t.Fatal(err)
	}
	f.sendAll(evs[:1])
	f.flush()
	if !f.channel(app, "production").Paused {
		t.Fatal("not paused with the channel's own threshold")
	}
}

func TestEdgeEventsBounds(t *testing.T) {
	f := newFleet(t, nil)
	post := func(body string) int {
		resp, err := http.Post(f.eURL+"/v1/events", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post("{not json"); c != http.StatusBadRequest {
		t.Fatalf("malformed: %d", c)
	}
	if c := post("[" + strings.Repeat(`{"action":"check"},`, stats.MaxDeviceBatch) + `{"action":"check"}]`); c != http.StatusBadRequest {
		t.Fatalf("too many events: %d", c)
	}
	if c := post(`[` + strings.Repeat(" ", stats.MaxDeviceBody) + `]`); c != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", c)
	}
	// A single object is accepted, as Capgo's plugin sends.
	if c := post(`{"action":"check","app":"a","channel":"b","device":"d","release":"` + release.ZeroHash.String() + `"}`); c != http.StatusOK {
		t.Fatalf("single event: %d", c)
	}
}

func TestStatsNeedReaderRole(t *testing.T) {
	f := newFleet(t, nil)
	f.upload(app, "1.0.0", "production", 100, "")
	ctx := context.Background()
	var key struct {
		Key string `json:"key"`
	}
	if err := f.api().Do(ctx, http.MethodPost, "/v1/keys", map[string]any{"role": "reader", "apps": []string{app}}, &key); err != nil {
		t.Fatal(err)
	}
	reader := *f.api()
	reader.APIKey = key.Key
	if _, err := reader.Stats(ctx, app, ""); err != nil {
		t.Fatalf("reader cannot read stats: %v", err)
	}
	if _, err := reader.Promote(ctx, app, "production", "beta", nil, false); err == nil {
		t.Fatal("a reader promoted a release")
	}
	anon := *f.api()
	anon.APIKey = ""
	if _, err := anon.Stats(ctx, app, ""); err == nil {
		t.Fatal("stats without a key")
	}
	if _, err := f.api().Stats(ctx, "no.such.app", ""); err == nil {
		t.Fatal("stats of an unknown app")
	}
}
