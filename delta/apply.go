package delta

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sync"

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
	Files    int // files in the target
	Kept     int // base files kept where they were (no record)
	Copies   int // copied from a base file
	Dups     int // copied from an earlier target file
	Deltas   int // rebuilt from a Capstan delta
	BSDiffs  int // rebuilt from a BSDIFF40 payload
	Literals int // taken from the patch as is
	Linked   int // kept or copied files made as hard links (ApplyConfig.LinkCopies)

	// PatchBytes is what Apply read from the patch; Written the bytes of
	// files it wrote from the patch (kept and linked files excluded).
	PatchBytes, Written int64
}

// Base is the installed release a patch starts from.
type Base struct {
	// ID is the release ID; zero for a device with nothing installed.
	ID release.Hash
	// Files is the release's verified file list, sorted by path
	// (release.Manifest.Files); patch records name base files by their
	// index in it.
	Files []release.File
	// Dir reads the installed files; nil means none (NoBase).
	Dir BaseFiles
}

// Target is what the signed release document says of the release a patch
// must produce: its ID and its file set.
type Target struct {
	ID    release.Hash
	Files release.FileSet
}

// Apply reads a patch stream and writes every file of the target release
// into dir, a fresh, empty staging folder that must exist: the base files
// the patch keeps (hard-linked or copied from base.Dir, and hashed) and one
// file per record. It returns the target's file list, sorted, after
// checking it against target.Files: the file count, the total size and the
// SHA-256 of the canonical list, which covers every path, size, mode and
// the SHA-256 of every file it wrote. Nothing in the patch is trusted: every
// size is bounded by what the signed file set leaves and by cfg before
// anything is allocated. Paths are validated and written through an
// os.Root, so nothing is written outside dir, and existing entries
// (symlinks included) are never followed or overwritten. On error dir holds
// a partial release and must be discarded. Apply checks ctx between files.
func Apply(ctx context.Context, cfg ApplyConfig, patch io.Reader, base Base, target Target, dir string) ([]release.File, ApplyStats, error) {
	var st ApplyStats
	if err := cfg.normalize(); err != nil {
		return nil, st, err
	}
	if target.Files.Count < 0 || target.Files.Count > release.MaxFiles || target.Files.Size < 0 {
		return nil, st, fmt.Errorf("%w: target file set %+v", ErrBadManifest, target.Files)
	}
	if target.Files.Size > cfg.MaxTotalSize {
		return nil, st, fmt.Errorf("%w: release is %d bytes, limit %d", ErrTooLarge, target.Files.Size, cfg.MaxTotalSize)
	}
	if base.Dir == nil {
		base.Dir = NoBase{}
	}
	if len(base.Files) > release.MaxFiles {
		return nil, st, fmt.Errorf("%w: base has %d files", ErrBadManifest, len(base.Files))
	}

	cr := &countReader{r: patch}
	hb := make([]byte, headerSize)
	if _, err := io.ReadFull(cr, hb); err != nil {
		if h, perr := parseHeader(hb); perr != nil && h.version != 0 {
			return nil, st, perr // an old or unknown format is shorter than this header
		}
		return nil, st, fmt.Errorf("%w: reading header: %v", ErrCorruptPatch, truncated(err))
	}
	h, err := parseHeader(hb)
	if err != nil {
		return nil, st, err
	}
	if baseOK, targetOK := h.matches(base.ID, target.ID); !baseOK {
		return nil, st, fmt.Errorf("%w: the patch starts from %x…, the device has %s", ErrWrongBase, h.base, base.ID)
	} else if !targetOK {
		return nil, st, fmt.Errorf("%w: the patch makes %x…, wanted %s", ErrWrongTarget, h.target, target.ID)
	}

	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, st, fmt.Errorf("delta: open staging folder: %w", err)
	}
	defer root.Close()

	a := &applier{
		ctx:     ctx,
		dir:     dir,
		cfg:     &cfg,
		b:       &body{r: bufio.NewReaderSize(nil, 32<<10)},
		base:    base,
		root:    root,
		target:  target.Files,
		dropped: make([]bool, len(base.Files)),
		paths:   map[string]bool{},
		dirs:    map[string]bool{},
		// 256 KiB scratch buffers: measured, 32 KiB made Apply spend most
		// of its time in read and write system calls.
		buf: make([]byte, 256<<10),
		ob:  make([]byte, 256<<10),
		st:  &st,
	}
	// Hashers still running when Apply fails hold files of the staging
	// folder: they finish before Apply returns.
	defer a.hashing.Wait()
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
			return nil, st, fmt.Errorf("%w: reading frame: %v", ErrCorruptPatch, truncated(err))
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
					return nil, st, fmt.Errorf("delta: zstd: %w", err)
				}
			}
			if err := zr.Reset(chunks); err != nil {
				return nil, st, fmt.Errorf("%w: zstd frame: %v", ErrCorruptPatch, err)
			}
			dec = zr
		case codecBrotli:
			// Without the large-window extension brotli windows stop at 16 MiB.
			dec = brotli.NewReader(chunks)
		case codecNone:
			dec = chunks
		default:
			return nil, st, fmt.Errorf("%w: frame codec %d", ErrUnsupportedVersion, codec)
		}
		a.b.r.Reset(dec)
		for {
			if err := ctx.Err(); err != nil {
				return nil, st, fmt.Errorf("delta: apply: %w", err)
			}
			kind, err := a.b.r.ReadByte()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, st, fmt.Errorf("%w: reading record: %v", ErrCorruptPatch, err)
			}
			if err := a.record(kind); err != nil {
				st.PatchBytes = cr.n
				return nil, st, err
			}
		}
		// The codec stopped: its frame must stop exactly here too.
		if n, err := chunks.Read(a.buf[:1]); n != 0 || err != io.EOF {
			return nil, st, fmt.Errorf("%w: data after the end of a frame", ErrCorruptPatch)
		}
	}
	if _, err := raw.ReadByte(); err != io.EOF {
		return nil, st, fmt.Errorf("%w: data after the end of the stream", ErrCorruptPatch)
	}
	st.PatchBytes = cr.n
	if !a.dropSet {
		a.startFiles()
	}
	if err := a.keepBase(); err != nil {
		return nil, st, err
	}
	if err := a.settleSums(); err != nil {
		return nil, st, err
	}
	files := append(a.written, a.kept...)
	release.SortFiles(files)
	if got := release.FileSetOf(files); got != target.Files {
		if got.Count != target.Files.Count || got.Size != target.Files.Size {
			return nil, st, fmt.Errorf("%w: the patch made %d files of %d bytes, the release has %d files of %d bytes",
				ErrVerify, got.Count, got.Size, target.Files.Count, target.Files.Size)
		}
		return nil, st, fmt.Errorf("%w: the files made (paths, modes or contents) are not the release's file list", ErrVerify)
	}
	st.Files = len(files)
	return files, st, nil
}

