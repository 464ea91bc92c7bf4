package delta

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/capstan-ota/capstan/delta/bsdiff40"
	"github.com/capstan-ota/capstan/release"
)

// BaseFiles gives Apply the files of the installed base release by path.
// If a returned reader also implements io.ReaderAt (an *os.File does),
// delta records read it in place; otherwise Apply reads the file into
// memory, bounded by ApplyConfig.MaxFileSize. Apply closes what it opens.
// Open must return an error wrapping fs.ErrNotExist for a missing file.
type BaseFiles interface {
	Open(path string) (io.ReadCloser, error)
}

// NoBase is the BaseFiles of a device with nothing installed: every Open
// fails. Use it (with release.ZeroHash as base ID) to apply a full bundle.
type NoBase struct{}

var _ BaseFiles = NoBase{}

// Open always fails with fs.ErrNotExist.
func (NoBase) Open(p string) (io.ReadCloser, error) {
	return nil, fmt.Errorf("delta: no base release: %s: %w", p, fs.ErrNotExist)
}

// ApplyStats describes an applied patch.
type ApplyStats struct {
	Files    int // files written
	Copies   int // copied from a base file
	Dups     int // copied from an earlier target file
	Deltas   int // rebuilt from a Capstan delta
	BSDiffs  int // rebuilt from a BSDIFF40 payload
	Literals int // taken from the patch as is
	Linked   int // copies made as hard links (ApplyConfig.LinkCopies)

	// PatchBytes is what Apply read from the patch; Written the bytes of
	// files it wrote.
	PatchBytes, Written int64
}

// Apply reads a patch stream and writes every file of target into dir, a
// fresh, empty staging folder that must exist. It first checks the header's
// base and target IDs against baseID and targetID, then writes each file
// with its manifest mode, creating subfolders, and checks each file's size
// and SHA-256 against target before returning nil. Sizes come from the
// signed target manifest, never from the patch, and every allocation is
// bounded by them and by cfg. Paths are validated and written through an
// os.Root, so nothing is written outside dir, and existing entries
// (symlinks included) are never followed or overwritten. On error dir holds
// a partial release and must be discarded. Apply checks ctx between files.
func Apply(ctx context.Context, cfg ApplyConfig, patch io.Reader, base BaseFiles, baseID release.Hash, target *release.Manifest, targetID release.Hash, dir string) (ApplyStats, error) {
	var st ApplyStats
	if err := cfg.normalize(); err != nil {
		return st, err
	}
	if target == nil {
		return st, fmt.Errorf("%w: nil target", ErrBadManifest)
	}
	if err := target.Validate(); err != nil {
		return st, fmt.Errorf("%w: target: %v", ErrBadManifest, err)
	}
	if base == nil {
		base = NoBase{}
	}
	var total int64
	for _, f := range target.Files {
		if f.Size > cfg.MaxFileSize {
			return st, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, f.Path, f.Size, cfg.MaxFileSize)
		}
		total += f.Size
	}
	if total > cfg.MaxTotalSize {
		return st, fmt.Errorf("%w: release is %d bytes, limit %d", ErrTooLarge, total, cfg.MaxTotalSize)
	}

	cr := &countReader{r: patch}
	hb := make([]byte, headerSize)
	if _, err := io.ReadFull(cr, hb); err != nil {
		return st, fmt.Errorf("%w: reading header: %v", ErrCorruptPatch, truncated(err))
	}
	h, err := parseHeader(hb)
	if err != nil {
		return st, err
	}
	if h.base != baseID {
		return st, fmt.Errorf("%w: patch base %s, installed %s", ErrWrongBase, h.base, baseID)
	}
	if h.target != targetID {
		return st, fmt.Errorf("%w: patch target %s, wanted %s", ErrWrongTarget, h.target, targetID)
	}
	if int(h.files) != len(target.Files) {
		return st, fmt.Errorf("%w: header says %d files, manifest has %d", ErrCorruptPatch, h.files, len(target.Files))
	}

	root, err := os.OpenRoot(dir)
	if err != nil {
		return st, fmt.Errorf("delta: open staging folder: %w", err)
	}
	defer root.Close()

	a := &applier{
		ctx:    ctx,
		dir:    dir,
		cfg:    &cfg,
		b:      &body{r: bufio.NewReaderSize(nil, 32<<10)},
		base:   base,
		root:   root,
		target: target,
		done:   make([]bool, len(target.Files)),
		dirs:   map[string]bool{},
		// 256 KiB scratch buffers: measured, 32 KiB made Apply spend most
		// of its time in read and write system calls.
		buf: make([]byte, 256<<10),
		ob:  make([]byte, 256<<10),
		st:  &st,
	}
	raw := bufio.NewReaderSize(cr, 32<<10)
	var zr *zstd.Decoder
	defer func() {
		if zr != nil {
			zr.Close()
		}
	}()
	for {
		codec, err := raw.ReadByte()
		if err != nil {
			return st, fmt.Errorf("%w: reading frame: %v", ErrCorruptPatch, truncated(err))
		}
		if codec == frameEnd {
			break
		}
		chunks := &chunkReader{r: raw}
		var dec io.Reader
		switch codec {
		case codecZstd:
			if zr == nil {
				zr, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
					zstd.WithDecoderMaxWindow(uint64(cfg.MaxWindow)))
				if err != nil {
					return st, fmt.Errorf("delta: zstd: %w", err)
				}
			}
			if err := zr.Reset(chunks); err != nil {
				return st, fmt.Errorf("%w: zstd frame: %v", ErrCorruptPatch, err)
			}
			dec = zr
		case codecBrotli:
			// Without the large-window extension brotli windows stop at 16 MiB.
			dec = brotli.NewReader(chunks)
		case codecNone:
			dec = chunks
		default:
			return st, fmt.Errorf("%w: frame codec %d", ErrUnsupportedVersion, codec)
		}
		a.b.r.Reset(dec)
		for {
			if err := ctx.Err(); err != nil {
				return st, fmt.Errorf("delta: apply: %w", err)
			}
			kind, err := a.b.r.ReadByte()
			if err == io.EOF {
				break
			}
			if err != nil {
				return st, fmt.Errorf("%w: reading record: %v", ErrCorruptPatch, err)
			}
			if err := a.record(kind); err != nil {
				st.PatchBytes = cr.n
				return st, err
			}
		}
		// The codec stopped: its frame must stop exactly here too.
		if n, err := chunks.Read(a.buf[:1]); n != 0 || err != io.EOF {
			return st, fmt.Errorf("%w: data after the end of a frame", ErrCorruptPatch)
		}
	}
	if _, err := raw.ReadByte(); err != io.EOF {
		return st, fmt.Errorf("%w: data after the end of the stream", ErrCorruptPatch)
	}
	for i, d := range a.done {
		if !d {
			return st, fmt.Errorf("%w: no record for %s", ErrCorruptPatch, target.Files[i].Path)
		}
	}
	st.PatchBytes = cr.n
	return st, nil
}

