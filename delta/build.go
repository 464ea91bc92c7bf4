package delta

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/semaphore"

	"github.com/capstan-ota/capstan/delta/internal/sadiff"
	"github.com/capstan-ota/capstan/release"
)

// BlobSource gives Build the content of a file by its SHA-256: the origin's
// content-addressed store. Open must be safe for concurrent use; Build
// closes every reader it opens and checks the size and hash of what it
// reads.
type BlobSource interface {
	Open(ctx context.Context, h release.Hash) (io.ReadCloser, error)
}

// BlobSourceFunc adapts a function to BlobSource.
type BlobSourceFunc func(ctx context.Context, h release.Hash) (io.ReadCloser, error)

var _ BlobSource = BlobSourceFunc(nil)

// Open calls f.
func (f BlobSourceFunc) Open(ctx context.Context, h release.Hash) (io.ReadCloser, error) {
	return f(ctx, h)
}

// BuildStats describes a built patch.
type BuildStats struct {
	Files    int // target files
	Kept     int // base files kept as they are (no record)
	Copies   int // files copied from a base file with the same content
	Dups     int // files copied from an earlier target file
	Deltas   int // files sent as a binary delta (Capstan's codec)
	BSDiffs  int // files sent as a BSDIFF40 payload
	Literals int // files sent as compressed bytes
	Renames  int // deltas whose old twin had another path
	Siblings int // deltas that also read an earlier target file (BuildConfig.NoSiblings off)
	// CrossFile counts deltas that read more than one old file: text a
	// bundler moved between chunks, found by the fingerprint index.
	CrossFile int
	Dropped   int // base files the target does not keep at their path

	// TargetBytes is the size of the target release; LiteralBytes the part
	// of it sent as literals; PatchBytes what was written to w, the
	// download size.
	TargetBytes, LiteralBytes, PatchBytes int64

	// BrotliBytes and ZstdBytes count the uncompressed record bytes that
	// went into brotli and zstd frames; Frames counts the frames.
	BrotliBytes, ZstdBytes int64
	Frames                 int
}

// job is the plan for one target file that needs a record.
type job struct {
	idx     int   // target index
	kind    byte  // recCopy, recDup, recLiteral or recDelta
	base    int   // recCopy: the base file with the same content
	dup     int   // recDup: earlier target index with the same content
	twin    int   // recDelta: base index of the old twin (same path or renamed), or -1
	budget  int64 // recDelta: old bytes the file may be diffed against (refBudget)
	sib     int   // recDelta: earlier target file also diffed against, or -1
	renamed bool
	weight  int64
	res     chan deltaResult // recDelta: the computed record, buffered 1
}

// source is one part of a delta's old file: a base file, or a target file
// written earlier in the stream (by target index; the ordinal is known
// only when the record is written).
type source struct {
	kind byte // srcBase or srcTarget
	idx  int
}

// deltaResult is a computed delta record, or a decision to send a literal.
type deltaResult struct {
	kind byte     // recDelta, recBSDiff or recLiteral
	srcs []source // recDelta: the sources the ops read, in order
	body []byte   // recDelta: the blocks and the terminator; recBSDiff: the payload
	sib  bool     // the delta reads its sibling
	// oldFiles is how many base files the delta reads.
	oldFiles int
	err      error
}

