package delta

import (
	"path"
	"slices"
	"strings"

	"github.com/capstan-ota/capstan/release"
)

// twinFinder pairs a target file with the base file it most likely evolved
// from. Bundlers (webpack, Vite, Rollup, Stencil) put a content hash in
// names, so a changed chunk is also a renamed one: p-3f9c1a.js becomes
// p-8e02b7.js, main.a1b2c3d4.chunk.js becomes main.e5f6a7b8.chunk.js.
type twinFinder struct {
	base    *release.Manifest
	byStem  map[string][]int // hash-free name → base file indexes
	byExt   map[string][]int // directory + extension → base files gone from the target
	renames bool
}

func newTwinFinder(base, target *release.Manifest, renames bool) *twinFinder {
	t := &twinFinder{base: base, renames: renames, byStem: map[string][]int{}, byExt: map[string][]int{}}
	if !renames {
		return t
	}
	for i, f := range base.Files {
		t.byStem[stem(f.Path)] = append(t.byStem[stem(f.Path)], i)
		// Only files that disappeared can be the loose "same extension,
		// similar size" twin: a file still present is its own file's twin.
		if _, still := target.Lookup(f.Path); !still {
			k := extKey(f.Path)
			t.byExt[k] = append(t.byExt[k], i)
		}
	}
	return t
}

// index returns the index of the base file at path p.
func (t *twinFinder) index(p string) (int, bool) {
	i, ok := slices.BinarySearchFunc(t.base.Files, p, func(f release.File, p string) int { return strings.Compare(f.Path, p) })
	return i, ok
}

// find returns the base index of the twin of f and whether it was found by
// rename.
func (t *twinFinder) find(f release.File) (int, bool, bool) {
	if i, ok := t.index(f.Path); ok {
		return i, false, true
	}
	if !t.renames {
		return 0, false, false
	}
	if i, ok := t.closest(t.byStem[stem(f.Path)], f.Size, 0); ok {
		return i, true, true
	}
	// Loose match: same folder and extension, size within a factor of 2.
	if i, ok := t.closest(t.byExt[extKey(f.Path)], f.Size, 2); ok {
		return i, true, true
	}
	return 0, false, false
}

// closest picks the candidate whose size is nearest size; with factor > 0
// it must also be within that factor of size.
func (t *twinFinder) closest(cands []int, size int64, factor int64) (int, bool) {
	best, bestD := -1, int64(-1)
	for _, i := range cands {
		s := t.base.Files[i].Size
		if s == 0 {
			continue
		}
		if factor > 0 && (s > size*factor || size > s*factor) {
			continue
		}
		d := s - size
		if d < 0 {
			d = -d
		}
		if bestD < 0 || d < bestD {
			best, bestD = i, d
		}
	}
	return best, best >= 0
}

// stem removes hash-like segments from a path's file name:
// "js/main.a1b2c3d4.chunk.js" → "js/main.*.chunk.js", "p-3f9c1a.js" → "p-*.js".
func stem(p string) string {
	dir, name := path.Split(p)
	var b strings.Builder
	b.WriteString(dir)
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && !isSep(name[i]) {
			continue
		}
		seg := name[start:i]
		if hashLike(seg) {
			b.WriteByte('*')
		} else {
			b.WriteString(seg)
		}
		if i < len(name) {
			b.WriteByte(name[i])
		}
		start = i + 1
	}
	return b.String()
}

func isSep(c byte) bool { return c == '.' || c == '-' || c == '_' || c == '~' }

// hashLike reports whether a name segment looks like a bundler content hash:
// at least 6 characters of letters and digits with at least one digit and
// (hex, or mixed case as in base64url hashes). Words like "chunk", "vendor"
// or "es2015" mostly stay; a false positive only costs a worse twin guess,
// which Build then measures against a literal anyway.
func hashLike(s string) bool {
	if len(s) < 6 || len(s) > 64 {
		return false
	}
	var digits, lower, upper, hex int
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
			hex++
		case c >= 'a' && c <= 'z':
			lower++
			if c <= 'f' {
				hex++
			}
		case c >= 'A' && c <= 'Z':
			upper++
		default:
			return false
		}
	}
	if digits == 0 {
		return false
	}
	return hex == len(s) || (lower > 0 && upper > 0) || digits >= 2 && digits+lower+upper == len(s) && len(s) >= 8
}

// extKey is the folder plus the final extension: "assets/x.js" → "assets/ .js".
func extKey(p string) string {
	dir, name := path.Split(p)
	return dir + " " + path.Ext(name)
}