// applier is the state of one Apply call.
type applier struct {
	ctx     context.Context
	dir     string // the staging folder, for hard links
	cfg     *ApplyConfig
	b       *body
	base    BaseFiles
	root    *os.Root
	target  *release.Manifest
	done    []bool
	dirs    map[string]bool // folders made and checked
	buf, ob []byte          // scratch: decoded bytes and old bytes
	ctls    []ctl
	st      *ApplyStats
}

// ctl is one decoded delta op.
type ctl struct {
	diff, extra, seek int64
}

// record applies one record whose kind byte has been read.
func (a *applier) record(kind byte) error {
	if kind > recBSDiff {
		return fmt.Errorf("%w: unknown record kind %d", ErrCorruptPatch, kind)
	}
	if len(a.target.Files) == 0 {
		return fmt.Errorf("%w: file record in a release without files", ErrCorruptPatch)
	}
	idx, err := a.b.uvarint(uint64(len(a.target.Files)-1), "file index")
	if err != nil {
		return err
	}
	if a.done[idx] {
		return fmt.Errorf("%w: second record for file %d", ErrCorruptPatch, idx)
	}
	f := a.target.Files[idx]
	if dir := path.Dir(f.Path); dir != "." {
		if err := a.mkdir(dir); err != nil {
			return err
		}
	}
	var basePath string
	if kind == recCopy {
		if basePath, err = a.b.path("base path"); err != nil {
			return err
		}
		if ok, err := a.link(basePath, f); ok || err != nil {
			if err == nil {
				a.done[idx] = true
				a.st.Files++
				a.st.Copies++
				a.st.Linked++
			}
			return err
		}
	}
	// O_EXCL: never follow or overwrite anything already there.
	fh, err := a.root.OpenFile(f.Path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%w: create %s: %v", ErrUnsafePath, f.Path, err)
	}
	defer fh.Close()
	hs := sha256.New()
	hw := io.MultiWriter(fh, hs)
	switch kind {
	case recCopy:
		err = a.copyBase(hw, basePath, f)
		a.st.Copies++
	case recDup:
		err = a.dup(hw, f, idx)
		a.st.Dups++
	case recLiteral:
		var n int64
		if n, err = io.CopyBuffer(hw, io.LimitReader(a.b.r, f.Size), a.buf); err == nil && n < f.Size {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			err = fmt.Errorf("%w: literal %s: %v", ErrCorruptPatch, f.Path, err)
		}
		a.st.Literals++
	case recDelta:
		hs = nil // written out of order; hashed from the file below
		err = a.delta(fh, f)
		a.st.Deltas++
	case recBSDiff:
		err = a.bsdiff(hw, f)
		a.st.BSDiffs++
	default:
		err = fmt.Errorf("%w: record kind %d", ErrCorruptPatch, kind)
	}
	if err != nil {
		return err
	}
	if err := verify(fh, f, hs, a.buf); err != nil {
		return err
	}
	if err := fh.Chmod(fs.FileMode(f.Mode)); err != nil {
		return fmt.Errorf("delta: chmod %s: %w", f.Path, err)
	}
	if a.cfg.Sync {
		if err := fh.Sync(); err != nil {
			return fmt.Errorf("delta: sync %s: %w", f.Path, err)
		}
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("delta: close %s: %w", f.Path, err)
	}
	a.done[idx] = true
	a.st.Files++
	a.st.Written += f.Size
	return nil
}