// Build writes one patch stream to w that turns release base (ID baseID)
// into release target (ID targetID). With a nil or empty base the stream
// carries the whole release in the same format, so devices have one code
// path. It returns what it wrote; on error w holds a partial stream that
// must be discarded. Build checks ctx between files and during deltas.
//
// Base files that the target holds at the same path with the same mode and
// content cost nothing: the stream lists only the base files to drop and a
// record for every other target file. Records go out in three passes so
// that each lands in the frame codec that suits it without holding finished
// work in memory: the drop list, copies and deltas in target order (deltas
// are computed ahead, in parallel, within BuildConfig.MemoryBudget; into brotli
// frames within BuildConfig.BrotliMaxBytes), then literals (streamed from src
// into zstd frames), then deltas that read a sibling sent as a literal,
// then duplicates, whose source is by then always written.
func Build(ctx context.Context, cfg BuildConfig, base *release.Manifest, baseID release.Hash, target *release.Manifest, targetID release.Hash, src BlobSource, w io.Writer) (BuildStats, error) {
	var st BuildStats
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
		base = &release.Manifest{}
	} else if err := base.Validate(); err != nil {
		return st, fmt.Errorf("%w: base: %v", ErrBadManifest, err)
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	jobs, dropped := plan(&cfg, base, target)
	st.Files = len(target.Files)
	st.Kept = len(base.Files) - len(dropped)
	st.Dropped = len(dropped)
	st.TargetBytes = target.TotalSize()

	cw := &countWriter{w: w}
	h := newHeader(baseID, targetID)
	if _, err := cw.Write(h.marshal()); err != nil {
		return st, fmt.Errorf("delta: write header: %w", err)
	}
	fw := &frameWriter{out: cw, window: cfg.ZstdWindow, brotliLeft: cfg.BrotliMaxBytes, brotliLiterals: cfg.BrotliLiteralBytes,
		st: &st, zstdLevel: zstd.SpeedBestCompression}
	if cfg.FastLiterals {
		fw.zstdLevel = zstd.SpeedBetterCompression
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	est, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return st, fmt.Errorf("delta: %w", err)
	}
	defer est.Close()
	b := &builder{cfg: &cfg, src: src, est: est, sem: semaphore.NewWeighted(cfg.MemoryBudget), base: base, target: target}
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.launch(ctx, &wg, jobs)
	}()

	if len(dropped) > 0 {
		rec := appendUvarint([]byte{recDrop}, uint64(len(dropped)))
		next := 0
		for _, i := range dropped {
			rec = appendUvarint(rec, uint64(i-next))
			next = i + 1
		}
		if err := fw.record(rec, 0); err != nil {
			return st, wrapWrite(err)
		}
	}
	// ord maps a target index to its ordinal once its record is written.
	ord := make([]int, len(target.Files))
	for i := range ord {
		ord[i] = -1
	}
	next := 0
	head := func(kind byte, idx int) []byte {
		f := target.Files[idx]
		rec := appendString([]byte{kind}, f.Path)
		return appendUvarint(rec, uint64(f.Mode))
	}
	written := func(idx int) { ord[idx] = next; next++ }

	// Pass 1: copies and deltas, in target order. A delta whose sibling
	// turned out a literal waits (deferred) until that literal is written.
	var literals, dups []*job
	type pending struct {
		j *job
		r deltaResult
	}
	var deferred []pending
	for _, j := range jobs {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("delta: build: %w", ctx.Err())
		}
		switch j.kind {
		case recCopy:
			st.Copies++
			err = fw.record(appendUvarint(head(recCopy, j.idx), uint64(j.base)), 0)
			written(j.idx)
		case recDup:
			dups = append(dups, j)
		case recLiteral:
			literals = append(literals, j)
		case recDelta:
			var r deltaResult
			select {
			case r = <-j.res:
			case <-ctx.Done():
				return st, fmt.Errorf("delta: build: %w", ctx.Err())
			}
			b.sem.Release(j.weight)
			if r.err != nil {
				return st, r.err
			}
			if r.kind == recLiteral {
				literals = append(literals, j)
				continue
			}
			if r.sib && ord[j.sib] < 0 {
				deferred = append(deferred, pending{j, r})
			} else {
				err = fw.record(b.encode(head(r.kind, j.idx), j, r, ord), int64(len(r.body)))
				written(j.idx)
			}
			if r.kind == recDelta {
				st.Deltas++
			} else {
				st.BSDiffs++
			}
			if j.renamed {
				st.Renames++
			}
			if r.sib {
				st.Siblings++
			}
			if r.oldFiles > 1 {
				st.CrossFile++
			}
		}
		if err != nil {
			return st, wrapWrite(err)
		}
	}
	// Pass 2: literals, in target order.
	slices.SortFunc(literals, func(x, y *job) int { return x.idx - y.idx })
	for _, j := range literals {
		if err := b.writeLiteral(ctx, fw, head(recLiteral, j.idx), target.Files[j.idx], &st); err != nil {
			return st, wrapWrite(err)
		}
		written(j.idx)
	}
	for _, d := range deferred {
		rec := b.encode(head(d.r.kind, d.j.idx), d.j, d.r, ord)
		if err := fw.record(rec, int64(len(rec))); err != nil {
			return st, wrapWrite(err)
		}
		written(d.j.idx)
	}
	// Pass 3: duplicates of files written above.
	for _, j := range dups {
		st.Dups++
		if err := fw.record(appendUvarint(head(recDup, j.idx), uint64(ord[j.dup])), 0); err != nil {
			return st, wrapWrite(err)
		}
		written(j.idx)
	}
	if err := fw.finish(); err != nil {
		return st, wrapWrite(err)
	}
	st.PatchBytes = cw.n
	return st, nil
}