// applier is the state of one Apply call.
type applier struct {
	ctx        context.Context
	dir        string // the staging folder, for hard links
	cfg        *ApplyConfig
	b          *body
	base       Base
	root       *os.Root
	target     release.FileSet
	dropped    []bool          // base files the patch dropped (by index)
	dropSet    bool            // the drop list is known (read, or a file record came first)
	keptSize   int64           // bytes of the base files kept
	maxRecords int             // file records the release has room for
	written    []release.File  // files written from records, by ordinal
	kept       []release.File  // base files kept, after the records
	size       int64           // bytes of the files written so far
	paths      map[string]bool // paths written
	dirs       map[string]bool // folders made and checked
	buf, ob    []byte          // scratch: decoded bytes and old bytes
	ctls       []ctl
	st         *ApplyStats
	// Written files hashed off the decoding goroutine (hashLater).
	hashing   sync.WaitGroup
	hashSlots chan struct{}
	lateMu    sync.Mutex // guards late
	late      []lateSum
}

// ctl is one decoded delta op.
type ctl struct {
	diff, extra, seek int64
}

// record applies one record whose kind byte has been read.
func (a *applier) record(kind byte) error {
	if kind == recDrop {
		return a.drop()
	}
	if kind == 0 || kind > recBSDiff {
		return fmt.Errorf("%w: unknown record kind %d", ErrCorruptPatch, kind)
	}
	if !a.dropSet {
		a.startFiles()
	}
	if len(a.written) >= a.maxRecords {
		return fmt.Errorf("%w: more files than the release's %d", ErrCorruptPatch, a.target.Count)
	}
	p, err := a.b.path("file path")
	if err != nil {
		return err
	}
	if a.paths[p] {
		return fmt.Errorf("%w: second record for %s", ErrCorruptPatch, p)
	}
	mode, err := a.b.uvarint(0o777, "file mode")
	if err != nil {
		return err
	}
	f := release.File{Path: p, Mode: uint32(mode)}
	left := a.target.Size - a.keptSize - a.size
	if left < 0 {
		return fmt.Errorf("%w: the kept base files alone are larger than the release", ErrCorruptPatch)
	}
	var baseIdx, dupIdx uint64
	switch kind {
	case recCopy:
		if baseIdx, err = a.baseIndex("copy source"); err != nil {
			return err
		}
		f.Size = a.base.Files[baseIdx].Size
	case recDup:
		if dupIdx, err = a.ordinal("duplicate source"); err != nil {
			return err
		}
		f.Size = a.written[dupIdx].Size
	default:
		n, err := a.b.uvarint(uint64(left), "file size")
		if err != nil {
			return err
		}
		f.Size = int64(n)
	}
	if f.Size > left {
		return fmt.Errorf("%w: %s would take the release past its %d bytes", ErrCorruptPatch, p, a.target.Size)
	}
	if f.Size > a.cfg.MaxFileSize {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, p, f.Size, a.cfg.MaxFileSize)
	}
	if dir := path.Dir(p); dir != "." {
		if err := a.mkdir(dir); err != nil {
			return err
		}
	}
	if kind == recCopy {
		bf := a.base.Files[baseIdx]
		if ok, err := a.link(bf, f); ok || err != nil {
			if err == nil {
				a.st.Copies++
				a.st.Linked++
				a.wrote(f, bf.SHA256, false)
			}
			return err
		}
	}
	// O_EXCL: never follow or overwrite anything already there.
	fh, err := a.root.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%w: create %s: %v", ErrUnsafePath, p, err)
	}
	handedOff := false // a delta's file goes on to its hasher
	defer func() {
		if !handedOff {
			fh.Close()
		}
	}()
	hs := sha256.New()
	hw := io.MultiWriter(fh, hs)
	switch kind {
	case recCopy:
		err = a.copyBase(hw, a.base.Files[baseIdx])
		a.st.Copies++
	case recDup:
		err = a.dup(hw, a.written[dupIdx])
		a.st.Dups++
	case recLiteral:
		var n int64
		if n, err = io.CopyBuffer(hw, io.LimitReader(a.b.r, f.Size), a.buf); err == nil && n < f.Size {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			err = fmt.Errorf("%w: literal %s: %v", ErrCorruptPatch, p, err)
		}
		a.st.Literals++
	case recDelta:
		hs = nil // written out of order; hashed from the file below
		err = a.delta(fh, f)
		a.st.Deltas++
	case recBSDiff:
		err = a.bsdiff(hw, f)
		a.st.BSDiffs++
	}
	if err != nil {
		return err
	}
	if kind == recDelta {
		// A delta writes its file out of order, so it is hashed by reading
		// it back: on another goroutine, while the next records decode.
		// Its sum is checked with every other one at the end of Apply.
		if err := fh.Chmod(fs.FileMode(f.Mode)); err != nil {
			return fmt.Errorf("delta: chmod %s: %w", p, err)
		}
		if a.cfg.Sync {
			if err := fh.Sync(); err != nil {
				return fmt.Errorf("delta: sync %s: %w", p, err)
			}
		} else if a.cfg.StartWriteback {
			startWriteback(fh)
		}
		handedOff = true
		a.hashLater(len(a.written), fh, f)
		a.wrote(f, release.Hash{}, true)
		return nil
	}
	sum, err := hashWritten(fh, f, hs, a.buf)
	if err != nil {
		return err
	}
	if kind == recCopy && sum != a.base.Files[baseIdx].SHA256 {
		return fmt.Errorf("%w: base file %s has changed on this device", ErrWrongBase, a.base.Files[baseIdx].Path)
	}
	if err := fh.Chmod(fs.FileMode(f.Mode)); err != nil {
		return fmt.Errorf("delta: chmod %s: %w", p, err)
	}
	if a.cfg.Sync {
		if err := fh.Sync(); err != nil {
			return fmt.Errorf("delta: sync %s: %w", p, err)
		}
	} else if a.cfg.StartWriteback {
		startWriteback(fh)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("delta: close %s: %w", p, err)
	}
	a.wrote(f, sum, true)
	return nil
}

