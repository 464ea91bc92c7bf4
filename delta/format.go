package delta

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/capstan-ota/capstan/release"
)

// Stream layout, version 2 (docs/decisions/013-patch-format-v2.md; version
// 1 is in docs/decisions/010-delta-format.md):
//
//	header  magic "CAPDELTA" | version u8 | flags u8 (0)
//	        | first 8 bytes of the base ID | first 8 bytes of the target ID
//	frames  codec u8 (frameEnd ends the stream; nothing may follow)
//	        then the compressed bytes in chunks: length uvarint + bytes,
//	        until a zero length. A frame decompresses to whole records.
//
// The target release is the base release minus the base files a recDrop
// record names, plus one file per file record. Base files not dropped are
// kept as they are (same path, mode and content) and cost nothing. Base
// files are named by their index in the base's sorted file list; target
// files written earlier in the stream by their ordinal (0 for the first file
// record, and so on). Records start with a kind byte:
//
//	recDrop     count n (uvarint), then n base indexes in increasing order,
//	            each as the gap from the previous one plus one (uvarint);
//	            at most one per stream
//	file record: target path (uvarint length + bytes), mode (uvarint), then
//	recCopy     base index (the content of that base file)
//	recDup      ordinal of a file already written with the same content
//	recLiteral  size (uvarint), exactly size bytes
//	recDelta    size (uvarint), source count (uvarint, 1..maxSources),
//	            sources, blocks, a 0:
//	            source = srcBase, base index | srcTarget, ordinal
//	            The ops read "old" as the concatenation of the sources.
//	            block = op count n (uvarint, 1..maxBlockOps)
//	                    n × (diff length uvarint, extra length uvarint, seek varint)
//	                    diff bytes of all n ops, zero-run-length coded
//	                    extra bytes of all n ops
//	recBSDiff   size (uvarint), base index, payload length (uvarint),
//	            BSDIFF40 payload
//
// Nothing in the stream is trusted: the signed release document gives the
// target's file count, total size and the hash of its canonical file list,
// and Apply checks the list it built (paths, sizes, modes and the SHA-256 of
// every file it wrote) against them before it returns.
//
// A delta op adds its diff bytes to the base bytes at the old position and
// writes the sums, writes its extra bytes, then moves the old position by
// seek: bsdiff's control/diff/extra triple. Grouping a block's diff bytes
// and extra bytes (instead of interleaving them per op) makes the body ~7 %
// smaller, because each group is homogeneous for the entropy coder.
//
// Frames exist because no one codec fits: brotli's best level is ~10 %
// smaller than zstd on deltas but runs at ~0.6 MB/s on literal text (40 s
// on 8 MB of incompressible bytes); zstd's best level runs at ~25 MB/s.
// Chunking lets the decoder find a frame's end without trusting the codec
// to stop reading at it.
const (
	magic         = "CAPDELTA"
	formatVersion = 2
	idPrefix      = 8
	headerSize    = 8 + 1 + 1 + idPrefix + idPrefix

	frameEnd    = 0
	codecZstd   = 1
	codecBrotli = 2
	codecNone   = 3

	recCopy    = 1
	recDup     = 2
	recLiteral = 3
	recDelta   = 4
	recBSDiff  = 5
	recDrop    = 6

	srcBase   = 0
	srcTarget = 1
	// maxSources bounds the sources of one delta: a file diffed against
	// the whole old release reads every base file it took text from.
	maxSources = 4096

	// maxBlockOps bounds one block's control list, so a decoder holds at
	// most 4096 × 24 bytes of control data at once.
	maxBlockOps = 4096

	// maxChunk bounds one frame chunk; writers use 64 KiB.
	maxChunk = 1 << 20
)

// header is the fixed stream header. It names base and target by the
// first bytes of their IDs: enough to refuse a patch for another pair at
// once with a clear error, while the file-list check after applying is what
// proves the result.
type header struct {
	version byte
	base    [idPrefix]byte
	target  [idPrefix]byte
}

func newHeader(base, target release.Hash) header {
	h := header{version: formatVersion}
	copy(h.base[:], base[:])
	copy(h.target[:], target[:])
	return h
}

func (h *header) marshal() []byte {
	b := make([]byte, headerSize)
	copy(b, magic)
	b[8] = h.version
	copy(b[10:], h.base[:])
	copy(b[10+idPrefix:], h.target[:])
	return b
}

func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < 9 || string(b[:8]) != magic {
		return h, fmt.Errorf("%w: not a Capstan patch (bad magic)", ErrCorruptPatch)
	}
	h.version = b[8]
	if h.version != formatVersion {
		return h, fmt.Errorf("%w: format version %d (this build reads %d)", ErrUnsupportedVersion, h.version, formatVersion)
	}
	if len(b) < headerSize {
		return h, fmt.Errorf("%w: short header", ErrCorruptPatch)
	}
	if b[9] != 0 {
		return h, fmt.Errorf("%w: header flags %#x", ErrUnsupportedVersion, b[9])
	}
	copy(h.base[:], b[10:])
	copy(h.target[:], b[10+idPrefix:])
	return h, nil
}

// matches reports whether the header names the pair base → target.
func (h *header) matches(base, target release.Hash) (baseOK, targetOK bool) {
	return [idPrefix]byte(base[:idPrefix]) == h.base, [idPrefix]byte(target[:idPrefix]) == h.target
}

// appendUvarint, appendVarint and appendString build record bytes.
func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
func appendVarint(b []byte, v int64) []byte   { return binary.AppendVarint(b, v) }
func appendString(b []byte, s string) []byte {
	return append(appendUvarint(b, uint64(len(s))), s...)
}