// encode returns a delta or BSDIFF40 record: head (kind, path, mode), then
// the size, the sources with their ordinals, and the body.
func (b *builder) encode(head []byte, j *job, r deltaResult, ord []int) []byte {
	rec := appendUvarint(head, uint64(b.target.Files[j.idx].Size))
	if r.kind == recBSDiff {
		rec = appendUvarint(rec, uint64(j.twin))
		rec = appendUvarint(rec, uint64(len(r.body)))
		return append(rec, r.body...)
	}
	rec = appendUvarint(rec, uint64(len(r.srcs)))
	for _, s := range r.srcs {
		rec = append(rec, s.kind)
		if s.kind == srcTarget {
			rec = appendUvarint(rec, uint64(ord[s.idx]))
		} else {
			rec = appendUvarint(rec, uint64(s.idx))
		}
	}
	return append(rec, r.body...)
}

// frameWriter writes records into frames, opening a frame of another codec
// when a record prefers it.
type frameWriter struct {
	out        *countWriter
	window     int // zstd window
	zstdLevel  zstd.EncoderLevel
	brotliLeft int64 // raw bytes brotli may still take (BuildConfig.BrotliMaxBytes)
	// brotliLiterals is how many literal bytes brotli may still take
	// (BuildConfig.BrotliLiteralBytes).
	brotliLiterals int64
	st             *BuildStats

	codec  byte // codec of the open frame; frameEnd when none is open
	chunks *chunkWriter
	comp   io.WriteCloser
	bw     *bufio.Writer
}

// record writes a whole record. size is its bulk (bytes beyond a few
// header bytes): it decides the codec; 0 means "fits any open frame".
func (fw *frameWriter) record(rec []byte, size int64) error {
	if err := fw.want(size); err != nil {
		return err
	}
	return fw.write(rec)
}

// literal starts a literal record of size bytes (they follow through
// write): in the open brotli frame while the literal budget
// (BuildConfig.BrotliLiteralBytes) lasts, so a small new file shares one context
// with the deltas around it, else in a zstd frame.
func (fw *frameWriter) literal(rec []byte, size int64) error {
	codec := byte(codecZstd)
	if size <= fw.brotliLiterals && size <= fw.brotliLeft {
		codec = codecBrotli
		fw.brotliLiterals -= size
		fw.brotliLeft -= size
	}
	if err := fw.open(codec); err != nil {
		return err
	}
	return fw.write(rec)
}

// want makes sure a frame suited to a record of size bulk bytes is open.
func (fw *frameWriter) want(size int64) error {
	if size == 0 && fw.codec != frameEnd {
		return nil
	}
	codec := byte(codecZstd)
	if fw.brotliLeft > 0 && size <= fw.brotliLeft {
		codec = codecBrotli
		fw.brotliLeft -= size
	}
	return fw.open(codec)
}

// open makes sure the open frame has codec.
func (fw *frameWriter) open(codec byte) error {
	if codec == fw.codec {
		return nil
	}
	if err := fw.closeFrame(); err != nil {
		return err
	}
	if _, err := fw.out.Write([]byte{codec}); err != nil {
		return err
	}
	fw.chunks = &chunkWriter{w: fw.out, buf: make([]byte, 0, 64<<10)}
	comp, err := newCompressor(codec, fw.chunks, fw.window, fw.zstdLevel)
	if err != nil {
		return err
	}
	fw.codec, fw.comp = codec, comp
	if fw.bw == nil {
		fw.bw = bufio.NewWriterSize(comp, 64<<10)
	} else {
		fw.bw.Reset(comp)
	}
	fw.st.Frames++
	return nil
}