// lateSum is the hash of a written file, computed by hashLater.
type lateSum struct {
	ordinal int
	sum     release.Hash
	err     error
}

// hashLater hashes written file ordinal i (fh, which it closes) on its
// own goroutine, at most GOMAXPROCS at once.
func (a *applier) hashLater(i int, fh *os.File, f release.File) {
	if a.hashSlots == nil {
		a.hashSlots = make(chan struct{}, runtime.GOMAXPROCS(0))
	}
	a.hashSlots <- struct{}{}
	a.hashing.Add(1)
	go func() {
		defer a.hashing.Done()
		defer func() { <-a.hashSlots }()
		defer fh.Close()
		sum, err := hashWritten(fh, f, nil, make([]byte, 64<<10))
		a.lateMu.Lock()
		a.late = append(a.late, lateSum{i, sum, err})
		a.lateMu.Unlock()
	}()
}

// settleSums waits for hashLater and fills in the written files' sums.
func (a *applier) settleSums() error {
	a.hashing.Wait()
	for _, l := range a.late {
		if l.err != nil {
			return l.err
		}
		a.written[l.ordinal].SHA256 = l.sum
	}
	a.late = nil
	return nil
}

// wrote records a finished file record.
func (a *applier) wrote(f release.File, sum release.Hash, counted bool) {
	f.SHA256 = sum
	a.written = append(a.written, f)
	a.paths[f.Path] = true
	a.size += f.Size
	if counted {
		a.st.Written += f.Size
	}
}

