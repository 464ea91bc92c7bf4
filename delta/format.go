package delta

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/capstan-ota/capstan/release"
)

// Stream layout, version 1 (docs/decisions/010-delta-format.md):
//
//	header  magic "CAPDELTA" | version u8 | codec u8 | reserved u16 (0)
//	        | base ID [32] | target ID [32] | file count u32 (big endian)
//	body    codec-compressed records, then recEnd; nothing may follow.
//
// Records start with a kind byte and the target file index (uvarint):
//
//	recCopy     base path (uvarint length + bytes)
//	recDup      index of an earlier record's target file (uvarint)
//	recLiteral  exactly Size bytes (the size comes from the manifest)
//	recDelta    base path, base size (uvarint), then blocks, then a 0:
//	            block = op count n (uvarint, 1..maxBlockOps)
//	                    n × (diff length uvarint, extra length uvarint, seek varint)
//	                    diff bytes of all n ops, zero-run-length coded
//	                    extra bytes of all n ops
//	recBSDiff   base path, base size, payload length (uvarint), BSDIFF40 payload
//
// A delta op adds its diff bytes to the base bytes at the old position and
// writes the sums, writes its extra bytes, then moves the old position by
// seek: bsdiff's control/diff/extra triple. Grouping a block's diff bytes
// and extra bytes (instead of interleaving them per op) makes the body ~7 %
// smaller, because each group is homogeneous for the entropy coder.
const (
	magic         = "CAPDELTA"
	formatVersion = 1
	headerSize    = 8 + 1 + 1 + 2 + 32 + 32 + 4

	codecNone   = 0
	codecZstd   = 1
	codecBrotli = 2

	recEnd     = 0
	recCopy    = 1
	recDup     = 2
	recLiteral = 3
	recDelta   = 4
	recBSDiff  = 5

	// maxBlockOps bounds one block's control list, so a decoder holds at
	// most 4096 × 24 bytes of control data at once.
	maxBlockOps = 4096
)

// header is the fixed stream header.
type header struct {
	version byte
	codec   byte
	base    release.Hash
	target  release.Hash
	files   uint32
}

func (h *header) marshal() []byte {
	b := make([]byte, headerSize)
	copy(b, magic)
	b[8] = h.version
	b[9] = h.codec
	copy(b[12:44], h.base[:])
	copy(b[44:76], h.target[:])
	binary.BigEndian.PutUint32(b[76:], h.files)
	return b
}

func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < headerSize || string(b[:8]) != magic {
		return h, fmt.Errorf("%w: not a Capstan patch (bad magic)", ErrCorruptPatch)
	}
	h.version, h.codec = b[8], b[9]
	if h.version != formatVersion {
		return h, fmt.Errorf("%w: format version %d", ErrUnsupportedVersion, h.version)
	}
	if h.codec != codecNone && h.codec != codecZstd && h.codec != codecBrotli {
		return h, fmt.Errorf("%w: body codec %d", ErrUnsupportedVersion, h.codec)
	}
	if b[10] != 0 || b[11] != 0 {
		return h, fmt.Errorf("%w: reserved header bytes are set", ErrUnsupportedVersion)
	}
	copy(h.base[:], b[12:44])
	copy(h.target[:], b[44:76])
	h.files = binary.BigEndian.Uint32(b[76:])
	return h, nil
}

func codecName(c byte) string {
	switch c {
	case codecZstd:
		return "zstd"
	case codecBrotli:
		return "brotli"
	}
	return "none"
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

func (b *body) byte() (byte, error) {
	c, err := b.r.ReadByte()
	if err != nil {
		return 0, truncated(err)
	}
	return c, nil
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
