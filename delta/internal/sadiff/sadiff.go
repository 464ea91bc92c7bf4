package sadiff

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"index/suffixarray"
	"math"
)

// Op is one step of a delta, in the order a patcher applies it: add Diff
// byte-wise to the len(Diff) bytes of old at the current old position and
// write the sums, write Extra as is, then move the old position by Seek.
// Diff and Extra alias buffers owned by Diff's caller-visible output and are
// valid only during the callback.
type Op struct {
	Diff  []byte
	Extra []byte
	Seek  int64
}

// MaxSize bounds the old and new inputs: positions are held as int32 in the
// suffix array, and larger files belong to the literal fallback anyway.
const MaxSize = math.MaxInt32 - 1

// ErrTooLarge is returned for inputs above MaxSize.
var ErrTooLarge = errors.New("sadiff: input too large")

// checkEvery is how many scan steps pass between context checks; a step is
// one suffix-array search, a few microseconds.
const checkEvery = 1 << 12

// The search stride grows by one every 1<<strideShift bytes without a match,
// up to maxStride. Measured on swagger-ui's bundles, no delta changes.
const (
	strideShift = 12
	maxStride   = 16
)

// Diff computes the delta turning old into new and calls emit for each Op in
// order. It returns ctx.Err() if ctx ends first, or the first error emit
// returns. Memory: 4 bytes per old byte for the suffix array plus one new-size
// buffer for the diff bytes.
func Diff(ctx context.Context, old, new []byte, emit func(Op) error) error {
	if len(old) > MaxSize || len(new) > MaxSize {
		return ErrTooLarge
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	sa, err := suffixArray(old)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return scan(ctx, sa, old, new, emit)
}

// suffixArray returns the suffix array of data, built by the standard
// library's SA-IS. The index keeps its array unexported, so we read it back
// from the documented serialization (Index.Write), which streams it as
// uvarint chunks; this costs one pass and no second copy of data.
func suffixArray(data []byte) ([]int32, error) {
	if len(data) == 0 {
		return nil, nil
	}
	idx := suffixarray.New(data)
	p := &saParser{sa: make([]int32, 0, len(data))}
	if err := idx.Write(p); err != nil {
		return nil, fmt.Errorf("sadiff: read suffix array: %w", err)
	}
	if len(p.sa) != len(data) || len(p.pend) != 0 {
		return nil, errors.New("sadiff: read suffix array: unexpected serialization")
	}
	return p.sa, nil
}

// saParser decodes the byte stream of suffixarray.Index.Write: a 10-byte
// varint length, the data, then chunks each made of a 10-byte varint chunk
// size (counting itself) and uvarint suffix positions.
type saParser struct {
	state int // 0: length, 1: data, 2: chunk header, 3: chunk body
	need  int // bytes still to consume in the current state
	pend  []byte
	sa    []int32
}

func (p *saParser) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		switch p.state {
		case 0, 2:
			take := min(binary.MaxVarintLen64-len(p.pend), len(b))
			p.pend = append(p.pend, b[:take]...)
			b = b[take:]
			if len(p.pend) < binary.MaxVarintLen64 {
				continue
			}
			v, w := binary.Varint(p.pend)
			if w <= 0 || v < 0 {
				return 0, errors.New("bad varint")
			}
			p.pend = p.pend[:0]
			if p.state == 0 {
				p.state, p.need = 1, int(v)
			} else {
				if v < binary.MaxVarintLen64 {
					return 0, errors.New("bad chunk size")
				}
				p.state, p.need = 3, int(v)-binary.MaxVarintLen64
			}
		case 1:
			take := min(p.need, len(b))
			b = b[take:]
			p.need -= take
			if p.need == 0 {
				p.state = 2
			}
		case 3:
			take := min(p.need, len(b))
			p.pend = append(p.pend, b[:take]...)
			b = b[take:]
			p.need -= take
			if p.need > 0 {
				continue
			}
			for q := p.pend; len(q) > 0; {
				v, w := binary.Uvarint(q)
				if w <= 0 || v > math.MaxInt32 {
					return 0, errors.New("bad position")
				}
				p.sa = append(p.sa, int32(v))
				q = q[w:]
			}
			p.pend = p.pend[:0]
			p.state = 2
		}
	}
	if p.state == 1 && p.need == 0 {
		p.state = 2
	}
	return n, nil
}

