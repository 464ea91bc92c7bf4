package device

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/stats"
)

// DefaultConfirmTimeout is how long a new release may stay unconfirmed.
const DefaultConfirmTimeout = 10 * time.Minute

// maxFailed bounds the device's list of failed releases; maxFailedSent
// bounds how many of the newest it sends with a check (the edge's limit).
const (
	maxFailed     = 100
	maxFailedSent = 16
)

// previousDir keeps the bundle that was current before the last install,
// so that a revert is a local swap, not a download.
func previousDir(dir string) string { return filepath.Join(stateDir(dir), "previous") }

// Confirm marks the current release healthy: it is no longer pending, it
// will not be reverted, and a confirm event is reported. The app calls it
// once the new bundle has started well (Capgo's notifyAppReady).
func (d *Device) Confirm(ctx context.Context) Result {
	start := d.cfg.Now()
	res := Result{Status: StatusConfirmed, From: d.st.Current.Version, To: d.st.Current.Version}
	if d.st.Pending {
		d.st.Pending, d.st.PendingSince = false, 0
		d.st.Previous, d.st.PreviousManifest = nil, nil
		os.RemoveAll(previousDir(d.cfg.Dir))
		d.record(stats.ActionConfirm, d.st.Current, 0, "")
	} else {
		res.Reason = "nothing pending: the current bundle is already confirmed"
	}
	if err := saveState(d.cfg.Dir, d.st); err != nil {
		res.Status, res.Error = StatusFailed, err.Error()
	}
	d.flushEvents(ctx, nil)
	res.MS = d.cfg.Now().Sub(start).Milliseconds()
	return res
}

// revertIfDue reverts the current release if it is pending and its
// confirmation time is up. It returns the reverted version, if any.
func (d *Device) revertIfDue(ctx context.Context) (string, error) {
	if !d.st.Pending || d.cfg.ConfirmTimeout < 0 {
		return "", nil
	}
	if d.cfg.Now().Sub(time.Unix(d.st.PendingSince, 0)) < d.cfg.ConfirmTimeout {
		return "", nil
	}
	return d.revert(ctx)
}

// revert swaps the previous release back in (atomically, like an
// install), marks the current one failed so it is never installed again,
// and reports a revert event.
func (d *Device) revert(ctx context.Context) (string, error) {
	failed := d.st.Current
	var to release.Ref
	var toEnv *release.Envelope
	if d.st.Previous != nil {
		to, toEnv = *d.st.Previous, d.st.PreviousManifest
	}
	src, err := d.previousTree(ctx, to, toEnv)
	if err != nil {
		return "", fmt.Errorf("device: revert %s: %w", failed.Version, err)
	}
	d.st.Installing, d.st.InstallingManifest, d.st.Reverting = &to, toEnv, true
	if err := saveState(d.cfg.Dir, d.st); err != nil {
		return "", err
	}
	if err := exchangeCurrent(d.cfg.Dir, src); err != nil {
		return "", fmt.Errorf("device: revert %s: %w", failed.Version, err)
	}
	os.RemoveAll(src) // it now holds the failed bundle
	d.finishRevert(failed)
	if err := saveState(d.cfg.Dir, d.st); err != nil {
		return "", err
	}
	return failed.Version, nil
}

// previousTree returns a folder holding the release to revert to: the
// kept previous bundle if it is intact, the built-in bundle, or a fresh
// download of the previous release's files.
func (d *Device) previousTree(ctx context.Context, to release.Ref, env *release.Envelope) (string, error) {
	if !to.ID.IsZero() {
		if env == nil {
			return "", errors.New("the previous release's manifest is missing")
		}
		m, err := d.manifestOf(env)
		if err != nil {
			return "", err
		}
		if verifyTree(previousDir(d.cfg.Dir), m) == nil {
			return previousDir(d.cfg.Dir), nil
		}
		staging, err := newStaging(d.cfg.Dir)
		if err != nil {
			return "", err
		}
		p := &plan{edge: d.order()[0], target: to, doc: m.Doc(), manifest: m, env: env}
		if _, err := d.populate(ctx, p, staging); err != nil {
			os.RemoveAll(staging)
			return "", err
		}
		return staging, syncTree(staging)
	}
	staging, err := newStaging(d.cfg.Dir)
	if err != nil {
		return "", err
	}
	if err := d.fillBuiltin(staging); err != nil {
		os.RemoveAll(staging)
		return "", err
	}
	return staging, syncTree(staging)
}

// finishRevert records that Installing (the previous release) is current
// again and failed is blocked for good.
func (d *Device) finishRevert(failed release.Ref) {
	if d.st.Installing != nil {
		d.st.Current = *d.st.Installing
	}
	d.st.Manifest = d.st.InstallingManifest
	d.st.Installing, d.st.InstallingManifest, d.st.Reverting = nil, nil, false
	d.st.Previous, d.st.PreviousManifest = nil, nil
	d.st.Pending, d.st.PendingSince = false, 0
	if !failed.ID.IsZero() && !slices.Contains(d.st.Failed, failed.ID) {
		d.st.Failed = append(d.st.Failed, failed.ID)
		if len(d.st.Failed) > maxFailed {
			d.st.Failed = d.st.Failed[len(d.st.Failed)-maxFailed:]
		}
	}
	os.RemoveAll(previousDir(d.cfg.Dir))
	d.record(stats.ActionRevert, failed, 0, fmt.Sprintf("not confirmed within %s", d.cfg.ConfirmTimeout))
}

