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

// ApplyStats describes an applied patch.
type ApplyStats struct {
	Files    int // files written
	Copies   int // copied from a base file
	Dups     int // copied from an earlier target file
	Deltas   int // rebuilt from a Capstan delta
	BSDiffs  int // rebuilt from a BSDIFF40 payload
	Literals int // taken from the patch as is

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
		cfg:    &cfg,
		b:      &body{r: bufio.NewReaderSize(nil, 32<<10)},
		base:   base,
		root:   root,
		target: target,
		done:   make([]bool, len(target.Files)),
		buf:    make([]byte, 32<<10),
		ob:     make([]byte, 32<<10),
		st:     &st,
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
	cfg     *ApplyConfig
	b       *body
	base    BaseFiles
	root    *os.Root
	target  *release.Manifest
	done    []bool
	buf, ob []byte // scratch: decoded bytes and old bytes
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
		if err := a.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("%w: create folder for %s: %v", ErrUnsafePath, f.Path, err)
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
		err = a.copyBase(hw, f)
		a.st.Copies++
	case recDup:
		err = a.dup(hw, f, idx)
		a.st.Dups++
	case recLiteral:
		if _, err = io.CopyN(hw, a.b.r, f.Size); err != nil {
			err = fmt.Errorf("%w: literal %s: %v", ErrCorruptPatch, f.Path, truncated(err))
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
	if err := verify(fh, f, hs); err != nil {
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

// verify checks the written file's size and hash. hs is the running hash of
// what was written, or nil to hash the file from disk.
func verify(fh *os.File, f release.File, hs hash.Hash) error {
	fi, err := fh.Stat()
	if err != nil {
		return fmt.Errorf("delta: stat %s: %w", f.Path, err)
	}
	if fi.Size() != f.Size {
		return fmt.Errorf("%w: %s is %d bytes, manifest says %d", ErrVerify, f.Path, fi.Size(), f.Size)
	}
	if hs == nil {
		hs = sha256.New()
		if _, err := io.Copy(hs, io.NewSectionReader(fh, 0, f.Size)); err != nil {
			return fmt.Errorf("delta: read back %s: %w", f.Path, err)
		}
	}
	if release.Hash(hs.Sum(nil)) != f.SHA256 {
		return fmt.Errorf("%w: %s has another SHA-256 than the manifest's", ErrVerify, f.Path)
	}
	return nil
}

// copyN copies exactly n bytes of src to w; a short or long source is
// reported with sentinel.
func copyExact(w io.Writer, src io.Reader, n int64, sentinel error, what string) error {
	m, err := io.Copy(w, io.LimitReader(src, n))
	if err != nil {
		return fmt.Errorf("%w: read %s: %v", sentinel, what, err)
	}
	var one [1]byte
	if k, _ := src.Read(one[:]); m != n || k > 0 {
		return fmt.Errorf("%w: %s has another size than expected", sentinel, what)
	}
	return nil
}

func (a *applier) copyBase(w io.Writer, f release.File) error {
	p, err := a.b.path("base path")
	if err != nil {
		return err
	}
	rc, err := a.base.Open(p)
	if err != nil {
		return fmt.Errorf("%w: open base file %s: %v", ErrWrongBase, p, err)
	}
	defer rc.Close()
	return copyExact(w, rc, f.Size, ErrWrongBase, "base file "+p)
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
	return copyExact(w, rc, f.Size, ErrVerify, sf.Path)
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
	buf := make([]byte, size)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, nil, fmt.Errorf("%w: read base file %s: %v", ErrWrongBase, p, err)
	}
	var one [1]byte
	if k, _ := rc.Read(one[:]); k > 0 {
		return nil, nil, fmt.Errorf("%w: base file %s does not have %d bytes", ErrWrongBase, p, size)
	}
	return bytes.NewReader(buf), io.NopCloser(nil), nil
}

// delta applies a recDelta record into fh, writing out of order.
func (a *applier) delta(fh *os.File, f release.File) error {
	p, err := a.b.path("base path")
	if err != nil {
		return err
	}
	baseSize, err := a.b.uvarint(uint64(a.cfg.MaxFileSize), "base size")
	if err != nil {
		return err
	}
	old, closer, err := a.openOld(p, int64(baseSize))
	if err != nil {
		return err
	}
	defer closer.Close()
	oldSize := int64(baseSize)
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
	payload := make([]byte, n)
	if _, err := io.ReadFull(a.b.r, payload); err != nil {
		return fmt.Errorf("%w: reading bsdiff payload: %v", ErrCorruptPatch, truncated(err))
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

// Dir is a BaseFiles backed by a folder, opened through an os.Root so that
// no path (and no symlink inside the folder) reaches outside it.
type Dir struct {
	root *os.Root
}

var _ BaseFiles = (*Dir)(nil)

// OpenDir opens folder dir as a BaseFiles. Close it when done.
func OpenDir(dir string) (*Dir, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("delta: open base folder: %w", err)
	}
	return &Dir{root: r}, nil
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