// mkdir creates folder dir (and its parents) and refuses any of them that
// is a symlink. os.Root already keeps every write inside the staging
// folder; this also keeps a planted link from redirecting files within it.
func (a *applier) mkdir(dir string) error {
	if a.dirs[dir] {
		return nil
	}
	if err := a.root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%w: create folder %s: %v", ErrUnsafePath, dir, err)
	}
	for d := dir; d != "."; d = path.Dir(d) {
		fi, err := a.root.Lstat(d)
		if err != nil {
			return fmt.Errorf("%w: folder %s: %v", ErrUnsafePath, d, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s is not a folder (a symlink?)", ErrUnsafePath, d)
		}
		a.dirs[d] = true
	}
	return nil
}

// verify checks the written file's size and hash. hs is the running hash of
// what was written, or nil to hash the file from disk.
func verify(fh *os.File, f release.File, hs hash.Hash, buf []byte) error {
	fi, err := fh.Stat()
	if err != nil {
		return fmt.Errorf("delta: stat %s: %w", f.Path, err)
	}
	if fi.Size() != f.Size {
		return fmt.Errorf("%w: %s is %d bytes, manifest says %d", ErrVerify, f.Path, fi.Size(), f.Size)
	}
	if hs == nil {
		hs = sha256.New()
		if _, err := io.CopyBuffer(hs, io.NewSectionReader(fh, 0, f.Size), buf); err != nil {
			return fmt.Errorf("delta: read back %s: %w", f.Path, err)
		}
	}
	if release.Hash(hs.Sum(nil)) != f.SHA256 {
		return fmt.Errorf("%w: %s has another SHA-256 than the manifest's", ErrVerify, f.Path)
	}
	return nil
}

// link tries to hard-link base file p as f (ApplyConfig.LinkCopies) and
// verifies the result. It reports false, nil when linking is not possible
// and the caller should copy.
func (a *applier) link(p string, f release.File) (bool, error) {
	l, ok := a.base.(Linker)
	if !a.cfg.LinkCopies || !ok {
		return false, nil
	}
	if err := l.Link(p, fs.FileMode(f.Mode), filepath.Join(a.dir, filepath.FromSlash(f.Path))); err != nil {
		return false, nil // another device, another mode, no support: copy instead
	}
	fh, err := a.root.Open(f.Path)
	if err != nil {
		return false, fmt.Errorf("delta: open linked %s: %w", f.Path, err)
	}
	defer fh.Close()
	if err := verify(fh, f, nil, a.buf); err != nil {
		return false, fmt.Errorf("%w: base file %s: %v", ErrWrongBase, p, err)
	}
	return true, nil
}

