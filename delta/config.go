package delta

import (
	"fmt"
	"time"
)

// Config tunes Build. Start from DefaultConfig and override fields; Build
// copies it and never writes to it.
type Config struct {
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
	// disables binary deltas altogether (copies still cost nothing).
	// Default 64 MiB.
	MaxDiffSize int64

	// FileTimeout bounds the time spent diffing one file; when it runs
	// out the file is sent as a compressed literal instead. bsdiff's search
	// degrades badly on long repetitive runs (zero padding), and this keeps
	// one such file from stalling a release. Zero means no limit.
	// Default 20 s.
	FileTimeout time.Duration

	// BrotliMaxBytes chooses the body codec. When the estimated
	// uncompressed body (literal bytes plus 1/16 of each delta file) is at
	// most this many bytes, the body is brotli at quality 11, about 10 %
	// smaller than zstd on deltas but about 0.6 MB/s on literal text;
	// otherwise it is zstd at its best level (about 25 MB/s). Zero means
	// always zstd. Default 1 MiB.
	BrotliMaxBytes int64

	// ZstdWindow is the zstd window in bytes when the body is zstd: matches
	// reach this far back, and a device needs this much memory to decode.
	// Zero means the default, 8 MiB. Must be a power of two between 1 KiB
	// and ApplyConfig.MaxWindow.
	ZstdWindow int

	// BSDiffMaxSize: files whose old and new sizes are both at most this
	// many bytes also get a classic BSDIFF40 candidate from go-bsdiff, kept
	// when it is the smallest. go-bsdiff is slow (qsufsort) and its bzip2
	// payload cannot share redundancy with the rest of the stream, so it
	// rarely wins; it is here so that patches interoperate with standard
	// bspatch tooling when wanted. Zero means never. Default 0.
	BSDiffMaxSize int64

	// Renames pairs a new file with no same-path old file to the old file
	// it was most likely renamed from: same name once bundler content hashes
	// are removed, else same extension and similar size. Default true.
	Renames bool
}

// DefaultConfig returns the configuration used by the origin.
func DefaultConfig() Config {
	return Config{
		MemoryBudget:   512 << 20,
		MaxDiffSize:    64 << 20,
		FileTimeout:    20 * time.Second,
		BrotliMaxBytes: 1 << 20,
		ZstdWindow:     8 << 20,
		Renames:        true,
	}
}

func (c *Config) normalize() error {
	if c.Workers < 0 || c.MemoryBudget < 0 || c.MaxDiffSize < 0 || c.FileTimeout < 0 ||
		c.BrotliMaxBytes < 0 || c.ZstdWindow < 0 || c.BSDiffMaxSize < 0 {
		return fmt.Errorf("delta: negative value in Config")
	}
	if c.MemoryBudget == 0 {
		c.MemoryBudget = 512 << 20
	}
	if c.ZstdWindow == 0 {
		c.ZstdWindow = 8 << 20
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
	// Sync makes Apply fsync each file it writes. Leave it off when the
	// installer syncs the staging folder once before switching to it.
	Sync bool
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