// appendRLE appends d coded as pairs (zero-run length, literal-run length,
// literal bytes). bsdiff diff bytes are mostly zero; coding the runs shrinks
// the body the entropy coder sees by two orders of magnitude, which makes
// brotli's best level fast and, measured, also compresses better. A single
// zero between non-zero bytes stays in the literal run: a pair costs more.
func appendRLE(out, d []byte) []byte {
	i := 0
	for i < len(d) {
		z := i
		for z < len(d) && d[z] == 0 {
			z++
		}
		nz := z
		for nz < len(d) && (d[nz] != 0 || nz+1 < len(d) && d[nz+1] != 0) {
			nz++
		}
		out = appendUvarint(out, uint64(z-i))
		out = appendUvarint(out, uint64(nz-z))
		out = append(out, d[z:nz]...)
		i = nz
	}
	return out
}

// body reads the decompressed record stream. It counts bytes so that errors
// can say where they happened.
type body struct {
	r *bufio.Reader
}

func (b *body) uvarint(limit uint64, what string) (uint64, error) {
	v, err := binary.ReadUvarint(b.r)
	if err != nil {
		return 0, fmt.Errorf("%w: reading %s: %v", ErrCorruptPatch, what, truncated(err))
	}
	if v > limit {
		return 0, fmt.Errorf("%w: %s %d is over the bound %d", ErrCorruptPatch, what, v, limit)
	}
	return v, nil
}

func (b *body) varint(what string) (int64, error) {
	v, err := binary.ReadVarint(b.r)
	if err != nil {
		return 0, fmt.Errorf("%w: reading %s: %v", ErrCorruptPatch, what, truncated(err))
	}
	return v, nil
}

func (b *body) path(what string) (string, error) {
	n, err := b.uvarint(release.MaxPathLen, what+" length")
	if err != nil {
		return "", err
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(b.r, buf); err != nil {
		return "", fmt.Errorf("%w: reading %s: %v", ErrCorruptPatch, what, truncated(err))
	}
	p := string(buf)
	if err := release.ValidatePath(p); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrUnsafePath, what, err)
	}
	return p, nil
}

// truncated turns a clean EOF in the middle of a record into
// io.ErrUnexpectedEOF: the stream was cut short.
func truncated(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// rleReader decodes appendRLE output for a known number of bytes.
type rleReader struct {
	b         *body
	remaining int64 // decoded bytes still owed by the current block
	zeros     int64 // zeros left in the current pair
	lits      int64 // literal bytes left in the current pair
}

// Read fills p (len(p) ≤ remaining) with decoded bytes.
func (r *rleReader) read(p []byte) error {
	for len(p) > 0 {
		switch {
		case r.zeros > 0:
			n := min(int64(len(p)), r.zeros)
			clear(p[:n])
			p = p[n:]
			r.zeros -= n
		case r.lits > 0:
			n := min(int64(len(p)), r.lits)
			if _, err := io.ReadFull(r.b.r, p[:n]); err != nil {
				return fmt.Errorf("%w: reading diff bytes: %v", ErrCorruptPatch, truncated(err))
			}
			p = p[n:]
			r.lits -= n
		default:
			z, err := r.b.uvarint(uint64(r.remaining), "zero run")
			if err != nil {
				return err
			}
			l, err := r.b.uvarint(uint64(r.remaining)-z, "literal run")
			if err != nil {
				return err
			}
			if z+l == 0 {
				return fmt.Errorf("%w: empty diff run", ErrCorruptPatch)
			}
			r.zeros, r.lits = int64(z), int64(l)
			r.remaining -= int64(z + l)
		}
	}
	return nil
}

// chunkWriter frames compressed bytes as length-prefixed chunks.
type chunkWriter struct {
	w   io.Writer
	buf []byte
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(c.buf)-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == cap(c.buf) {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *chunkWriter) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	if _, err := c.w.Write(appendUvarint(nil, uint64(len(c.buf)))); err != nil {
		return err
	}
	_, err := c.w.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// end flushes and writes the zero-length terminator.
func (c *chunkWriter) end() error {
	if err := c.flush(); err != nil {
		return err
	}
	_, err := c.w.Write([]byte{0})
	return err
}

// chunkReader reads one frame's chunks and reports io.EOF at its
// terminator, so a decompressor can never read into the next frame.
type chunkReader struct {
	r    *bufio.Reader
	left uint64
	done bool
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for c.left == 0 {
		if c.done {
			return 0, io.EOF
		}
		n, err := binary.ReadUvarint(c.r)
		if err != nil {
			return 0, fmt.Errorf("%w: reading chunk length: %v", ErrCorruptPatch, truncated(err))
		}
		if n > maxChunk {
			return 0, fmt.Errorf("%w: chunk of %d bytes", ErrCorruptPatch, n)
		}
		if n == 0 {
			c.done = true
			return 0, io.EOF
		}
		c.left = n
	}
	if uint64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= uint64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// HeaderSize is the size of a patch stream's fixed header (format 2).
const HeaderSize = headerSize

// CheckHeader reports whether b starts with the header of a patch from
// release base to release target in the format this build reads. Tools
// that only count and route patches (the bench tool) use it instead of
// applying them; a device learns the same from Apply.
func CheckHeader(b []byte, base, target release.Hash) error {
	h, err := parseHeader(b)
	if err != nil {
		return err
	}
	if baseOK, targetOK := h.matches(base, target); !baseOK {
		return fmt.Errorf("%w: the patch starts from %x…, not %s", ErrWrongBase, h.base, base)
	} else if !targetOK {
		return fmt.Errorf("%w: the patch makes %x…, not %s", ErrWrongTarget, h.target, target)
	}
	return nil
}