// copyExact copies exactly n bytes of src to w; a short or long source is
// reported with sentinel.
func copyExact(w io.Writer, src io.Reader, n int64, buf []byte, sentinel error, what string) error {
	m, err := io.CopyBuffer(w, io.LimitReader(src, n), buf)
	if err != nil {
		return fmt.Errorf("%w: read %s: %v", sentinel, what, err)
	}
	var one [1]byte
	if k, _ := src.Read(one[:]); m != n || k > 0 {
		return fmt.Errorf("%w: %s has another size than expected", sentinel, what)
	}
	return nil
}

func (a *applier) copyBase(w io.Writer, p string, f release.File) error {
	rc, err := a.base.Open(p)
	if err != nil {
		return fmt.Errorf("%w: open base file %s: %v", ErrWrongBase, p, err)
	}
	defer rc.Close()
	return copyExact(w, rc, f.Size, a.buf, ErrWrongBase, "base file "+p)
}

func (a *applier) dup(w io.Writer, f release.File, idx uint64) error {
	src, err := a.b.uvarint(uint64(len(a.target.Files)-1), "duplicate source")
	if err != nil {
		return err
	}
	if src == idx || !a.done[src] {
		return fmt.Errorf("%w: %s duplicates a file not yet written", ErrCorruptPatch, f.Path)
	}
	sf := a.target.Files[src]
	if sf.SHA256 != f.SHA256 || sf.Size != f.Size {
		return fmt.Errorf("%w: %s duplicates a file with other content", ErrCorruptPatch, f.Path)
	}
	rc, err := a.root.Open(sf.Path)
	if err != nil {
		return fmt.Errorf("delta: reopen %s: %w", sf.Path, err)
	}
	defer rc.Close()
	return copyExact(w, rc, f.Size, a.buf, ErrVerify, sf.Path)
}

// openOld opens a base file for random access and checks it has size bytes.
func (a *applier) openOld(p string, size int64) (io.ReaderAt, io.Closer, error) {
	rc, err := a.base.Open(p)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: open base file %s: %v", ErrWrongBase, p, err)
	}
	if ra, ok := rc.(io.ReaderAt); ok {
		if s, ok := rc.(interface{ Stat() (fs.FileInfo, error) }); ok {
			fi, err := s.Stat()
			if err != nil || fi.Size() != size {
				rc.Close()
				return nil, nil, fmt.Errorf("%w: base file %s does not have %d bytes", ErrWrongBase, p, size)
			}
		}
		return ra, rc, nil
	}
	defer rc.Close()
	// Grow with the bytes actually there: size comes from the patch, so
	// allocating it up front would let a patch pick our allocation.
	buf, err := io.ReadAll(io.LimitReader(rc, size+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: read base file %s: %v", ErrWrongBase, p, err)
	}
	if int64(len(buf)) != size {
		return nil, nil, fmt.Errorf("%w: base file %s does not have %d bytes", ErrWrongBase, p, size)
	}
	return bytes.NewReader(buf), io.NopCloser(nil), nil
}

