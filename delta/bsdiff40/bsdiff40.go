package bsdiff40

import (
	"compress/bzip2"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic starts every BSDIFF40 patch.
const Magic = "BSDIFF40"

// HeaderSize is the size of the fixed header: magic, compressed control
// length, compressed diff length, new size.
const HeaderSize = 32

// maxSeek bounds one control seek. Real seeks are within the old file; the
// bound only keeps the old position far from int64 overflow.
const maxSeek = 1 << 48

// ErrCorrupt is wrapped by every error caused by the patch bytes.
var ErrCorrupt = errors.New("bsdiff40: corrupt patch")

// ErrSize is returned when the patch declares a new size other than the one
// the caller expects.
var ErrSize = errors.New("bsdiff40: patch new size differs from expected size")

// Header is the parsed fixed header of a patch.
type Header struct {
	CtrlLen int64 // bytes of the bzip2 control stream
	DiffLen int64 // bytes of the bzip2 diff stream
	NewSize int64 // size of the file the patch produces
}

// offtin decodes bsdiff's sign-magnitude little-endian int64.
func offtin(b []byte) int64 {
	y := int64(binary.LittleEndian.Uint64(b) &^ (1 << 63))
	if b[7]&0x80 != 0 {
		y = -y
	}
	return y
}

// ParseHeader checks the magic and that both stream lengths are
// non-negative and fit in patchSize bytes.
func ParseHeader(b []byte, patchSize int64) (Header, error) {
	if len(b) < HeaderSize || patchSize < HeaderSize {
		return Header{}, fmt.Errorf("%w: shorter than the header", ErrCorrupt)
	}
	if string(b[:8]) != Magic {
		return Header{}, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	h := Header{CtrlLen: offtin(b[8:]), DiffLen: offtin(b[16:]), NewSize: offtin(b[24:])}
	if h.CtrlLen < 0 || h.DiffLen < 0 || h.NewSize < 0 {
		return Header{}, fmt.Errorf("%w: negative length in header", ErrCorrupt)
	}
	if h.CtrlLen > patchSize-HeaderSize || h.DiffLen > patchSize-HeaderSize-h.CtrlLen {
		return Header{}, fmt.Errorf("%w: stream lengths exceed the patch size", ErrCorrupt)
	}
	return h, nil
}

// Patch applies patch (patchSize bytes) to old (oldSize bytes) and writes
// exactly newSize bytes to w. It fails with ErrSize unless the header
// declares newSize, so the caller's bound (a manifest entry) is the only
// size that is ever trusted. Reads of old outside [0, oldSize) add zero, as
// in the reference bspatch. On error, w may have received a prefix.
func Patch(old io.ReaderAt, oldSize int64, patch io.ReaderAt, patchSize int64, newSize int64, w io.Writer) error {
	var hb [HeaderSize]byte
	if patchSize < HeaderSize {
		return fmt.Errorf("%w: shorter than the header", ErrCorrupt)
	}
	if n, err := patch.ReadAt(hb[:], 0); n < HeaderSize {
		return fmt.Errorf("%w: read header: %v", ErrCorrupt, err)
	}
	h, err := ParseHeader(hb[:], patchSize)
	if err != nil {
		return err
	}
	if h.NewSize != newSize {
		return fmt.Errorf("%w: header says %d, expected %d", ErrSize, h.NewSize, newSize)
	}
	ctrl := bzip2.NewReader(io.NewSectionReader(patch, HeaderSize, h.CtrlLen))
	diff := bzip2.NewReader(io.NewSectionReader(patch, HeaderSize+h.CtrlLen, h.DiffLen))
	extraOff := HeaderSize + h.CtrlLen + h.DiffLen
	extra := bzip2.NewReader(io.NewSectionReader(patch, extraOff, patchSize-extraOff))

	const bufSize = 32 << 10
	buf := make([]byte, bufSize)
	ob := make([]byte, bufSize)
	var cb [24]byte
	var newPos, oldPos int64
	for newPos < newSize {
		if _, err := io.ReadFull(ctrl, cb[:]); err != nil {
			return fmt.Errorf("%w: control stream: %v", ErrCorrupt, err)
		}
		add, copyLen, seek := offtin(cb[0:]), offtin(cb[8:]), offtin(cb[16:])
		if add < 0 || copyLen < 0 || add > newSize-newPos || copyLen > newSize-newPos-add {
			return fmt.Errorf("%w: control value out of range", ErrCorrupt)
		}
		if seek > maxSeek || seek < -maxSeek {
			return fmt.Errorf("%w: seek out of range", ErrCorrupt)
		}
		for add > 0 {
			n := min(add, bufSize)
			if _, err := io.ReadFull(diff, buf[:n]); err != nil {
				return fmt.Errorf("%w: diff stream: %v", ErrCorrupt, err)
			}
			if err := addOld(old, oldSize, oldPos, buf[:n], ob[:n]); err != nil {
				return err
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			add -= n
			oldPos += n
			newPos += n
		}
		for copyLen > 0 {
			n := min(copyLen, bufSize)
			if _, err := io.ReadFull(extra, buf[:n]); err != nil {
				return fmt.Errorf("%w: extra stream: %v", ErrCorrupt, err)
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			copyLen -= n
			newPos += n
		}
		oldPos += seek
		if oldPos > maxSeek || oldPos < -maxSeek {
			return fmt.Errorf("%w: old position out of range", ErrCorrupt)
		}
	}
	return nil
}

// addOld adds old[pos:pos+len(b)] to b byte-wise, treating bytes outside
// [0, oldSize) as zero. scratch has len(b).
func addOld(old io.ReaderAt, oldSize, pos int64, b, scratch []byte) error {
	lo, hi := max(pos, 0), min(pos+int64(len(b)), oldSize)
	if lo >= hi {
		return nil
	}
	s := scratch[:hi-lo]
	// ReaderAt may report io.EOF along with a full read at the end.
	if n, err := old.ReadAt(s, lo); n < len(s) {
		return fmt.Errorf("bsdiff40: read old file: %w", err)
	}
	d := b[lo-pos:]
	for i, c := range s {
		d[i] += c
	}
	return nil
}
