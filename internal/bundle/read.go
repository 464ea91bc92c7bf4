package bundle

import (
	"archive/zip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/capstan-ota/capstan/release"
)

// Limits bounds what a bundle may contain. The zero value of a field means
// its default from DefaultLimits.
type Limits struct {
	// MaxFiles is the most file entries a bundle may hold (default 20,000:
	// real web bundles have hundreds to a few thousand files, and every
	// file costs a blob write at the origin and a record in the manifest
	// every device downloads).
	MaxFiles int
	// MaxTotalSize is the most uncompressed bytes in all files together
	// (default 512 MiB; SPEC targets bundles up to 150 MB).
	MaxTotalSize int64
	// MaxFileSize is the most uncompressed bytes in one file (default 256 MiB).
	MaxFileSize int64
	// MaxRatio is the highest uncompressed/compressed ratio accepted for an
	// entry larger than 1 MiB (default 200; real JS compresses 3–10×, zip
	// bombs 1,000× and more).
	MaxRatio int64
}

// DefaultLimits returns the limits used when a field is zero.
func DefaultLimits() Limits {
	return Limits{MaxFiles: 20_000, MaxTotalSize: 512 << 20, MaxFileSize: 256 << 20, MaxRatio: 200}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxTotalSize <= 0 {
		l.MaxTotalSize = d.MaxTotalSize
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = d.MaxFileSize
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = d.MaxRatio
	}
	return l
}

// ErrBadBundle is wrapped by every refusal of a bundle's content.
var ErrBadBundle = errors.New("bad bundle")

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadBundle}, args...)...)
}

// Entry is one regular file of a validated zip.
type Entry struct {
	Path string
	Mode uint32
	zf   *zip.File
	lim  Limits
}

// Open returns a reader of the entry's uncompressed bytes that fails if the
// content is larger than the size the zip declared (a lying header) or the
// per-file limit.
func (e *Entry) Open() (io.ReadCloser, error) {
	rc, err := e.zf.Open()
	if err != nil {
		return nil, bad("open %q: %v", e.Path, err)
	}
	return &boundedReader{rc: rc, left: int64(e.zf.UncompressedSize64), path: e.Path}, nil
}

// Size is the declared uncompressed size, already checked against limits.
func (e *Entry) Size() int64 { return int64(e.zf.UncompressedSize64) }

