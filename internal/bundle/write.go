package bundle

import (
	"archive/zip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// zipEpoch is the fixed modification time written for every entry, so that a
// folder zips to the same bytes on every machine and every run.
var zipEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// ZipDir writes a deterministic zip of the regular files under dir to w:
// sorted paths, fixed timestamps, permission bits reduced to 0644/0755. It
// refuses symlinks and special files rather than guess what they mean.
func ZipDir(dir string, w io.Writer) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return bad("%s is not a regular file (symlinks and devices are not allowed in a bundle)", p)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		paths = append(paths, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return fmt.Errorf("bundle: zip %s: %w", dir, err)
	}
	if len(paths) == 0 {
		return bad("folder %s has no files", dir)
	}
	sort.Strings(paths)
	zw := zip.NewWriter(w)
	for _, p := range paths {
		if err := checkPath(p); err != nil {
			return err
		}
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(p)))
		if err != nil {
			return fmt.Errorf("bundle: zip: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return fmt.Errorf("bundle: zip: %w", err)
		}
		mode := fs.FileMode(0o644)
		if fi.Mode().Perm()&0o111 != 0 {
			mode = 0o755
		}
		hdr := &zip.FileHeader{Name: p, Method: zip.Deflate, Modified: zipEpoch}
		hdr.SetMode(mode)
		fw, err := zw.CreateHeader(hdr)
		if err == nil {
			_, err = io.Copy(fw, f)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("bundle: zip %s: %w", p, err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("bundle: zip: %w", err)
	}
	return nil
}
