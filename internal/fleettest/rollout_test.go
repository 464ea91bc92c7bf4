package fleettest

import (
	"context"
	"testing"

	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

const app = "com.example.app"

// offeredSet asks the edge for every device (running from) and returns the
// devices offered want.
func (f *fleet) offeredSet(ids []string, from release.Ref, want release.Hash) map[string]bool {
	f.t.Helper()
	got := map[string]bool{}
	for _, id := range ids {
		a := f.check(checkQuery(app, "production", id, from, ""))
		if a.HTTP != 200 {
			f.t.Fatalf("check %s: HTTP %d %s", id, a.HTTP, a.Error)
		}
		if h, ok := a.offered(); ok && h == want {
			got[id] = true
		}
	}
	return got
}

func TestProgressiveRollout(t *testing.T) {
	f := newFleet(t, nil)
	v1 := f.upload(app, "1.0.0", "production", 100, "")
	v2 := f.upload(app, "1.1.0", "production", 30, "")
	ids := deviceIDs(1000)

	// 30 %: between 27 % and 33 % of 1,000 devices are offered 1.1.0; the
	// others are up to date on 1.0.0.
	at30 := f.offeredSet(ids, v1, v2.ID)
	if n := len(at30); n < 270 || n > 330 {
		t.Fatalf("at 30%% %d of 1000 devices were offered the release", n)
	}
	a := f.check(checkQuery(app, "production", "not-in-rollout-probe", v1, ""))
	if a.Status != wire.StatusUpdate && a.Status != wire.StatusUpToDate {
		t.Fatalf("status %q", a.Status)
	}

	// Raising to 50 % keeps every device already in.
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", RolloutBPS: 5000}); err != nil {
		t.Fatal(err)
	}
	at50 := f.offeredSet(ids, v1, v2.ID)
	for id := range at30 {
		if !at50[id] {
			t.Fatalf("device %s was in the 30%% rollout and is out at 50%%", id)
		}
	}
	if n := len(at50); n < 450 || n > 550 {
		t.Fatalf("at 50%% %d of 1000 devices were offered the release", n)
	}

	// Pause: no new device enters; devices already on 1.1.0 keep it.
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", RolloutBPS: -1, Paused: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.offeredSet(ids, v1, v2.ID)); n != 0 {
		t.Fatalf("paused rollout offered the release to %d new devices", n)
	}
	for id := range at50 {
		a := f.check(checkQuery(app, "production", id, v2, ""))
		if a.Status != wire.StatusUpToDate {
			t.Fatalf("paused: device %s on 1.1.0 got %q (%s), want up-to-date", id, a.Status, a.Reason)
		}
	}
	// Resume: the same devices are offered it again.
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", RolloutBPS: -1, Paused: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	resumed := f.offeredSet(ids, v1, v2.ID)
	if len(resumed) != len(at50) {
		t.Fatalf("resumed rollout offers %d devices, before the pause %d", len(resumed), len(at50))
	}

	// Finish (rollout 100): everyone.
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", RolloutBPS: release.FullRollout, Paused: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.offeredSet(ids, v1, v2.ID)); n != 1000 {
		t.Fatalf("finished rollout offers %d of 1000 devices", n)
	}
	if c := f.channel(app, "production"); c.Stable != nil || c.RolloutBPS != release.FullRollout {
		t.Fatalf("finished channel: %+v", c)
	}
}