// delta applies a recDelta record into fh, writing out of order.
func (a *applier) delta(fh *os.File, f release.File) error {
	old, oldSize, closers, err := a.sources()
	for _, c := range closers {
		defer c.Close()
	}
	if err != nil {
		return err
	}
	p := "the delta sources"
	var newPos, oldPos int64
	first := true
	for {
		n, err := a.b.uvarint(maxBlockOps, "op count")
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if err := a.ctx.Err(); err != nil {
			return fmt.Errorf("delta: apply: %w", err)
		}
		// Read and check the block's control list before touching bytes.
		a.ctls = a.ctls[:0]
		np, op := newPos, oldPos
		var diffTotal int64
		for range n {
			d, err := a.b.uvarint(uint64(f.Size-np), "diff length")
			if err != nil {
				return err
			}
			e, err := a.b.uvarint(uint64(f.Size-np)-d, "extra length")
			if err != nil {
				return err
			}
			s, err := a.b.varint("seek")
			if err != nil {
				return err
			}
			if d+e == 0 && !first {
				return fmt.Errorf("%w: empty delta op", ErrCorruptPatch)
			}
			first = false
			if int64(d) > oldSize-op {
				return fmt.Errorf("%w: delta reads past the base file", ErrCorruptPatch)
			}
			np += int64(d + e)
			op += int64(d)
			if s < -op || s > oldSize-op {
				return fmt.Errorf("%w: delta seeks outside the base file", ErrCorruptPatch)
			}
			op += s
			diffTotal += int64(d)
			a.ctls = append(a.ctls, ctl{int64(d), int64(e), s})
		}
		// Pass 1: diff bytes, added to the base bytes.
		rle := rleReader{b: a.b, remaining: diffTotal}
		wp, rp := newPos, oldPos
		for _, c := range a.ctls {
			for rem := c.diff; rem > 0; {
				k := min(rem, int64(len(a.buf)))
				if err := rle.read(a.buf[:k]); err != nil {
					return err
				}
				if m, err := old.ReadAt(a.ob[:k], rp); m < int(k) {
					return fmt.Errorf("%w: read base file %s: %v", ErrWrongBase, p, err)
				}
				for i := range k {
					a.buf[i] += a.ob[i]
				}
				if _, err := fh.WriteAt(a.buf[:k], wp); err != nil {
					return fmt.Errorf("delta: write %s: %w", f.Path, err)
				}
				rem -= k
				wp += k
				rp += k
			}
			wp += c.extra
			rp += c.seek
		}
		if rle.remaining != 0 || rle.zeros != 0 || rle.lits != 0 {
			return fmt.Errorf("%w: diff runs overrun the block", ErrCorruptPatch)
		}
		// Pass 2: extra bytes.
		wp = newPos
		for _, c := range a.ctls {
			wp += c.diff
			for rem := c.extra; rem > 0; {
				k := min(rem, int64(len(a.buf)))
				if _, err := io.ReadFull(a.b.r, a.buf[:k]); err != nil {
					return fmt.Errorf("%w: reading extra bytes: %v", ErrCorruptPatch, truncated(err))
				}
				if _, err := fh.WriteAt(a.buf[:k], wp); err != nil {
					return fmt.Errorf("delta: write %s: %w", f.Path, err)
				}
				rem -= k
				wp += k
			}
		}
		newPos, oldPos = np, op
	}
	if newPos != f.Size {
		return fmt.Errorf("%w: delta for %s makes %d bytes, manifest says %d", ErrCorruptPatch, f.Path, newPos, f.Size)
	}
	return nil
}

// sources reads a delta's source list and opens the sources as one
// virtual old file.
func (a *applier) sources() (io.ReaderAt, int64, []io.Closer, error) {
	n, err := a.b.uvarint(maxSources, "source count")
	if err != nil {
		return nil, 0, nil, err
	}
	if n == 0 {
		return nil, 0, nil, fmt.Errorf("%w: delta without sources", ErrCorruptPatch)
	}
	var (
		parts   multiReaderAt
		closers []io.Closer
	)
	for range n {
		kind, err := a.b.r.ReadByte()
		if err != nil {
			return nil, 0, closers, fmt.Errorf("%w: reading source: %v", ErrCorruptPatch, truncated(err))
		}
		var (
			ra   io.ReaderAt
			c    io.Closer
			size int64
		)
		switch kind {
		case srcBase:
			p, err := a.b.path("base path")
			if err != nil {
				return nil, 0, closers, err
			}
			s, err := a.b.uvarint(uint64(a.cfg.MaxFileSize), "base size")
			if err != nil {
				return nil, 0, closers, err
			}
			size = int64(s)
			ra, c, err = a.openOld(p, size)
			if err != nil {
				return nil, 0, closers, err
			}
		case srcTarget:
			i, err := a.b.uvarint(uint64(len(a.target.Files)-1), "source file index")
			if err != nil {
				return nil, 0, closers, err
			}
			if !a.done[i] {
				return nil, 0, closers, fmt.Errorf("%w: delta source %d is not written yet", ErrCorruptPatch, i)
			}
			sf := a.target.Files[i]
			fh, err := a.root.Open(sf.Path)
			if err != nil {
				return nil, 0, closers, fmt.Errorf("delta: reopen %s: %w", sf.Path, err)
			}
			ra, c, size = fh, fh, sf.Size
		default:
			return nil, 0, closers, fmt.Errorf("%w: source kind %d", ErrCorruptPatch, kind)
		}
		closers = append(closers, c)
		parts = append(parts, part{ra: ra, off: parts.size(), size: size})
	}
	if len(parts) == 1 {
		return parts[0].ra, parts[0].size, closers, nil
	}
	return parts, parts.size(), closers, nil
}