// baseIndex reads the index of a base file.
func (a *applier) baseIndex(what string) (uint64, error) {
	if len(a.base.Files) == 0 {
		return 0, fmt.Errorf("%w: %s in a patch without a base", ErrCorruptPatch, what)
	}
	return a.b.uvarint(uint64(len(a.base.Files)-1), what)
}

// ordinal reads the ordinal of a file already written.
func (a *applier) ordinal(what string) (uint64, error) {
	if len(a.written) == 0 {
		return 0, fmt.Errorf("%w: %s before any file was written", ErrCorruptPatch, what)
	}
	return a.b.uvarint(uint64(len(a.written)-1), what)
}

// startFiles fixes, once the drop list is known (it comes first or not at
// all), what the kept base files take of the release's file count and
// size: the file records share the rest.
func (a *applier) startFiles() {
	a.dropSet = true
	kept := 0
	for i, bf := range a.base.Files {
		if !a.dropped[i] {
			kept++
			a.keptSize += bf.Size
		}
	}
	a.maxRecords = max(0, a.target.Count-kept)
}

// drop reads the recDrop record: the base files the target does not keep.
func (a *applier) drop() error {
	if a.dropSet {
		return fmt.Errorf("%w: a list of dropped files after the first file record, or twice", ErrCorruptPatch)
	}
	defer a.startFiles()
	n, err := a.b.uvarint(uint64(len(a.base.Files)), "dropped file count")
	if err != nil {
		return err
	}
	next := uint64(0) // the lowest index the next entry may name
	for range n {
		gap, err := a.b.uvarint(uint64(len(a.base.Files))-next-1, "dropped file")
		if err != nil {
			return err
		}
		i := next + gap
		a.dropped[i] = true
		next = i + 1
	}
	return nil
}