// recoverRevert finishes or abandons a revert a crash interrupted: if
// Dir/current is no longer the failed bundle, the swap happened.
func (d *Device) recoverRevert() {
	cur := currentDir(d.cfg.Dir)
	swapped := false
	switch {
	case d.st.InstallingManifest != nil:
		if m, err := d.manifestOf(d.st.InstallingManifest); err == nil {
			swapped = verifyTree(cur, m) == nil
		}
	case d.st.Manifest != nil:
		if m, err := d.manifestOf(d.st.Manifest); err == nil {
			swapped = verifyTree(cur, m) != nil
		}
	}
	if swapped {
		d.finishRevert(d.st.Current)
		return
	}
	// Not swapped: the release is still pending and overdue, so the next
	// run reverts it again.
	d.st.Installing, d.st.InstallingManifest, d.st.Reverting = nil, nil, false
}

// markPending sets the pending state after an install of target.
func (d *Device) markPending(target release.Ref) {
	switch {
	case target.ID.IsZero():
		// The built-in bundle shipped with the app: nothing to confirm.
		d.st.Pending, d.st.PendingSince = false, 0
	case d.st.Previous != nil && d.st.Previous.ID == target.ID:
		// Back on the last confirmed release (a rollback while pending).
		d.st.Pending, d.st.PendingSince = false, 0
		d.st.Previous, d.st.PreviousManifest = nil, nil
		os.RemoveAll(previousDir(d.cfg.Dir))
	default:
		d.st.Pending, d.st.PendingSince = true, d.cfg.Now().Unix()
	}
}

// swapKeepingPrevious makes staging current and keeps the outgoing bundle
// in previousDir for a revert, unless the outgoing bundle was itself
// unconfirmed (then the kept one is still the last confirmed release).
func (d *Device) swapKeepingPrevious(staging string) error {
	keep := !d.st.Pending
	if err := exchangeCurrent(d.cfg.Dir, staging); err != nil {
		return installError{err}
	}
	// staging now holds the outgoing bundle. Kept, it becomes previous/
	// (the one it replaces goes to the trash); otherwise it is trash. The
	// renames are made durable by the state save that ends the install,
	// in the same folder.
	if _, err := os.Lstat(staging); err != nil {
		return nil
	}
	if !keep {
		d.trash = append(d.trash, staging)
		return nil
	}
	if _, err := os.Lstat(previousDir(d.cfg.Dir)); err == nil {
		old := staging + ".previous"
		if os.Rename(previousDir(d.cfg.Dir), old) != nil {
			os.RemoveAll(previousDir(d.cfg.Dir))
		} else {
			d.trash = append(d.trash, old)
		}
	}
	if err := os.Rename(staging, previousDir(d.cfg.Dir)); err != nil {
		d.trash = append(d.trash, staging)
	}
	return nil
}

// seedBuiltin gives a fresh device the bundle shipped in the app.
func (d *Device) seedBuiltin() error {
	if d.cfg.BuiltinDir == "" || !d.st.Current.ID.IsZero() {
		return nil
	}
	if _, err := os.Lstat(currentDir(d.cfg.Dir)); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	staging, err := newStaging(d.cfg.Dir)
	if err != nil {
		return fmt.Errorf("device: %w", err)
	}
	if err := d.fillBuiltin(staging); err != nil {
		os.RemoveAll(staging)
		return err
	}
	if err := syncTree(staging); err != nil {
		os.RemoveAll(staging)
		return fmt.Errorf("device: %w", err)
	}
	// There is no current folder: the exchange is a rename.
	return exchangeCurrent(d.cfg.Dir, staging)
}

// fillBuiltin copies the built-in bundle into dst; without one, dst stays
// empty (an app that ships no web bundle of its own).
func (d *Device) fillBuiltin(dst string) error {
	if d.cfg.BuiltinDir == "" {
		return nil
	}
	if err := copyTree(d.cfg.BuiltinDir, dst); err != nil {
		return fmt.Errorf("device: copy built-in bundle: %w", err)
	}
	return nil
}

// copyTree copies the regular files and folders under src into dst.
// Symbolic links and special files are refused: a bundle has none.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case e.IsDir():
			return os.MkdirAll(target, 0o755)
		case !e.Type().IsRegular():
			return fmt.Errorf("%s is not a regular file", p)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		fi, err := in.Stat()
		if err != nil {
			return err
		}
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_EXCL, fi.Mode().Perm())
		if err != nil {
			return err
		}
		_, err = io.Copy(out, in)
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// recentFailed is the newest failed release ids, comma-separated, for the
// check's failed parameter (Expo sends its recent failed update ids the
// same way): the edge then stops offering them, with no per-device state.
func recentFailed(failed []release.Hash) string {
	if len(failed) > maxFailedSent {
		failed = failed[len(failed)-maxFailedSent:]
	}
	ids := make([]string, len(failed))
	for i, h := range failed {
		ids[i] = h.String()
	}
	return strings.Join(ids, ",")
}
