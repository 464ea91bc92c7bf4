package delta

import (
	"fmt"
	"time"
)

// BuildConfig tunes Build. The zero value of every field means its default
// (DefaultBuildConfig spells them out), so BuildConfig{} builds what the
// origin builds; a feature is turned off by a negative number or a No…
// flag, never by a zero. Build copies it and never writes to it.
type BuildConfig struct {
	// Workers is how many file deltas are computed at once. Zero means
	// runtime.GOMAXPROCS(0). Deltas are CPU-bound, so more than the core
	// count only adds memory.
	Workers int

	// MemoryBudget caps, in bytes, the working memory of the deltas in
	// flight (a byte-weighted semaphore). One delta weighs about
	// 6×old + 3×new bytes: both files, a 4-byte-per-byte suffix array of
	// old, and the encoded record; BSDIFF40 candidates add 24×old (go-bsdiff's
	// qsufsort). A file heavier than the whole budget runs alone. Zero means
	// the default, 512 MiB, which keeps a 150 MB bundle under 1.5 GB RSS
	// with the garbage collector's headroom.
	MemoryBudget int64

	// MaxDiffSize is the largest file, old or new, in bytes, that gets a
	// binary delta; bigger files are sent as compressed literals. Zero
	// means the default, 64 MiB; negative disables binary deltas
	// altogether (copies still cost nothing).
	MaxDiffSize int64

	// FileTimeout bounds the time spent diffing one file; when it runs
	// out the file is sent as a compressed literal instead. bsdiff's search
	// can degrade on pathological inputs, and this keeps one such file from
	// stalling a release. It makes the patch depend on machine load, so it
	// is a safety net far above normal times (measured: a 1.7 MB bundle
	// diffs in ~0.2 s; a 35 MB one in 19 s with the 2-core machine at load
	// average 16, where 20 s was too tight). Zero means the default, 60 s;
	// negative means no limit.
	FileTimeout time.Duration

	// BrotliMaxBytes is how many uncompressed bytes of delta records go
	// into brotli frames (quality 11, 16 MiB window): measured on swagger-ui,
	// about 10 % smaller than zstd's best level on deltas, but ~0.6 MB/s.
	// Delta records beyond it, and all literals, go into zstd frames (best
	// level, ~25 MB/s): on whole files brotli q11 was both slower and, cut
	// off from the other files' context, larger. Zero means the default,
	// 1 MiB (a delta body is usually tens to hundreds of KB); negative
	// means zstd only (the ?codecs=zstd variant, full bundles).
	BrotliMaxBytes int64

	// BrotliLiteralBytes is how many bytes of literals (new files with no
	// old file holding their text) may join the deltas in the brotli frame,
	// within BrotliMaxBytes: a few new chunks then share one context with
	// the deltas (vite-vue's new route: −12 %), at brotli's ~0.6 MB/s. Zero
	// means the default, 256 KiB; negative keeps every literal in zstd.
	BrotliLiteralBytes int64

	// ZstdWindow is the zstd window in bytes when the body is zstd: matches
	// reach this far back, and a device needs this much memory to decode.
	// Zero means the default, 8 MiB. Must be a power of two between 1 KiB
	// and ApplyConfig.MaxWindow.
	ZstdWindow int

	// FastLiterals compresses zstd frames at zstd's "better" level instead
	// of its best: several times faster for ~5 % more bytes. The origin
	// sets it for full bundles, which are all literals and which a device
	// installing for the first time waits for. Default false.
	FastLiterals bool

	// BSDiff, when set, makes a classic BSDIFF40 payload for files whose
	// old and new sizes are both at most BSDiffMaxSize, kept when it is the
	// smallest candidate. Pass go-bsdiff's bsdiff.Bytes (pinned v1.0.5); it
	// is a field rather than an import so that devices, which link this
	// package for Apply, do not link the diff side (style rule 2). go-bsdiff
	// is slow (qsufsort, 17–23× old in memory) and its bzip2 payload cannot
	// share redundancy with the rest of the stream, so it rarely wins; it is
	// here for interoperability with standard bspatch tooling. Nil (the
	// default): never.
	BSDiff func(old, new []byte) ([]byte, error)
	// BSDiffMaxSize bounds the files BSDiff is tried on, in bytes. Zero,
	// the default, means never.
	BSDiffMaxSize int64

	// NoSiblings turns off diffing a changed file also against an earlier
	// changed file of the target with the same extension and a similar
	// size (see sibling in build.go), which is done when a sampled check
	// finds the sibling holds the file's new text (siblingHelps): bundlers
	// emit families of files that change together. Reading the candidate
	// costs one more file in memory per delta; a kept sibling roughly
	// doubles that file's diff time. It saved 10 % on swagger-ui
	// 5.34.1→5.35.0. Default false: siblings are used.
	NoSiblings bool

	// NoRenames turns off pairing a new file with no same-path old file
	// with the old file it was most likely renamed from (same name once
	// bundler content hashes are removed, else same extension and similar
	// size). Default false: renames are found.
	NoRenames bool
}