func (fw *frameWriter) write(p []byte) error {
	if fw.codec == codecBrotli {
		fw.st.BrotliBytes += int64(len(p))
	} else {
		fw.st.ZstdBytes += int64(len(p))
	}
	_, err := fw.bw.Write(p)
	return err
}

func (fw *frameWriter) closeFrame() error {
	if fw.codec == frameEnd {
		return nil
	}
	fw.codec = frameEnd
	if err := fw.bw.Flush(); err != nil {
		return err
	}
	if err := fw.comp.Close(); err != nil {
		return err
	}
	return fw.chunks.end()
}

func (fw *frameWriter) finish() error {
	if err := fw.closeFrame(); err != nil {
		return err
	}
	_, err := fw.out.Write([]byte{frameEnd})
	return err
}

// wrapWrite prefixes an error once: errors from the blob source and from
// ctx are already wrapped.
func wrapWrite(err error) error {
	if errors.Is(err, ErrSource) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("delta: write patch: %w", err)
}

// plan decides, from the manifests alone, how each target file is sent.
// It returns a job for every target file that needs a record, and the base
// indexes of the files the target drops (gone, or changed at their path).
func plan(cfg *BuildConfig, base, target *release.Manifest) ([]*job, []int) {
	baseByHash := map[release.Hash]int{}
	kept := make([]bool, len(base.Files))
	for i, f := range base.Files {
		if _, ok := baseByHash[f.SHA256]; !ok {
			baseByHash[f.SHA256] = i
		}
	}
	twins := newTwinFinder(base, target, !cfg.NoRenames)
	seen := map[release.Hash]int{}
	var jobs []*job
	for _, i := range recordOrder(target) {
		f := target.Files[i]
		if bi, ok := twins.index(f.Path); ok {
			if b := base.Files[bi]; b.SHA256 == f.SHA256 && b.Mode == f.Mode {
				kept[bi] = true
				continue
			}
		}
		j := &job{idx: i, kind: recLiteral, sib: -1}
		jobs = append(jobs, j)
		if bi, ok := baseByHash[f.SHA256]; ok {
			j.kind, j.base = recCopy, bi
			continue
		}
		if d, ok := seen[f.SHA256]; ok {
			j.kind, j.dup = recDup, d
			continue
		}
		seen[f.SHA256] = i
		if f.Size == 0 || f.Size > cfg.MaxDiffSize {
			continue
		}
		if len(base.Files) == 0 {
			continue
		}
		// The twin is a hint (the same path, or a renamed file): the
		// worker diffs against it and the other old files that hold the
		// file's text (fpIndex.cover).
		j.twin = -1
		if ti, renamed, ok := twins.find(f); ok && base.Files[ti].Size > 0 && base.Files[ti].Size <= cfg.MaxDiffSize {
			j.twin, j.renamed = ti, renamed
		}
		j.kind = recDelta
		j.res = make(chan deltaResult, 1)
		j.budget = refBudget(cfg, f, base, j.twin)
		oldSize := j.budget
		if !cfg.NoSiblings {
			j.sib = sibling(jobs[:len(jobs)-1], target, f, cfg.MaxDiffSize-oldSize)
			if j.sib >= 0 {
				oldSize += target.Files[j.sib].Size
			}
		}
		j.weight = 6*oldSize + 3*f.Size
		if cfg.BSDiff != nil && j.twin >= 0 && base.Files[j.twin].Size <= cfg.BSDiffMaxSize && f.Size <= cfg.BSDiffMaxSize {
			j.weight += 24 * base.Files[j.twin].Size
		}
		j.weight = min(j.weight, cfg.MemoryBudget)
	}
	var dropped []int
	for i, k := range kept {
		if !k {
			dropped = append(dropped, i)
		}
	}
	return jobs, dropped
}

