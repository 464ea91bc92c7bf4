package device

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/capstan-ota/capstan/release"
	"golang.org/x/sys/unix"
)

// currentDir is where the installed bundle lives.
func currentDir(dir string) string { return filepath.Join(dir, "current") }

// newStaging makes a fresh staging folder next to current (same file
// system, so the final swap is a rename).
func newStaging(dir string) (string, error) {
	if err := os.MkdirAll(stateDir(dir), 0o755); err != nil {
		return "", err
	}
	return os.MkdirTemp(stateDir(dir), "staging-")
}

// exchangeCurrent makes src Dir/current in one atomic step, and leaves the
// outgoing bundle at src (nothing is there if there was no current): the
// install keeps it as the previous release or throws it away, a revert
// throws the failed one away. With an existing current folder it uses
// renameat2(RENAME_EXCHANGE), so there is no instant at which Dir/current
// is missing or half-written. A file system that cannot exchange gets
// three renames (current → src.old, src → current, src.old → src); a
// crash after the first leaves current missing, and cleanStaging, which
// New runs first, renames src.old back to current.
func exchangeCurrent(dir, src string) error {
	cur := currentDir(dir)
	if _, err := os.Lstat(cur); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(src, cur); err != nil {
			return fmt.Errorf("device: install: %w", err)
		}
		return syncDir(dir)
	}
	err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, cur, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		old := src + ".old"
		if err := os.Rename(cur, old); err != nil {
			return fmt.Errorf("device: install: %w", err)
		}
		if err := os.Rename(src, cur); err != nil {
			os.Rename(old, cur)
			return fmt.Errorf("device: install: %w", err)
		}
		if err := os.Rename(old, src); err != nil {
			return fmt.Errorf("device: install: %w", err)
		}
		return syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("device: install: %w", err)
	}
	return syncDir(dir)
}

// cleanStaging removes staging folders left by an interrupted run, and
// puts back a current folder lost between the renames of exchangeCurrent's
// fallback (the .old folder).
func cleanStaging(dir string) {
	ents, err := os.ReadDir(stateDir(dir))
	if err != nil {
		return
	}
	cur := currentDir(dir)
	_, curErr := os.Lstat(cur)
	for _, e := range ents {
		p := filepath.Join(stateDir(dir), e.Name())
		if !e.IsDir() {
			continue
		}
		if filepath.Ext(e.Name()) == ".old" && errors.Is(curErr, os.ErrNotExist) {
			if os.Rename(p, cur) == nil {
				curErr = nil
				continue
			}
		}
		if len(e.Name()) > 8 && e.Name()[:8] == "staging-" {
			os.RemoveAll(p)
		}
	}
}

// writeFile creates path inside root (making folders) from r, checking
// size and SHA-256 against f, and fsyncs it.
func writeFile(root string, f release.File, r io.Reader) error {
	p, err := safeJoin(root, f.Path)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, os.FileMode(f.Mode)|0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(r, f.Size+1))
	if err == nil && n != f.Size {
		err = fmt.Errorf("%w: %s is %d bytes, the manifest says %d", ErrVerify, f.Path, n, f.Size)
	}
	if err == nil {
		var sum release.Hash
		h.Sum(sum[:0])
		if sum != f.SHA256 {
			err = fmt.Errorf("%w: %s hashes to %s, the manifest says %s", ErrVerify, f.Path, sum, f.SHA256)
		}
	}
	if err == nil {
		err = out.Chmod(os.FileMode(f.Mode))
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// safeJoin joins a manifest path to root, refusing anything that could
// leave it (the manifest is validated already; this is the second lock).
func safeJoin(root, p string) (string, error) {
	if err := release.ValidatePath(p); err != nil {
		return "", err
	}
	return filepath.Join(root, filepath.FromSlash(p)), nil
}

// syncTree makes everything under root durable, files and folders alike,
// with one syncfs(2) on its file system: cheaper than an fsync per file for
// a bundle of hundreds of files, and it also covers files that were
// hard-linked or written by the patch applier without their own fsync.
func syncTree(root string) error {
	d, err := os.Open(root)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

// verifyTree checks that root holds exactly the files of m.
func verifyTree(root string, m *release.Manifest) error {
	count := 0
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		f, ok := m.Lookup(filepath.ToSlash(rel))
		if !ok {
			return fmt.Errorf("%w: unexpected file %s", ErrVerify, rel)
		}
		count++
		fh, err := os.Open(p)
		if err != nil {
			return err
		}
		defer fh.Close()
		h := sha256.New()
		n, err := io.Copy(h, fh)
		if err != nil {
			return err
		}
		var sum release.Hash
		h.Sum(sum[:0])
		if n != f.Size || sum != f.SHA256 {
			return fmt.Errorf("%w: %s does not match the manifest", ErrVerify, rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if count != len(m.Files) {
		return fmt.Errorf("%w: %d files on disk, the manifest lists %d", ErrVerify, count, len(m.Files))
	}
	return nil
}