// matchlen is the length of the common prefix of a and b.
func matchlen(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	// Compare 8 bytes at a time: long matches are the common case.
	for i+8 <= n && binary.LittleEndian.Uint64(a[i:]) == binary.LittleEndian.Uint64(b[i:]) {
		i += 8
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// search finds the longest prefix of new that occurs in old, by binary
// search over the suffix array; it returns the position in old and length.
func search(sa []int32, old, new []byte) (pos, n int) {
	st, en := 0, len(sa)-1
	for en-st >= 2 {
		x := st + (en-st)/2
		if bytes.Compare(old[sa[x]:], new) < 0 {
			st = x
		} else {
			en = x
		}
	}
	x := matchlen(old[sa[st]:], new)
	y := matchlen(old[sa[en]:], new)
	if x > y {
		return int(sa[st]), x
	}
	return int(sa[en]), y
}

// scan is bsdiff 4.3's main loop (Colin Percival, BSD licence): find the next
// exact match that beats extending the previous alignment by more than 8
// bytes, then split the gap between the two alignments into an approximate
// "diff" run and a literal "extra" run.
func scan(ctx context.Context, sa []int32, old, new []byte, emit func(Op) error) error {
	oldsize, newsize := len(old), len(new)
	db := make([]byte, 0, 64<<10)
	var scanPos, ln, pos, lastscan, lastpos, lastoffset int
	steps := 0
	for scanPos < newsize {
		oldscore := 0
		scanPos += ln
		scsc := scanPos
		from := scanPos // where this search for a new alignment began
		for step := 1; scanPos < newsize; scanPos += step {
			if steps++; steps%checkEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if oldsize > 0 {
				pos, ln = search(sa, old, new[scanPos:])
			} else {
				pos, ln = 0, 0
			}
			for ; scsc < scanPos+ln; scsc++ {
				if scsc+lastoffset < oldsize && scsc+lastoffset >= 0 && old[scsc+lastoffset] == new[scsc] {
					oldscore++
				}
			}
			if (ln == oldscore && ln != 0) || ln > oldscore+8 {
				break
			}
			// Far from the last match the search runs at every byte and
			// finds nothing (new code, or incompressible data: 8 MB of
			// random bytes took 11 s). Stride instead, wider the longer the
			// gap: a match worth having is longer than the stride and is
			// found a little late, and the backward extension below
			// recovers its start.
			step = min(maxStride, 1+(scanPos-from)>>strideShift)
			for p := scanPos; p < scanPos+step && p < newsize; p++ {
				if p+lastoffset < oldsize && p+lastoffset >= 0 && old[p+lastoffset] == new[p] {
					oldscore--
				}
			}
		}
		scanPos = min(scanPos, newsize)
		if ln == oldscore && scanPos != newsize {
			continue
		}
		// Extend the previous alignment forwards while it matches at
		// least half the bytes.
		s, sf, lenf := 0, 0, 0
		for i := 0; lastscan+i < scanPos && lastpos+i < oldsize; {
			if old[lastpos+i] == new[lastscan+i] {
				s++
			}
			i++
			if s*2-i > sf*2-lenf {
				sf, lenf = s, i
			}
		}
		// Extend the new alignment backwards the same way.
		lenb := 0
		if scanPos < newsize {
			s, sb := 0, 0
			for i := 1; scanPos >= lastscan+i && pos >= i; i++ {
				if old[pos-i] == new[scanPos-i] {
					s++
				}
				if s*2-i > sb*2-lenb {
					sb, lenb = s, i
				}
			}
		}
		// If they overlap, cut where the split scores best.
		if lastscan+lenf > scanPos-lenb {
			overlap := (lastscan + lenf) - (scanPos - lenb)
			s, ss, lens := 0, 0, 0
			for i := 0; i < overlap; i++ {
				if new[lastscan+lenf-overlap+i] == old[lastpos+lenf-overlap+i] {
					s++
				}
				if new[scanPos-lenb+i] == old[pos-lenb+i] {
					s--
				}
				if s > ss {
					ss, lens = s, i+1
				}
			}
			lenf += lens - overlap
			lenb -= lens
		}
		db = db[:0]
		for i := 0; i < lenf; i++ {
			db = append(db, new[lastscan+i]-old[lastpos+i])
		}
		extraLen := (scanPos - lenb) - (lastscan + lenf)
		op := Op{
			Diff:  db,
			Extra: new[lastscan+lenf : lastscan+lenf+extraLen],
			Seek:  int64((pos - lenb) - (lastpos + lenf)),
		}
		if err := emit(op); err != nil {
			return err
		}
		lastscan = scanPos - lenb
		lastpos = pos - lenb
		lastoffset = pos - scanPos
	}
	return nil
}