// recordOrder is the order records are planned and written in: by file
// extension, then path. Files of one kind side by side (the scripts, then
// the style sheets, then the source maps) let the entropy coder's context
// carry from one to the next.
func recordOrder(target *release.Manifest) []int {
	order := make([]int, len(target.Files))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return strings.Compare(path.Ext(target.Files[a].Path), path.Ext(target.Files[b].Path))
	})
	return order
}

// refBudget bounds the old bytes a file is diffed against: its twin, or
// twice its size plus 256 KiB of other old files holding its text, at most
// BuildConfig.MaxDiffSize. It sets the job's memory weight (a suffix array of
// 4 bytes per old byte) before the file is read.
func refBudget(cfg *BuildConfig, f release.File, base *release.Manifest, twin int) int64 {
	b := min(cfg.MaxDiffSize, 2*f.Size+256<<10)
	if twin >= 0 {
		b = max(b, base.Files[twin].Size)
	}
	return b
}

// sibling picks, among the earlier jobs, a changed file to diff f against
// besides its old twin: same extension, size within 2×, the closest size,
// at most limit bytes. Bundlers emit families of files that change
// together (swagger-ui-bundle.js and swagger-ui-es-bundle.js, the source
// maps of the same sources); the new text one of them gained is then a
// match, not extra bytes. On swagger-ui 5.34.1→5.35.0 this takes the patch
// from 114.6 KB to about 103 KB.
func sibling(earlier []*job, target *release.Manifest, f release.File, limit int64) int {
	ext := path.Ext(f.Path)
	best, bestD := -1, int64(-1)
	for _, e := range earlier {
		if e.kind != recDelta {
			continue
		}
		s := target.Files[e.idx]
		if path.Ext(s.Path) != ext || s.Size > limit || s.Size > 2*f.Size || f.Size > 2*s.Size {
			continue
		}
		d := s.Size - f.Size
		if d < 0 {
			d = -d
		}
		if bestD < 0 || d < bestD {
			best, bestD = e.idx, d
		}
	}
	return best
}

// builder holds what the delta workers share.
type builder struct {
	cfg          *BuildConfig
	src          BlobSource
	est          *zstd.Encoder // fast encoder to compare candidate sizes; EncodeAll is concurrency-safe
	sem          *semaphore.Weighted
	base, target *release.Manifest

	indexOnce sync.Once
	index     *fpIndex // the base's fingerprints, built by the first delta job
	indexErr  error
}

// baseIndex returns the fingerprint index of the base release, reading
// every base file once (the first caller does; the others wait).
func (b *builder) baseIndex(ctx context.Context) (*fpIndex, error) {
	b.indexOnce.Do(func() {
		var total int64
		for _, f := range b.base.Files {
			if f.Size <= b.cfg.MaxDiffSize {
				total += f.Size
			}
		}
		x := &fpIndex{mask: samplingMask(total), post: map[uint64][]uint32{}}
		seen := map[release.Hash]bool{}
		for i, f := range b.base.Files {
			if f.Size < 64 || f.Size > b.cfg.MaxDiffSize || seen[f.SHA256] {
				continue
			}
			seen[f.SHA256] = true
			data, err := readBlob(ctx, b.src, f)
			if err != nil {
				b.indexErr = err
				return
			}
			x.add(i, data)
		}
		b.index = x
	})
	return b.index, b.indexErr
}

// launch starts delta jobs in target order as memory and worker slots
// allow. Acquiring in order is what rules out deadlock: the writer waits
// for job i, whose weight is already held, and releases it once written.
func (b *builder) launch(ctx context.Context, wg *sync.WaitGroup, jobs []*job) {
	slots := semaphore.NewWeighted(int64(b.cfg.Workers))
	for _, j := range jobs {
		if j.kind != recDelta {
			continue
		}
		if err := b.sem.Acquire(ctx, j.weight); err != nil {
			return
		}
		if err := slots.Acquire(ctx, 1); err != nil {
			b.sem.Release(j.weight)
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer slots.Release(1)
			j.res <- b.delta(ctx, j)
		}()
	}
}