// multiReaderAt reads the concatenation of its parts.
type multiReaderAt []part

type part struct {
	ra        io.ReaderAt
	off, size int64
}

func (m multiReaderAt) size() int64 {
	if len(m) == 0 {
		return 0
	}
	l := m[len(m)-1]
	return l.off + l.size
}

// ReadAt reads len(p) bytes at off; callers keep reads within size().
func (m multiReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for _, pt := range m {
		if len(p) == 0 {
			break
		}
		if off >= pt.off+pt.size {
			continue
		}
		k := min(int64(len(p)), pt.off+pt.size-off)
		got, err := pt.ra.ReadAt(p[:k], off-pt.off)
		n += got
		if int64(got) < k {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		p, off = p[k:], off+k
	}
	if len(p) > 0 {
		return n, io.EOF
	}
	return n, nil
}

// bsdiff applies a recBSDiff record with the hardened BSDIFF40 patcher.
func (a *applier) bsdiff(w io.Writer, f release.File) error {
	p, err := a.b.path("base path")
	if err != nil {
		return err
	}
	baseSize, err := a.b.uvarint(uint64(a.cfg.MaxFileSize), "base size")
	if err != nil {
		return err
	}
	// bzip2 never grows data by more than about 1 %, so a payload is below
	// twice the new file plus a little; anything bigger is not a patch.
	n, err := a.b.uvarint(uint64(2*f.Size+1<<20), "bsdiff payload length")
	if err != nil {
		return err
	}
	// Grow with the bytes actually present rather than trusting n.
	payload, err := io.ReadAll(io.LimitReader(a.b.r, int64(n)))
	if err != nil || uint64(len(payload)) != n {
		return fmt.Errorf("%w: reading bsdiff payload: truncated", ErrCorruptPatch)
	}
	old, closer, err := a.openOld(p, int64(baseSize))
	if err != nil {
		return err
	}
	defer closer.Close()
	err = bsdiff40.Patch(old, int64(baseSize), bytes.NewReader(payload), int64(n), f.Size, w)
	if errors.Is(err, bsdiff40.ErrCorrupt) || errors.Is(err, bsdiff40.ErrSize) {
		return fmt.Errorf("%w: %s: %v", ErrCorruptPatch, f.Path, err)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrWrongBase, f.Path, err)
	}
	return nil
}

// countReader counts bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Linker is implemented by a BaseFiles that can hard-link a base file into
// the staging folder instead of copying it (Dir does). Apply uses it for
// copy records when ApplyConfig.LinkCopies is set.
type Linker interface {
	// Link makes newPath, which does not exist, a hard link to base file p.
	// It fails unless p is a regular file with permission bits mode:
	// linked files share their inode, so Apply cannot chmod them.
	Link(p string, mode fs.FileMode, newPath string) error
}

// Dir is a BaseFiles backed by a folder, opened through an os.Root so that
// no path (and no symlink inside the folder) reaches outside it.
type Dir struct {
	root *os.Root
	dir  string // absolute path of the folder, for Link
}

var (
	_ BaseFiles = (*Dir)(nil)
	_ Linker    = (*Dir)(nil)
)

// OpenDir opens folder dir as a BaseFiles. Close it when done.
func OpenDir(dir string) (*Dir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("delta: open base folder: %w", err)
	}
	r, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("delta: open base folder: %w", err)
	}
	return &Dir{root: r, dir: abs}, nil
}

// Link hard-links base file p to newPath (see Linker).
func (d *Dir) Link(p string, mode fs.FileMode, newPath string) error {
	if err := release.ValidatePath(p); err != nil {
		return fmt.Errorf("%w: %v", ErrUnsafePath, err)
	}
	fi, err := d.root.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != mode {
		return fmt.Errorf("delta: %s is not a regular file with mode %o", p, mode)
	}
	return os.Link(filepath.Join(d.dir, filepath.FromSlash(p)), newPath)
}

// Open opens the file at the bundle-relative path p; it returns an
// *os.File, which Apply reads in place.
func (d *Dir) Open(p string) (io.ReadCloser, error) {
	if err := release.ValidatePath(p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsafePath, err)
	}
	f, err := d.root.Open(p)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Close releases the folder.
func (d *Dir) Close() error { return d.root.Close() }