// keepBase places every base file the patch did not drop, unchanged, and
// checks it against the base's file list: a file altered on the device
// fails here with ErrWrongBase (the device then takes the full bundle).
func (a *applier) keepBase() error {
	// Linked files are checked against their hashes after the loop, several
	// at once: reading them back is most of the cost of an update that
	// changes a few files of a large bundle.
	var linked []release.File
	for i, bf := range a.base.Files {
		if a.dropped[i] {
			continue
		}
		if err := a.ctx.Err(); err != nil {
			return fmt.Errorf("delta: apply: %w", err)
		}
		if a.paths[bf.Path] {
			return fmt.Errorf("%w: %s is both kept and written", ErrCorruptPatch, bf.Path)
		}
		if dir := path.Dir(bf.Path); dir != "." {
			if err := a.mkdir(dir); err != nil {
				return err
			}
		}
		if ok := a.linkOnly(bf, bf); ok {
			a.st.Linked++
			linked = append(linked, bf)
		} else {
			fh, err := a.root.OpenFile(bf.Path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("%w: create %s: %v", ErrUnsafePath, bf.Path, err)
			}
			hs := sha256.New()
			err = a.copyBase(io.MultiWriter(fh, hs), bf)
			if err == nil {
				if release.Hash(hs.Sum(nil)) != bf.SHA256 {
					err = fmt.Errorf("%w: base file %s has changed on this device", ErrWrongBase, bf.Path)
				} else if err = fh.Chmod(fs.FileMode(bf.Mode)); err == nil && a.cfg.Sync {
					err = fh.Sync()
				}
			}
			if cerr := fh.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
		a.kept = append(a.kept, bf)
		a.st.Kept++
	}
	return a.verifyLinked(linked)
}

// verifyLinked checks files hard-linked from the base against their
// hashes, on up to GOMAXPROCS goroutines, and reports the first mismatch.
func (a *applier) verifyLinked(files []release.File) error {
	workers := min(len(files), runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for _, f := range files {
			if err := a.verifyLink(f, f, a.buf); err != nil {
				return err
			}
		}
		return nil
	}
	next := make(chan release.File)
	errs := make(chan error, workers)
	for range workers {
		go func() {
			buf := make([]byte, 64<<10)
			var first error
			for f := range next {
				if first == nil && a.ctx.Err() == nil {
					first = a.verifyLink(f, f, buf)
				}
			}
			errs <- first
		}()
	}
	for _, f := range files {
		next <- f
	}
	close(next)
	var err error
	for range workers {
		if e := <-errs; err == nil {
			err = e
		}
	}
	if err == nil && a.ctx.Err() != nil {
		err = fmt.Errorf("delta: apply: %w", a.ctx.Err())
	}
	return err
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

// hashWritten checks the written file's size and returns its SHA-256. hs
// is the running hash of what was written, or nil to hash the file from
// disk.
func hashWritten(fh *os.File, f release.File, hs hash.Hash, buf []byte) (release.Hash, error) {
	fi, err := fh.Stat()
	if err != nil {
		return release.Hash{}, fmt.Errorf("delta: stat %s: %w", f.Path, err)
	}
	if fi.Size() != f.Size {
		return release.Hash{}, fmt.Errorf("%w: %s is %d bytes, its record says %d", ErrCorruptPatch, f.Path, fi.Size(), f.Size)
	}
	if hs == nil {
		hs = sha256.New()
		if _, err := io.CopyBuffer(hs, io.NewSectionReader(fh, 0, f.Size), buf); err != nil {
			return release.Hash{}, fmt.Errorf("delta: read back %s: %w", f.Path, err)
		}
	}
	return release.Hash(hs.Sum(nil)), nil
}

// link tries to hard-link base file bf as f (ApplyConfig.LinkCopies) and
// checks the result against bf's hash. It reports false, nil when linking
// is not possible and the caller should copy.
func (a *applier) link(bf, f release.File) (bool, error) {
	if !a.linkOnly(bf, f) {
		return false, nil
	}
	if err := a.verifyLink(bf, f, a.buf); err != nil {
		return false, err
	}
	return true, nil
}

// linkOnly hard-links base file bf as f, unchecked; false means linking is
// not possible here and the caller should copy.
func (a *applier) linkOnly(bf, f release.File) bool {
	l, ok := a.base.Dir.(Linker)
	if !a.cfg.LinkCopies || !ok {
		return false
	}
	// Another device, another mode, no support: the caller copies instead.
	return l.Link(bf.Path, fs.FileMode(f.Mode), filepath.Join(a.dir, filepath.FromSlash(f.Path))) == nil
}

// verifyLink checks a file linked as f from base file bf against bf's
// hash: the base folder is the device's, and may have changed since it
// was installed.
func (a *applier) verifyLink(bf, f release.File, buf []byte) error {
	fh, err := a.root.Open(f.Path)
	if err != nil {
		return fmt.Errorf("delta: open linked %s: %w", f.Path, err)
	}
	defer fh.Close()
	sum, err := hashWritten(fh, f, nil, buf)
	if err == nil && sum != bf.SHA256 {
		err = errors.New("content changed")
	}
	if err != nil {
		return fmt.Errorf("%w: base file %s: %v", ErrWrongBase, bf.Path, err)
	}
	return nil
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

func (a *applier) copyBase(w io.Writer, bf release.File) error {
	rc, err := a.base.Dir.Open(bf.Path)
	if err != nil {
		return fmt.Errorf("%w: open base file %s: %v", ErrWrongBase, bf.Path, err)
	}
	defer rc.Close()
	return copyExact(w, rc, bf.Size, a.buf, ErrWrongBase, "base file "+bf.Path)
}

// dup copies sf, a file written earlier in this stream.
func (a *applier) dup(w io.Writer, sf release.File) error {
	rc, err := a.root.Open(sf.Path)
	if err != nil {
		return fmt.Errorf("delta: reopen %s: %w", sf.Path, err)
	}
	defer rc.Close()
	return copyExact(w, rc, sf.Size, a.buf, ErrVerify, sf.Path)
}

// openOld opens a base file for random access and checks it has size bytes.
func (a *applier) openOld(p string, size int64) (io.ReaderAt, io.Closer, error) {
	rc, err := a.base.Dir.Open(p)
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
	old, err := a.sources()
	if err != nil {
		return err
	}
	defer old.Close()
	oldSize := old.size
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
				addBytes(a.buf[:k], a.ob[:k])
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
		return fmt.Errorf("%w: delta for %s makes %d bytes, its record says %d", ErrCorruptPatch, f.Path, newPos, f.Size)
	}
	return nil
}

// sources reads a delta's source list and returns the sources as one
// virtual old file, opened lazily (a delta against the whole old release
// may name thousands of files and read a few bytes of each).
func (a *applier) sources() (*sourceSet, error) {
	n, err := a.b.uvarint(maxSources, "source count")
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: delta without sources", ErrCorruptPatch)
	}
	ss := &sourceSet{}
	for range n {
		kind, err := a.b.r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("%w: reading source: %v", ErrCorruptPatch, truncated(err))
		}
		var src sourcePart
		switch kind {
		case srcBase:
			i, err := a.baseIndex("source base file")
			if err != nil {
				return nil, err
			}
			bf := a.base.Files[i]
			src.size = bf.Size
			src.open = func() (io.ReaderAt, io.Closer, error) { return a.openOld(bf.Path, bf.Size) }
		case srcTarget:
			i, err := a.ordinal("source file")
			if err != nil {
				return nil, err
			}
			sf := a.written[i]
			src.size = sf.Size
			src.open = func() (io.ReaderAt, io.Closer, error) {
				fh, err := a.root.Open(sf.Path)
				if err != nil {
					return nil, nil, fmt.Errorf("delta: reopen %s: %w", sf.Path, err)
				}
				return fh, fh, nil
			}
		default:
			return nil, fmt.Errorf("%w: source kind %d", ErrCorruptPatch, kind)
		}
		src.off = ss.size
		ss.size += src.size
		ss.parts = append(ss.parts, src)
	}
	return ss, nil
}