type boundedReader struct {
	rc   io.ReadCloser
	left int64
	path string
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One more byte than declared means the header lied: a bomb.
		var one [1]byte
		if n, err := b.rc.Read(one[:]); n > 0 || err != io.EOF {
			return 0, bad("%q is larger than its declared size", b.path)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.left > 0 {
		return n, bad("%q is shorter than its declared size", b.path)
	}
	if err != nil && err != io.EOF {
		return n, bad("read %q: %v", b.path, err)
	}
	return n, err
}

func (b *boundedReader) Close() error { return b.rc.Close() }

// Read validates a zip of size bytes read through r and returns its file
// entries sorted by path. It refuses, with an error wrapping ErrBadBundle:
// a non-zip, paths that escape ('..', absolute, drive letters, backslashes),
// symlinks and other special files, duplicate paths, a path that is both a
// file and a folder, and sizes or ratios over the limits. Folders are
// implied by file paths and otherwise ignored.
func Read(r io.ReaderAt, size int64, lim Limits) ([]*Entry, error) {
	lim = lim.withDefaults()
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, bad("not a readable zip archive: %v", err)
	}
	if len(zr.File) > lim.MaxFiles*2 {
		return nil, bad("%d zip entries is over the limit of %d files", len(zr.File), lim.MaxFiles)
	}
	var out []*Entry
	seen := make(map[string]bool, len(zr.File))
	var total int64
	for _, zf := range zr.File {
		name := zf.Name
		mode := zf.Mode()
		if mode&fs.ModeSymlink != 0 {
			return nil, bad("symlink entry %q is not allowed", name)
		}
		if strings.HasSuffix(name, "/") || mode.IsDir() {
			if err := checkPath(strings.TrimSuffix(name, "/")); err != nil && name != "/" {
				return nil, err
			}
			continue
		}
		if !mode.IsRegular() {
			return nil, bad("entry %q is not a regular file (mode %v)", name, mode)
		}
		if err := checkPath(name); err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, bad("duplicate entry %q", name)
		}
		seen[name] = true
		usize := zf.UncompressedSize64
		if usize > uint64(lim.MaxFileSize) {
			return nil, bad("%q is %d bytes uncompressed, over the per-file limit of %d", name, usize, lim.MaxFileSize)
		}
		total += int64(usize)
		if total > lim.MaxTotalSize {
			return nil, bad("bundle is over the limit of %d uncompressed bytes", lim.MaxTotalSize)
		}
		if usize > 1<<20 && (zf.CompressedSize64 == 0 || usize/zf.CompressedSize64 > uint64(lim.MaxRatio)) {
			return nil, bad("%q expands %d× (limit %d×): refused as a zip bomb", name, usize/max(zf.CompressedSize64, 1), lim.MaxRatio)
		}
		if len(out) >= lim.MaxFiles {
			return nil, bad("bundle has more than %d files", lim.MaxFiles)
		}
		perm := uint32(mode.Perm())
		if perm&0o111 != 0 {
			perm = 0o755
		} else {
			perm = 0o644
		}
		out = append(out, &Entry{Path: name, Mode: perm, zf: zf, lim: lim})
	}
	if len(out) == 0 {
		return nil, bad("bundle has no files")
	}
	sortEntries(out)
	for i := 1; i < len(out); i++ {
		if strings.HasPrefix(out[i].Path, out[i-1].Path+"/") {
			return nil, bad("%q is both a file and a folder", out[i-1].Path)
		}
	}
	// A folder path may be listed after a file of the same name.
	for i := range out {
		if seen[path.Dir(out[i].Path)] {
			return nil, bad("%q is both a file and a folder", path.Dir(out[i].Path))
		}
	}
	return out, nil
}

func checkPath(name string) error {
	if err := release.ValidatePath(name); err != nil {
		return bad("entry %q: %s", name, strings.TrimPrefix(err.Error(), release.ErrInvalid.Error()+": "))
	}
	return nil
}

func sortEntries(es []*Entry) {
	sort.Slice(es, func(i, j int) bool { return es[i].Path < es[j].Path })
}

// Hash returns the SHA-256 of r's content and its length.
func Hash(r io.Reader) (release.Hash, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var out release.Hash
	h.Sum(out[:0])
	return out, n, err
}

// Manifest returns the manifest a bundle yields for a release: app,
// version and minimum native version as given, and for every entry its
// path and mode from the zip and its size and SHA-256 from its content, in
// path order. CI signs (the release document of) this manifest and the
// origin recomputes it from the zip it receives and accepts the upload only
// if the two are equal, so both build it here.
//
// store reads one entry's content and returns its SHA-256 and length: the
// origin stores the content as it hashes it; nil only hashes it. An error
// from store is returned as is; a damaged entry is ErrBadBundle.
func Manifest(ctx context.Context, entries []*Entry, app, version, minNative string, store func(*Entry, io.Reader) (release.Hash, int64, error)) (*release.Manifest, error) {
	if store == nil {
		store = func(_ *Entry, r io.Reader) (release.Hash, int64, error) { return Hash(r) }
	}
	m := &release.Manifest{Type: release.TypeRelease, App: app, Version: version, MinNative: minNative,
		Files: make([]release.File, 0, len(entries))}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rc, err := e.Open()
		if err != nil {
			return nil, err
		}
		h, n, err := store(e, rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
		m.Files = append(m.Files, release.File{Path: e.Path, Size: n, Mode: e.Mode, SHA256: h})
	}
	return m, nil
}