func TestRollbackMovesDevicesBack(t *testing.T) {
	f := newFleet(t, nil)
	v1 := f.upload(app, "1.0.0", "production", 100, "")
	v2 := f.upload(app, "1.1.0", "production", 100, "")
	ids := deviceIDs(1000)

	// Pointing the channel at an older release without a rollback does not
	// move anyone back: a release older than the device runs is never offered.
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", Version: "1.0.0", RolloutBPS: -1}); err != nil {
		t.Fatal(err)
	}
	a := f.check(checkQuery(app, "production", ids[0], v2, ""))
	if a.Status != wire.StatusBlocked || a.Code != release.BlockDowngrade {
		t.Fatalf("set to an older version: got %q %q, want blocked %s", a.Status, a.Code, release.BlockDowngrade)
	}
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", Version: "1.1.0", RolloutBPS: -1}); err != nil {
		t.Fatal(err)
	}

	// capstan rollback (no --to): the previous release, as a new record
	// marked rollback, and every device on 1.1.0 is offered 1.0.0.
	before := f.channel(app, "production").Seq
	env, err := f.origin().Rollback(app, "production", "")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := env.Channel()
	if c.Release.ID != v1.ID || !c.Rollback || c.Seq <= before || c.RolloutBPS != release.FullRollout {
		t.Fatalf("rollback record: %+v (previous seq %d)", c, before)
	}
	if n := len(f.offeredSet(ids, v2, v1.ID)); n != 1000 {
		t.Fatalf("after rollback %d of 1000 devices on 1.1.0 are offered 1.0.0", n)
	}

	// A new upload after the rollback at 10 %: devices outside it that still
	// run the bad 1.1.0 keep being moved back to 1.0.0 (the rollback marker
	// stays while 1.0.0 is the stable release).
	v3 := f.upload(app, "1.2.0", "production", 10, "")
	c = f.channel(app, "production")
	if !c.Rollback || c.Stable == nil || c.Stable.ID != v1.ID {
		t.Fatalf("record after upload at 10%%: %+v", c)
	}
	moved := 0
	for _, id := range ids {
		a := f.check(checkQuery(app, "production", id, v2, ""))
		if h, ok := a.offered(); ok && (h == v1.ID || h == v3.ID) {
			moved++
		}
	}
	if moved != 1000 {
		t.Fatalf("%d of 1000 devices on the rolled-back 1.1.0 are offered 1.0.0 or 1.2.0", moved)
	}

	// Rollback to a named version, then to the built-in bundle.
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", RolloutBPS: release.FullRollout}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.origin().Rollback(app, "production", "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if a := f.check(checkQuery(app, "production", ids[1], v3, "")); a.Release == nil || a.Release.ID() != v2.ID {
		t.Fatalf("rollback --to 1.1.0: got %q", a.Status)
	}
	if _, err := f.origin().Rollback(app, "production", wire.Builtin); err != nil {
		t.Fatal(err)
	}
	a = f.check(checkQuery(app, "production", ids[2], v3, ""))
	if h, ok := a.offered(); !ok || !h.IsZero() {
		t.Fatalf("rollback to builtin: got %q with release %v", a.Status, a.Release != nil)
	}
	if _, err := f.origin().Rollback(app, "production", "9.9.9"); err == nil {
		t.Fatal("rollback to an unknown version succeeded")
	}
}

func TestVersionRules(t *testing.T) {
	f := newFleet(t, nil)
	v1 := f.upload(app, "1.0.0", "production", 100, "")
	v2 := f.upload(app, "2.0.0", "production", 100, "2.0.0")

	tests := []struct {
		name, native string
		status, code string
	}{
		{"native below min", "1.9.0", wire.StatusBlocked, release.BlockUnderNative},
		{"native unknown", "", wire.StatusBlocked, release.BlockUnderNative},
		{"native at min", "2.0.0", wire.StatusUpdate, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := f.check(checkQuery(app, "production", "d", v1, tc.native))
			if a.Status != tc.status || a.Code != tc.code {
				t.Fatalf("got %q %q (%s), want %q %q", a.Status, a.Code, a.Reason, tc.status, tc.code)
			}
		})
	}

	// Block major jumps: 3.0.0 needs no particular native version, but the
	// channel refuses it to native 2.x.
	v3 := f.upload(app, "3.0.0", "production", 100, "")
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", RolloutBPS: -1, BlockMajor: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		native string
		status string
	}{{"2.4.0", wire.StatusBlocked}, {"3.0.0", wire.StatusUpdate}, {"3.1.0", wire.StatusUpdate}} {
		a := f.check(checkQuery(app, "production", "d", v2, tc.native))
		if a.Status != tc.status {
			t.Fatalf("block-major, native %s: got %q (%s), want %q", tc.native, a.Status, a.Reason, tc.status)
		}
		if tc.status == wire.StatusBlocked && a.Code != release.BlockMajor {
			t.Fatalf("block-major code %q", a.Code)
		}
	}
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", RolloutBPS: -1, BlockMajor: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	if a := f.check(checkQuery(app, "production", "d", v2, "2.4.0")); a.Status != wire.StatusUpdate || a.Release.ID() != v3.ID {
		t.Fatalf("block-major lifted: got %q", a.Status)
	}

	// Versions are unique per app.
	if _, err := f.origin().Upload(context.Background(), &origin.UploadRequest{App: app, Version: "3.0.0", RolloutBPS: release.FullRollout}, nil); err == nil {
		t.Fatal("a version was reused")
	}
}