// maxOpenSources bounds the source files a delta keeps open at once.
const maxOpenSources = 16

// sourceSet reads the concatenation of a delta's sources, opening each on
// first use and keeping at most maxOpenSources open (least recently used
// closed first).
type sourceSet struct {
	parts []sourcePart
	size  int64
	open  []int // indexes of open parts, most recently used last
}

type sourcePart struct {
	off, size int64
	open      func() (io.ReaderAt, io.Closer, error)
	ra        io.ReaderAt
	c         io.Closer
}

// part returns the open reader of part i.
func (s *sourceSet) part(i int) (io.ReaderAt, error) {
	p := &s.parts[i]
	if p.ra != nil {
		if k := slices.Index(s.open, i); k >= 0 && k != len(s.open)-1 {
			s.open = append(slices.Delete(s.open, k, k+1), i)
		}
		return p.ra, nil
	}
	if len(s.open) == maxOpenSources {
		old := &s.parts[s.open[0]]
		old.c.Close()
		old.ra, old.c = nil, nil
		s.open = s.open[1:]
	}
	ra, c, err := p.open()
	if err != nil {
		return nil, err
	}
	p.ra, p.c = ra, c
	s.open = append(s.open, i)
	return ra, nil
}

// ReadAt reads len(p) bytes at off; callers keep reads within size.
func (s *sourceSet) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	i, _ := slices.BinarySearchFunc(s.parts, off, func(sp sourcePart, off int64) int {
		if sp.off+sp.size <= off {
			return -1
		}
		if sp.off > off {
			return 1
		}
		return 0
	})
	for ; i < len(s.parts) && len(p) > 0; i++ {
		pt := s.parts[i]
		if pt.size == 0 || off >= pt.off+pt.size {
			continue
		}
		ra, err := s.part(i)
		if err != nil {
			return n, err
		}
		k := min(int64(len(p)), pt.off+pt.size-off)
		got, err := ra.ReadAt(p[:k], off-pt.off)
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

// Close closes the open sources.
func (s *sourceSet) Close() error {
	for _, i := range s.open {
		s.parts[i].c.Close()
		s.parts[i].ra, s.parts[i].c = nil, nil
	}
	s.open = nil
	return nil
}

// bsdiff applies a recBSDiff record with the hardened BSDIFF40 patcher.
func (a *applier) bsdiff(w io.Writer, f release.File) error {
	i, err := a.baseIndex("bsdiff base file")
	if err != nil {
		return err
	}
	bf := a.base.Files[i]
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
	old, closer, err := a.openOld(bf.Path, bf.Size)
	if err != nil {
		return err
	}
	defer closer.Close()
	err = bsdiff40.Patch(old, bf.Size, bytes.NewReader(payload), int64(n), f.Size, w)
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

// addBytes adds src to dst byte by byte, modulo 256 (bsdiff's diff bytes
// onto the base), eight bytes at a time: the high bit of each byte is
// added apart so that no carry crosses into the next byte.
func addBytes(dst, src []byte) {
	const high = 0x8080808080808080
	src = src[:len(dst)]
	i := 0
	for ; i+8 <= len(dst); i += 8 {
		x := binary.LittleEndian.Uint64(dst[i:])
		y := binary.LittleEndian.Uint64(src[i:])
		binary.LittleEndian.PutUint64(dst[i:], ((x&^high)+(y&^high))^((x^y)&high))
	}
	for ; i < len(dst); i++ {
		dst[i] += src[i]
	}
}
