package fleettest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

func (f *fleet) newDevice(id, dir, builtin string, clk *clock) *device.Device {
	f.t.Helper()
	d, err := device.New(device.Config{
		Dir: dir, Edges: []string{f.eURL}, App: app, Channel: "production", DeviceID: id,
		BuiltinDir: builtin, ConfirmTimeout: 10 * time.Minute, Now: clk.Now,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

func mustStatus(t *testing.T, res device.Result, want string) {
	t.Helper()
	if res.Status != want {
		t.Fatalf("device: status %q (%s %s), want %q", res.Status, res.Error, res.Reason, want)
	}
}

func TestDeviceRevertsUnconfirmedRelease(t *testing.T) {
	f := newFleet(t, nil)
	ctx := context.Background()
	f.upload(app, "1.0.0", "production", 100, "")
	clk := newClock()
	dir := t.TempDir()
	d := f.newDevice("phone-1", dir, "", clk)

	mustStatus(t, d.Update(ctx), device.StatusUpdated)
	mustStatus(t, d.Confirm(ctx), device.StatusConfirmed)
	if st := d.State(); st.Pending || st.Current.Version != "1.0.0" {
		t.Fatalf("after confirm: %+v", st)
	}

	v2 := f.upload(app, "1.1.0", "production", 100, "")
	mustStatus(t, d.Update(ctx), device.StatusUpdated)
	if st := d.State(); !st.Pending || st.Current.ID != v2.ID || readFile(t, dir, "index.html") != "<html>1.1.0</html>" {
		t.Fatalf("after install: %+v", st)
	}

	// Within the timeout nothing happens.
	clk.advance(9 * time.Minute)
	mustStatus(t, d.Update(ctx), device.StatusUpToDate)
	if !d.State().Pending {
		t.Fatal("pending cleared without a confirm")
	}

	// Past it, the next run reverts to 1.0.0, blocks 1.1.0 and does not
	// install it again although the channel still offers it.
	clk.advance(2 * time.Minute)
	res := d.Update(ctx)
	mustStatus(t, res, device.StatusReverted)
	if res.Reverted != "1.1.0" || res.To != "1.0.0" || res.Code != release.BlockFailed {
		t.Fatalf("revert result: %+v", res)
	}
	st := d.State()
	if st.Pending || st.Current.Version != "1.0.0" || !slices.Contains(st.Failed, v2.ID) {
		t.Fatalf("after revert: %+v", st)
	}
	if got := readFile(t, dir, "index.html"); got != "<html>1.0.0</html>" {
		t.Fatalf("after revert index.html = %q", got)
	}
	for range 3 {
		res := d.Update(ctx)
		mustStatus(t, res, device.StatusUpToDate)
		if d.State().Current.Version != "1.0.0" {
			t.Fatal("the failed release was installed again")
		}
	}

	// The edge, told about the failure with the check, does not offer it
	// either (no per-device state at the edge).
	q := checkQuery(app, "production", "phone-1", d.State().Current, "")
	q.Set("failed", v2.ID.String())
	if a := f.check(q); a.Status != wire.StatusBlocked || a.Code != release.BlockFailed {
		t.Fatalf("edge with failed=: %q %q", a.Status, a.Code)
	}

	// A newer release is still installed.
	f.upload(app, "1.2.0", "production", 100, "")
	mustStatus(t, d.Update(ctx), device.StatusUpdated)
	if d.State().Current.Version != "1.2.0" {
		t.Fatal("1.2.0 not installed")
	}

	// The device reported install, confirm and revert; the origin counts them.
	f.flush()
	rep, err := f.origin().Stats(app, "production")
	if err != nil {
		t.Fatal(err)
	}
	var r11 *wire.ReleaseStats
	for i := range rep.Channels[0].Releases {
		if rs := &rep.Channels[0].Releases[i]; rs.Version == "1.1.0" {
			r11 = rs
		}
	}
	if r11 == nil || r11.Installs != 1 || r11.Reverts != 1 || r11.FailedDevices != 1 || r11.Downloads != 1 || r11.Bytes == 0 {
		t.Fatalf("stats of 1.1.0: %+v", r11)
	}
}

func TestDeviceRevertToBuiltin(t *testing.T) {
	f := newFleet(t, nil)
	ctx := context.Background()
	builtin := t.TempDir()
	os.WriteFile(filepath.Join(builtin, "index.html"), []byte("shipped"), 0o644)
	clk := newClock()
	dir := t.TempDir()
	d := f.newDevice("phone-2", dir, builtin, clk)
	if got := readFile(t, dir, "index.html"); got != "shipped" {
		t.Fatalf("fresh device runs %q, want the built-in bundle", got)
	}
	v1 := f.upload(app, "1.0.0", "production", 100, "")
	mustStatus(t, d.Update(ctx), device.StatusUpdated)
	clk.advance(11 * time.Minute)
	mustStatus(t, d.Update(ctx), device.StatusReverted)
	if got := readFile(t, dir, "index.html"); got != "shipped" {
		t.Fatalf("reverted device runs %q, want the built-in bundle", got)
	}
	if st := d.State(); !st.Current.ID.IsZero() || !slices.Contains(st.Failed, v1.ID) {
		t.Fatalf("state after revert to builtin: %+v", st)
	}
}

func TestDeviceFollowsRollback(t *testing.T) {
	f := newFleet(t, nil)
	ctx := context.Background()
	builtin := t.TempDir()
	os.WriteFile(filepath.Join(builtin, "index.html"), []byte("shipped"), 0o644)
	f.upload(app, "1.0.0", "production", 100, "")
	clk := newClock()
	dir := t.TempDir()
	d := f.newDevice("phone-3", dir, builtin, clk)
	mustStatus(t, d.Update(ctx), device.StatusUpdated)
	mustStatus(t, d.Confirm(ctx), device.StatusConfirmed)
	f.upload(app, "1.1.0", "production", 100, "")
	mustStatus(t, d.Update(ctx), device.StatusUpdated)
	mustStatus(t, d.Confirm(ctx), device.StatusConfirmed)

	if _, err := f.origin().Rollback(app, "production", ""); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, d.Update(ctx), device.StatusUpdated)
	if got := readFile(t, dir, "index.html"); got != "<html>1.0.0</html>" {
		t.Fatalf("after rollback the device runs %q", got)
	}
	if _, err := f.origin().Rollback(app, "production", wire.Builtin); err != nil {
		t.Fatal(err)
	}
	res := d.Update(ctx)
	mustStatus(t, res, device.StatusUpdated)
	if got := readFile(t, dir, "index.html"); got != "shipped" || !d.State().Current.ID.IsZero() || d.State().Pending {
		t.Fatalf("after rollback to builtin the device runs %q, state %+v", got, d.State())
	}
}

// TestRevertGoesToLastConfirmed: a release installed over an unconfirmed
// one reverts to the last confirmed release, and only the release that
// was running when the time ran out is marked failed.
func TestRevertGoesToLastConfirmed(t *testing.T) {
	f := newFleet(t, nil)
	ctx := context.Background()
	f.upload(app, "1.0.0", "production", 100, "")
	clk := newClock()
	dir := t.TempDir()
	d := f.newDevice("phone-4", dir, "", clk)
	mustStatus(t, d.Update(ctx), device.StatusUpdated)
	mustStatus(t, d.Confirm(ctx), device.StatusConfirmed)
	v11 := f.upload(app, "1.1.0", "production", 100, "")
	mustStatus(t, d.Update(ctx), device.StatusUpdated)
	clk.advance(5 * time.Minute)
	v12 := f.upload(app, "1.2.0", "production", 100, "")
	mustStatus(t, d.Update(ctx), device.StatusUpdated)
	if st := d.State(); st.Previous == nil || st.Previous.Version != "1.0.0" || !st.Pending {
		t.Fatalf("after installing over a pending release: %+v", st)
	}
	clk.advance(11 * time.Minute)
	res := d.Update(ctx)
	mustStatus(t, res, device.StatusReverted)
	st := d.State()
	if st.Current.Version != "1.0.0" || readFile(t, dir, "index.html") != "<html>1.0.0</html>" {
		t.Fatalf("reverted to %s", st.Current.Version)
	}
	if !slices.Contains(st.Failed, v12.ID) || slices.Contains(st.Failed, v11.ID) {
		t.Fatalf("failed list %v: want 1.2.0 only", st.Failed)
	}
	// The kept bundle is gone; a second revert source would be a download.
	if _, err := os.Stat(filepath.Join(dir, ".capstan", "previous")); !os.IsNotExist(err) {
		t.Fatalf("previous bundle left behind: %v", err)
	}
}

// TestRevertDownloadsMissingPrevious: if the kept previous bundle is gone,
// the revert downloads it again and verifies it.
func TestRevertDownloadsMissingPrevious(t *testing.T) {
	f := newFleet(t, nil)
	ctx := context.Background()
	f.upload(app, "1.0.0", "production", 100, "")
	clk := newClock()
	dir := t.TempDir()
	d := f.newDevice("phone-5", dir, "", clk)
	mustStatus(t, d.Update(ctx), device.StatusUpdated)
	mustStatus(t, d.Confirm(ctx), device.StatusConfirmed)
	f.upload(app, "1.1.0", "production", 100, "")
	mustStatus(t, d.Update(ctx), device.StatusUpdated)
	if err := os.RemoveAll(filepath.Join(dir, ".capstan", "previous")); err != nil {
		t.Fatal(err)
	}
	clk.advance(11 * time.Minute)
	mustStatus(t, d.Update(ctx), device.StatusReverted)
	if got := readFile(t, dir, "index.html"); got != "<html>1.0.0</html>" {
		t.Fatalf("reverted device runs %q", got)
	}
}
