package delta

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