// delta computes the cheapest record for job j's file: a delta against the
// old files that hold its text (its twin first) and, if it has one and it
// helps, its sibling; or a literal.
func (b *builder) delta(ctx context.Context, j *job) deltaResult {
	f := b.target.Files[j.idx]
	cur, err := readBlob(ctx, b.src, f)
	if err != nil {
		return deltaResult{err: err}
	}
	x, err := b.baseIndex(ctx)
	if err != nil {
		return deltaResult{err: err}
	}
	// Only a twin at the same path is taken unseen; a renamed twin (a
	// guess from names and sizes) must earn its place by content like any
	// other old file.
	forced := j.twin
	if j.renamed {
		forced = -1
	}
	picks := x.cover(cur, forced, func(i int) int64 { return b.base.Files[i].Size }, j.budget)
	if len(picks) == 0 {
		return deltaResult{kind: recLiteral} // no old file holds its text
	}
	var ref, old []byte
	srcs := make([]source, 0, len(picks)+1)
	for _, i := range picks {
		data, err := readBlob(ctx, b.src, b.base.Files[i])
		if err != nil {
			return deltaResult{err: err}
		}
		if i == j.twin {
			old = data
		}
		ref = append(ref, data...)
		srcs = append(srcs, source{srcBase, i})
	}
	usedSib := false
	if j.sib >= 0 {
		sb, err := readBlob(ctx, b.src, b.target.Files[j.sib])
		if err != nil {
			return deltaResult{err: err}
		}
		if siblingHelps(ref, cur, sb) {
			ref = append(ref, sb...)
			srcs = append(srcs, source{srcTarget, j.sib})
			usedSib = true
		}
	}
	dctx := ctx
	if b.cfg.FileTimeout > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, b.cfg.FileTimeout)
		defer cancel()
	}
	body, err := encodeDelta(dctx, ref, cur)
	if err != nil {
		if ctx.Err() != nil {
			return deltaResult{err: fmt.Errorf("delta: build: %w", ctx.Err())}
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return deltaResult{kind: recLiteral} // over its time budget
		}
		return deltaResult{err: fmt.Errorf("delta: diff %s: %w", f.Path, err)}
	}
	best := deltaResult{kind: recDelta, srcs: srcs, body: body, sib: usedSib, oldFiles: len(picks)}
	bestSize := int64(len(body))
	// A raw delta under 1/8 of the file beats any compressed literal of
	// text; otherwise compare compressed estimates.
	measured := false
	if int64(len(body))*8 > f.Size {
		bestSize = int64(len(b.est.EncodeAll(body, nil)))
		measured = true
		if lit := int64(len(b.est.EncodeAll(cur, nil))); lit <= bestSize {
			best, bestSize = deltaResult{kind: recLiteral}, lit
		}
	}
	if old != nil && b.cfg.BSDiff != nil && int64(len(old)) <= b.cfg.BSDiffMaxSize && f.Size <= b.cfg.BSDiffMaxSize {
		if !measured {
			bestSize = int64(len(b.est.EncodeAll(body, nil)))
		}
		if p, err := b.cfg.BSDiff(old, cur); err == nil && int64(len(p)) < bestSize {
			best = deltaResult{kind: recBSDiff, body: p}
		}
	}
	return best
}

// readBlob reads a whole file from src and checks its size and hash.
func readBlob(ctx context.Context, src BlobSource, f release.File) ([]byte, error) {
	rc, err := src.Open(ctx, f.SHA256)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s (%s): %w", ErrSource, f.Path, f.SHA256, err)
	}
	defer rc.Close()
	buf := make([]byte, f.Size)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrSource, f.Path, err)
	}
	var one [1]byte
	if n, _ := rc.Read(one[:]); n > 0 || release.Sum(buf) != f.SHA256 {
		return nil, fmt.Errorf("%w: content of %s does not match its manifest entry", ErrSource, f.Path)
	}
	return buf, nil
}