func TestChannelsSelectPromoteList(t *testing.T) {
	f := newFleet(t, nil)
	v1 := f.upload(app, "1.0.0", "production", 100, "")
	v2 := f.upload(app, "1.1.0", "beta", 100, "")
	ctx := context.Background()

	// production was the app's first channel: it is the default, and a
	// device that names no channel follows it.
	if c := f.channel(app, "production"); !c.Default {
		t.Fatal("first channel is not the default")
	}
	if a := f.check(checkQuery(app, "", "d", release.Ref{}, "")); a.HTTP != 200 || a.Release == nil || a.Release.ID() != v1.ID {
		t.Fatalf("no channel named: HTTP %d %s", a.HTTP, a.Error)
	}
	// beta does not let devices choose it yet: a clear refusal.
	a := f.check(checkQuery(app, "beta", "d", release.Ref{}, ""))
	if a.HTTP != 403 || a.Error == "" {
		t.Fatalf("beta without device select: HTTP %d %q", a.HTTP, a.Error)
	}
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "beta", RolloutBPS: -1, DeviceSelect: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if a := f.check(checkQuery(app, "beta", "d", release.Ref{}, "")); a.HTTP != 200 || a.Release.ID() != v2.ID {
		t.Fatalf("beta with device select: HTTP %d %s", a.HTTP, a.Error)
	}

	// Promote beta to production through the API.
	cv, err := f.api().Promote(ctx, app, "beta", "production", nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if cv.Release.ID != v2.ID || cv.RolloutBPS != release.FullRollout || !cv.Default {
		t.Fatalf("promoted record: %+v", cv.Channel)
	}
	if a := f.check(checkQuery(app, "production", "d", v1, "")); a.Release == nil || a.Release.ID() != v2.ID {
		t.Fatalf("after promote: %q", a.Status)
	}
	if _, err := f.api().Promote(ctx, app, "nope", "production", nil, false); err == nil {
		t.Fatal("promote from an unknown channel succeeded")
	}

	// Moving the default to beta takes it from production.
	if _, err := f.api().UpdateChannel(ctx, app, "beta", clientChange(true)); err != nil {
		t.Fatal(err)
	}
	chs, err := f.api().Channels(ctx, app)
	if err != nil || len(chs) != 2 {
		t.Fatalf("channel list: %v, %d channels", err, len(chs))
	}
	for _, c := range chs {
		if c.Default != (c.Channel.Channel == "beta") {
			t.Fatalf("channel %s default=%v", c.Channel.Channel, c.Default)
		}
	}
	if a := f.check(checkQuery(app, "production", "d", v1, "")); a.HTTP != 403 {
		t.Fatalf("production after losing default: HTTP %d", a.HTTP)
	}
}

func TestRollbackDuringPartialRollout(t *testing.T) {
	f := newFleet(t, nil)
	v1 := f.upload(app, "1.0.0", "production", 100, "")
	f.upload(app, "1.1.0", "production", 10, "")
	v3 := f.upload(app, "1.2.0", "production", 10, "")
	if c := f.channel(app, "production"); c.Stable == nil || c.Stable.ID != v1.ID {
		t.Fatalf("stable is not 1.0.0: %+v", c)
	}
	env, err := f.origin().Rollback(app, "production", "")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := env.Channel()
	if c.Release.ID != v1.ID || c.Stable != nil || !c.Rollback {
		t.Fatalf("rollback of a partial rollout went to %s, want the stable 1.0.0", c.Release.Version)
	}
	if n := len(f.offeredSet(deviceIDs(200), v3, v1.ID)); n != 200 {
		t.Fatalf("%d of 200 devices on 1.2.0 moved back", n)
	}
}

// TestNarrowedRolloutKeepsStable is docs/ci.md's pipeline: promote beta to
// production (100 %), then set production's rollout to 50 %. Devices
// outside the 50 % must keep getting the release production served
// before, not nothing (issue 17, item 4); the same after a pause at 100 %.
func TestNarrowedRolloutKeepsStable(t *testing.T) {
	f := newFleet(t, nil)
	v1 := f.upload(app, "1.0.0", "production", 100, "")
	v2 := f.upload(app, "1.1.0", "beta", 10, "")
	if _, err := f.origin().Promote(app, "beta", "production", -1, false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", RolloutBPS: 5000}); err != nil {
		t.Fatal(err)
	}
	c := f.channel(app, "production")
	if c.Release.ID != v2.ID || c.RolloutBPS != 5000 || c.Stable == nil || c.Stable.ID != v1.ID {
		t.Fatalf("production after promote and --rollout 50: %+v, want 1.1.0 at 50%% with stable 1.0.0", c)
	}
	// A new device (on the bundle inside the app) outside the 50 % is
	// offered 1.0.0; one inside 1.1.0. None is offered nothing.
	ids := deviceIDs(400)
	got1, got2 := f.offeredSet(ids, release.Ref{}, v1.ID), f.offeredSet(ids, release.Ref{}, v2.ID)
	if len(got1)+len(got2) != len(ids) || len(got2) < 150 || len(got2) > 250 {
		t.Fatalf("of %d new devices %d were offered 1.0.0 and %d 1.1.0; want all of them, about half each", len(ids), len(got1), len(got2))
	}

	// Pausing the rollout at 100 % leaves new devices on 1.0.0 too.
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", RolloutBPS: release.FullRollout, Paused: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.offeredSet(ids, release.Ref{}, v1.ID)); n != len(ids) {
		t.Fatalf("paused at 100%%: %d of %d new devices offered 1.0.0", n, len(ids))
	}
	// Finishing drops the stable release: everyone gets 1.1.0.
	if _, err := f.origin().SetChannel(origin.ChannelRequest{App: app, Channel: "production", RolloutBPS: release.FullRollout, Paused: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	if c := f.channel(app, "production"); c.Stable != nil {
		t.Fatalf("finished rollout keeps a stable release: %+v", c)
	}
	if n := len(f.offeredSet(ids, v1, v2.ID)); n != len(ids) {
		t.Fatalf("finished: %d of %d devices on 1.0.0 offered 1.1.0", n, len(ids))
	}
}