// DefaultBuildConfig returns the configuration used by the origin: the
// value every zero field of a BuildConfig stands for.
func DefaultBuildConfig() BuildConfig {
	return BuildConfig{
		MemoryBudget:       512 << 20,
		MaxDiffSize:        64 << 20,
		FileTimeout:        60 * time.Second,
		BrotliMaxBytes:     1 << 20,
		BrotliLiteralBytes: 256 << 10,
		ZstdWindow:         8 << 20,
	}
}

// normalize fills the defaults of zero fields and turns the negative "off"
// values into the zero limits Build works with: after it, a zero size or
// time means none (no binary deltas, no brotli, no time limit).
func (c *BuildConfig) normalize() error {
	if c.Workers < 0 || c.MemoryBudget < 0 || c.ZstdWindow < 0 || c.BSDiffMaxSize < 0 {
		return fmt.Errorf("delta: negative Workers, MemoryBudget, ZstdWindow or BSDiffMaxSize in BuildConfig")
	}
	d := DefaultBuildConfig()
	if c.MemoryBudget == 0 {
		c.MemoryBudget = d.MemoryBudget
	}
	if c.ZstdWindow == 0 {
		c.ZstdWindow = d.ZstdWindow
	}
	orOff := func(v *int64, def int64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	orOff(&c.MaxDiffSize, d.MaxDiffSize)
	orOff(&c.BrotliMaxBytes, d.BrotliMaxBytes)
	orOff(&c.BrotliLiteralBytes, d.BrotliLiteralBytes)
	switch {
	case c.FileTimeout == 0:
		c.FileTimeout = d.FileTimeout
	case c.FileTimeout < 0:
		c.FileTimeout = 0
	}
	if c.ZstdWindow < 1<<10 || c.ZstdWindow&(c.ZstdWindow-1) != 0 || c.ZstdWindow > 1<<27 {
		return fmt.Errorf("delta: ZstdWindow %d is not a power of two between 1 KiB and 128 MiB", c.ZstdWindow)
	}
	return nil
}

// ApplyConfig bounds what Apply accepts and allocates. A patch over a bound
// fails with ErrTooLarge before anything big is allocated.
type ApplyConfig struct {
	// MaxFileSize is the largest file, in bytes, Apply will write or read
	// as a base file. Zero means the default, 1 GiB.
	MaxFileSize int64
	// MaxTotalSize is the largest release, in bytes (sum of file sizes).
	// Zero means the default, 4 GiB.
	MaxTotalSize int64
	// MaxWindow is the largest decompression window, in bytes, a zstd body
	// may ask for; it is the decoder's dominant memory. Brotli bodies are
	// limited to 16 MiB by the format. Zero means the default, 16 MiB.
	MaxWindow int
	// LinkCopies makes Apply hard-link unchanged files from the base
	// folder instead of copying them, when the BaseFiles is a Linker (Dir
	// is) and the file keeps its mode; each link is still hashed and
	// checked. It saves the write of every unchanged byte and their disk
	// space, but the two releases then share those inodes: the installer
	// must never modify installed files in place. Default false.
	LinkCopies bool
	// Sync makes Apply fsync each file it writes. Leave it off when the
	// installer syncs the staging folder once before switching to it.
	Sync bool
	// StartWriteback makes Apply start the disk write of each file as soon
	// as it is complete (sync_file_range on Linux; nothing elsewhere),
	// without waiting for it: the installer's one sync after Apply then
	// finds most bytes on disk already, the writes having overlapped the
	// decoding of the next files. It makes nothing durable by itself.
	StartWriteback bool
}

// DefaultApplyConfig returns the configuration used by devices.
func DefaultApplyConfig() ApplyConfig {
	return ApplyConfig{MaxFileSize: 1 << 30, MaxTotalSize: 4 << 30, MaxWindow: 16 << 20}
}

func (c *ApplyConfig) normalize() error {
	if c.MaxFileSize < 0 || c.MaxTotalSize < 0 || c.MaxWindow < 0 {
		return fmt.Errorf("delta: negative value in ApplyConfig")
	}
	d := DefaultApplyConfig()
	if c.MaxFileSize == 0 {
		c.MaxFileSize = d.MaxFileSize
	}
	if c.MaxTotalSize == 0 {
		c.MaxTotalSize = d.MaxTotalSize
	}
	if c.MaxWindow == 0 {
		c.MaxWindow = d.MaxWindow
	}
	return nil
}