// writeLiteral streams f from the source into the body, checking it. head
// is the record's kind, path and mode.
func (b *builder) writeLiteral(ctx context.Context, fw *frameWriter, head []byte, f release.File, st *BuildStats) error {
	st.Literals++
	st.LiteralBytes += f.Size
	if err := fw.literal(appendUvarint(head, uint64(f.Size)), f.Size); err != nil {
		return err
	}
	if f.Size == 0 {
		return nil
	}
	rc, err := b.src.Open(ctx, f.SHA256)
	if err != nil {
		return fmt.Errorf("%w: open %s (%s): %w", ErrSource, f.Path, f.SHA256, err)
	}
	defer rc.Close()
	hs := sha256.New()
	n, err := io.Copy(io.MultiWriter(writerFunc(fw.write), hs), io.LimitReader(rc, f.Size))
	if err != nil {
		return fmt.Errorf("%w: read %s: %w", ErrSource, f.Path, err)
	}
	var one [1]byte
	if m, _ := rc.Read(one[:]); n != f.Size || m > 0 || release.Hash(hs.Sum(nil)) != f.SHA256 {
		return fmt.Errorf("%w: content of %s does not match its manifest entry", ErrSource, f.Path)
	}
	return nil
}

// encodeDelta returns the blocks of a recDelta record (after its sources):
// the ops turning old (the sources' concatenation) into cur, then the
// terminating zero.
func encodeDelta(ctx context.Context, old, cur []byte) ([]byte, error) {
	var rec []byte
	type ctl struct {
		diff, extra int
		seek        int64
	}
	var (
		ctls        []ctl
		diff, extra []byte
		first       = true
	)
	flush := func() {
		if len(ctls) == 0 {
			return
		}
		rec = appendUvarint(rec, uint64(len(ctls)))
		for _, c := range ctls {
			rec = appendUvarint(rec, uint64(c.diff))
			rec = appendUvarint(rec, uint64(c.extra))
			rec = appendVarint(rec, c.seek)
		}
		rec = appendRLE(rec, diff)
		rec = append(rec, extra...)
		ctls, diff, extra = ctls[:0], diff[:0], extra[:0]
	}
	err := sadiff.Diff(ctx, old, cur, func(op sadiff.Op) error {
		// An op that writes nothing only moves the old position: fold it
		// into the previous op so the decoder can demand progress from
		// every op but a record's first.
		if len(op.Diff)+len(op.Extra) == 0 && !first {
			ctls[len(ctls)-1].seek += op.Seek
			return nil
		}
		first = false
		if len(ctls) == maxBlockOps {
			// Keep the last op's seek foldable: flush all but it.
			last := ctls[len(ctls)-1]
			ld := diff[len(diff)-last.diff:]
			le := extra[len(extra)-last.extra:]
			ctls = ctls[:len(ctls)-1]
			diff = diff[:len(diff)-last.diff]
			extra = extra[:len(extra)-last.extra]
			ld, le = bytes.Clone(ld), bytes.Clone(le)
			flush()
			ctls = append(ctls, last)
			diff = append(diff, ld...)
			extra = append(extra, le...)
		}
		ctls = append(ctls, ctl{len(op.Diff), len(op.Extra), op.Seek})
		diff = append(diff, op.Diff...)
		extra = append(extra, op.Extra...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(ctls) > 0 {
		ctls[len(ctls)-1].seek = 0 // the final seek is never used
	}
	flush()
	return append(rec, 0), nil
}

// newCompressor returns the body writer for codec.
func newCompressor(codec byte, w io.Writer, window int, level zstd.EncoderLevel) (io.WriteCloser, error) {
	switch codec {
	case codecBrotli:
		// LGWin 24 (16 MiB) is the largest standard window: every file's
		// delta can reuse its siblings' (webpack emits near-identical
		// bundles such as swagger-ui-bundle.js and swagger-ui-es-bundle.js).
		return brotli.NewWriterOptions(w, brotli.WriterOptions{Quality: 11, LGWin: 24}), nil
	case codecZstd:
		e, err := zstd.NewWriter(w, zstd.WithEncoderLevel(level),
			zstd.WithWindowSize(window), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
		if err != nil {
			return nil, fmt.Errorf("delta: zstd: %w", err)
		}
		return e, nil
	}
	return nil, fmt.Errorf("delta: unknown codec %d", codec)
}

// countWriter counts bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// writerFunc adapts a write function to io.Writer.
type writerFunc func([]byte) error

func (f writerFunc) Write(p []byte) (int, error) {
	if err := f(p); err != nil {
		return 0, err
	}
	return len(p), nil
}
