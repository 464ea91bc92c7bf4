package delta

import (
	"math/bits"
	"slices"
)

// gear is the table of a gear rolling hash (as in FastCDC): h = h<<1 +
// gear[b] depends on the last 64 bytes only. Filled once from splitmix64;
// never written after.
var gear = func() (t [256]uint64) {
	x := uint64(0x9e3779b97f4a7c15)
	for i := range t {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		t[i] = z ^ z>>31
	}
	return t
}()

// anchorMask picks about one window in 64 as a sample, by content, so the
// samples of two files line up wherever they share text whatever its
// offset.
const anchorMask = 63

// smallSibling: below this many bytes of new file plus sibling, the
// sibling is always used.
const smallSibling = 256 << 10

// anchors returns the sampled 64-byte-window hashes of b.
func anchors(b []byte) map[uint64]struct{} {
	set := make(map[uint64]struct{}, len(b)/(anchorMask+1)+1)
	var h uint64
	for i, c := range b {
		h = h<<1 + gear[c]
		if i >= 63 && h&anchorMask == 0 {
			set[h] = struct{}{}
		}
	}
	return set
}

// siblingHelps estimates whether diffing cur against twin+sib beats twin
// alone: of the sampled windows of cur that twin lacks (the new text), does
// sib hold at least a tenth? Unrelated chunks of the same type share next to
// none and only double the diff's time and memory (measured: 1.5× build
// time on 1,400 unrelated chunks); webpack's UMD/ES twins and source maps
// of the same sources share most of it. Costs about 1 ns per byte.
func siblingHelps(twin, cur, sib []byte) bool {
	// Small files have too few samples to judge, and cost nothing to diff.
	if len(cur)+len(sib) <= smallSibling {
		return true
	}
	old := anchors(twin)
	var novel []uint64
	var h uint64
	seen := map[uint64]struct{}{}
	for i, c := range cur {
		h = h<<1 + gear[c]
		if i >= 63 && h&anchorMask == 0 {
			if _, ok := old[h]; !ok {
				if _, dup := seen[h]; !dup {
					seen[h] = struct{}{}
					novel = append(novel, h)
				}
			}
		}
	}
	if len(novel) == 0 {
		return false
	}
	in := anchors(sib)
	hit := 0
	for _, v := range novel {
		if _, ok := in[v]; ok {
			hit++
		}
	}
	return hit >= 2 && hit*10 >= len(novel)
}

// The cross-file index (decision 015). A changed or new file is diffed
// against the old files that hold its text, wherever they are: bundlers
// rename chunks (so a path says little), split and merge them (so code
// moves between files), and hash cascades rename unchanged ones. The index
// samples every old file's content by content-defined fingerprints (a
// rolling hash of a short window, kept where its low bits are zero, so two
// files that share text share fingerprints whatever the offset), and maps
// each fingerprint to the files that hold it.

// maxIndexSamples bounds the fingerprints the index keeps: its memory is
// about 40 bytes each, so 4 Mi samples are ~160 MB at most. The sampling
// rate drops for larger releases to stay under it.
const maxIndexSamples = 4 << 20

// maxPosting drops a fingerprint held by more files than this: boilerplate
// (licence headers, runtime helpers) says nothing about where a file came
// from.
const maxPosting = 32

// fpWindow is the window of a fingerprint, in bytes: short enough that
// minified code whose identifiers a bundler renamed still shares windows
// with its old self (64-byte windows found next to nothing there), long
// enough to say something about where text came from.
const fpWindow = 24

// fpIndex maps sampled fingerprints of the base files to those files.
type fpIndex struct {
	mask uint64              // a window is sampled when h&mask == 0
	post map[uint64][]uint32 // fingerprint → base indexes holding it (nil: too common)
}

// samplingMask returns the mask for a release of total bytes: one window
// in 64, or fewer for large releases (maxIndexSamples).
func samplingMask(total int64) uint64 {
	mask := uint64(anchorMask)
	for int64(mask+1)*maxIndexSamples < total {
		mask = mask<<1 | 1
	}
	return mask
}

// fingerprints calls f for each sampled fingerprint of b, once per value:
// a buzhash of each fpWindow-byte window, kept where its low bits (mask)
// are zero.
func fingerprints(b []byte, mask uint64, f func(uint64)) {
	seen := make(map[uint64]struct{}, len(b)/int(mask+1)+1)
	var h uint64
	for i, c := range b {
		h = bits.RotateLeft64(h, 1) ^ gear[c]
		if i >= fpWindow {
			h ^= bits.RotateLeft64(gear[b[i-fpWindow]], fpWindow)
		}
		if i >= fpWindow-1 && h&mask == 0 {
			if _, ok := seen[h]; !ok {
				seen[h] = struct{}{}
				f(h)
			}
		}
	}
}

// add indexes base file i with content b.
func (x *fpIndex) add(i int, b []byte) {
	fingerprints(b, x.mask, func(h uint64) {
		p, ok := x.post[h]
		switch {
		case !ok:
			x.post[h] = []uint32{uint32(i)}
		case p == nil: // too common already
		case len(p) >= maxPosting:
			x.post[h] = nil
		default:
			x.post[h] = append(p, uint32(i))
		}
	})
}

// cover picks the base files to diff cur against: first the twin (if
// twin ≥ 0), then, greedily, the file holding the most of cur's sampled
// text not yet held by those picked, while a file adds at least minGain of
// the samples and the picked files stay within budget bytes. size gives a
// base file's size.
func (x *fpIndex) cover(cur []byte, twin int, size func(int) int64, budget int64) []int {
	var samples []uint64
	fingerprints(cur, x.mask, func(h uint64) {
		if p := x.post[h]; len(p) > 0 {
			samples = append(samples, h)
		}
	})
	var picked []int
	var used int64
	covered := make([]bool, len(samples))
	gain := map[uint32]int{}
	take := func(i int) {
		picked = append(picked, i)
		used += size(i)
		for k, h := range samples {
			if covered[k] || !slices.Contains(x.post[h], uint32(i)) {
				continue
			}
			covered[k] = true
			for _, j := range x.post[h] {
				gain[j]--
			}
		}
		delete(gain, uint32(i))
	}
	for _, h := range samples {
		for _, j := range x.post[h] {
			gain[j]++
		}
	}
	if twin >= 0 {
		take(twin)
	}
	minGain := max(2, len(samples)/100)
	for len(picked) < maxSources {
		best, bestGain := -1, 0
		for j, g := range gain {
			// Ties go to the lower index, so builds are reproducible.
			if g > bestGain || g == bestGain && g > 0 && int(j) < best {
				best, bestGain = int(j), g
			}
		}
		if best < 0 || bestGain < minGain {
			break
		}
		if used+size(best) > budget {
			delete(gain, uint32(best)) // too big to add; a smaller one may fit
			continue
		}
		take(best)
	}
	return picked
}
