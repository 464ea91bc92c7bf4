package delta

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gabstv/go-bsdiff/pkg/bsdiff"

	"github.com/capstan-ota/capstan/release"
	"github.com/klauspost/compress/zstd"
)

// text returns n bytes of JavaScript-looking text from seed.
func text(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 9))
	words := []string{"function ", "return ", "var ", "e", "t", "n", "(", ")", "{", "}", ";", "=", ".map", "0x1f", "\n"}
	var b []byte
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
	}
	return b[:n]
}

// edit returns b with a few insertions and replacements.
func edit(seed uint64, b []byte) []byte {
	r := rand.New(rand.NewPCG(seed, 10))
	out := append([]byte(nil), b...)
	for range 1 + len(b)/2000 {
		i := r.IntN(len(out) + 1)
		out = append(out[:i], append([]byte("/*v2*/"), out[i:]...)...)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	app := text(1, 40000)
	vendor := text(2, 60000)
	random := make([]byte, 5000)
	rnd := rand.New(rand.NewPCG(5, 5))
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	cases := []struct {
		name     string
		from, to map[string][]byte
		check    func(t *testing.T, st BuildStats)
	}{
		{
			name: "changed, new, deleted, unchanged",
			from: map[string][]byte{"index.html": []byte("<html>"), "app.js": app, "gone.css": []byte("a{}")},
			to:   map[string][]byte{"index.html": []byte("<html>"), "app.js": edit(1, app), "new/deep/x.txt": []byte("new file")},
			check: func(t *testing.T, st BuildStats) {
				if st.Kept != 1 || st.Dropped != 2 || st.Deltas != 1 || st.Literals != 1 {
					t.Errorf("stats %+v", st)
				}
			},
		},
		{
			name: "content-hash rename",
			from: map[string][]byte{"assets/p-3f9c1a7e.js": app, "assets/vendor.0a1b2c3d.chunk.js": vendor},
			to:   map[string][]byte{"assets/p-8e02b7aa.js": edit(2, app), "assets/vendor.9f8e7d6c.chunk.js": edit(3, vendor)},
			check: func(t *testing.T, st BuildStats) {
				if st.Renames != 2 || st.Deltas != 2 {
					t.Errorf("stats %+v", st)
				}
			},
		},
		{
			name: "sibling bundles",
			from: map[string][]byte{"umd.js": app, "esm.js": append([]byte("export "), app...)},
			to:   map[string][]byte{"umd.js": edit(5, app), "esm.js": append([]byte("export "), edit(5, app)...)},
			check: func(t *testing.T, st BuildStats) {
				if st.Siblings != 1 || st.Deltas != 2 {
					t.Errorf("stats %+v", st)
				}
			},
		},
		{
			name: "moved file and duplicate content",
			from: map[string][]byte{"a/app.js": app},
			to:   map[string][]byte{"b/app.js": app, "c/copy.js": app, "d/twice.txt": []byte("same"), "e/twice.txt": []byte("same")},
			check: func(t *testing.T, st BuildStats) {
				if st.Copies != 2 || st.Dups != 1 || st.Literals != 1 {
					t.Errorf("stats %+v", st)
				}
			},
		},
		{
			name: "empty files and empty release",
			from: map[string][]byte{"empty": {}},
			to:   map[string][]byte{"empty": {}, "also-empty": {}},
		},
		{
			name: "no files",
			from: map[string][]byte{"x": []byte("x")},
			to:   map[string][]byte{},
		},
		{
			name: "random content falls back to literal",
			from: map[string][]byte{"blob.bin": text(3, 5000)},
			to:   map[string][]byte{"blob.bin": random},
			check: func(t *testing.T, st BuildStats) {
				if st.Literals != 1 {
					t.Errorf("stats %+v", st)
				}
			},
		},
		{
			name: "full bundle",
			to:   map[string][]byte{"index.html": []byte("<html>"), "app.js": app},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := newMemSource()
			var from *bundle
			if c.from != nil {
				from = makeBundle(t, src, "1.0.0", c.from)
			}
			to := makeBundle(t, src, "1.0.1", c.to)
			_, st := roundTrip(t, DefaultBuildConfig(), src, from, to)
			if c.check != nil {
				c.check(t, st)
			}
		})
	}
}

func TestModesAndZstdBody(t *testing.T) {
	src := newMemSource()
	from := makeBundle(t, src, "1.0.0", map[string][]byte{"run.sh": text(1, 9000)})
	to := makeBundle(t, src, "1.0.1", map[string][]byte{"run.sh": edit(1, text(1, 9000)), "ro.txt": []byte("read only")})
	to.m.Files[0].Mode = 0o444 // ro.txt sorts first
	to.m.Files[1].Mode = 0o755
	enc, _ := to.m.EncodeDoc()
	to.id = release.Sum(enc)
	cfg := DefaultBuildConfig()
	cfg.BrotliMaxBytes = -1 // zstd body
	_, st := roundTrip(t, cfg, src, from, to)
	if st.BrotliBytes != 0 || st.ZstdBytes == 0 {
		t.Fatalf("stats %+v, want zstd frames only", st)
	}
}

// TestZeroBuildConfigIsTheDefault: BuildConfig{} builds the patch the
// origin builds with DefaultBuildConfig (every zero field means its
// default), and the negative "off" values turn features off.
func TestZeroBuildConfigIsTheDefault(t *testing.T) {
	src := newMemSource()
	app := text(31, 40000)
	from := makeBundle(t, src, "1.0.0", map[string][]byte{"app.js": app, "old-name.css": text(32, 5000)})
	to := makeBundle(t, src, "1.0.1", map[string][]byte{"app.js": edit(31, app), "new-name.css": edit(32, text(32, 5000)), "new.txt": text(33, 3000)})
	want, wst := roundTrip(t, DefaultBuildConfig(), src, from, to)
	got, gst := roundTrip(t, BuildConfig{}, src, from, to)
	if !bytes.Equal(got, want) || gst.Deltas == 0 || gst.BrotliBytes == 0 {
		t.Fatalf("BuildConfig{} built %d bytes (%+v), DefaultBuildConfig %d bytes (%+v)", len(got), gst, len(want), wst)
	}
	_, off := roundTrip(t, BuildConfig{MaxDiffSize: -1, BrotliMaxBytes: -1, NoRenames: true}, src, from, to)
	if off.Deltas != 0 || off.BrotliBytes != 0 || off.Renames != 0 {
		t.Fatalf("with deltas, brotli and renames off: %+v", off)
	}
}

// rawStream assembles an uncompressed stream by hand, to reach records
// Build does not choose on its own and to craft hostile ones.
func rawStream(base, target release.Hash, records ...[]byte) []byte {
	h := newHeader(base, target)
	var body []byte
	for _, r := range records {
		body = append(body, r...)
	}
	var b bytes.Buffer
	b.Write(h.marshal())
	b.WriteByte(codecNone)
	cw := &chunkWriter{w: &b, buf: make([]byte, 0, 7)} // small chunks: exercise their joins
	cw.Write(body)
	cw.end()
	b.WriteByte(frameEnd)
	return b.Bytes()
}

// rec is a file record for path (mode 644) with the given parts after it.
func rec(kind byte, path string, parts ...[]byte) []byte {
	b := appendUvarint(appendString([]byte{kind}, path), 0o644)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// drop is a recDrop record of base indexes.
func drop(idx ...int) []byte {
	b := appendUvarint([]byte{recDrop}, uint64(len(idx)))
	next := 0
	for _, i := range idx {
		b = appendUvarint(b, uint64(i-next))
		next = i + 1
	}
	return b
}

func uv(v uint64) []byte { return appendUvarint(nil, v) }

// applyRaw applies a stream onto from, installed in a folder, into a fresh
// folder.
func applyRaw(t *testing.T, patch []byte, from, to *bundle) (string, error) {
	t.Helper()
	d, err := OpenDir(writeDir(t, from.files))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out := t.TempDir()
	_, _, err = Apply(context.Background(), DefaultApplyConfig(), bytes.NewReader(patch), baseOf(from, d), targetOf(to), out)
	return out, err
}

func TestBSDiffRecordApplies(t *testing.T) {
	src := newMemSource()
	old := text(4, 20000)
	from := makeBundle(t, src, "1.0.0", map[string][]byte{"app.js": old})
	to := makeBundle(t, src, "1.0.1", map[string][]byte{"app.js": edit(4, old)})
	p, err := bsdiff.Bytes(old, to.files["app.js"])
	if err != nil {
		t.Fatal(err)
	}
	s := rawStream(from.id, to.id, drop(0), rec(recBSDiff, "app.js", uv(uint64(len(to.files["app.js"]))), uv(0), uv(uint64(len(p))), p))
	out, err := applyRaw(t, s, from, to)
	if err != nil {
		t.Fatal(err)
	}
	checkDir(t, out, to)
}

// Config.BSDiff adds a BSDIFF40 candidate; whichever wins, the patch applies.
func TestBSDiffCandidate(t *testing.T) {
	src := newMemSource()
	old := text(4, 20000)
	from := makeBundle(t, src, "1.0.0", map[string][]byte{"app.js": old})
	to := makeBundle(t, src, "1.0.1", map[string][]byte{"app.js": edit(4, old)})
	calls := 0
	cfg := DefaultBuildConfig()
	cfg.BSDiffMaxSize = 1 << 20
	cfg.BSDiff = func(o, n []byte) ([]byte, error) {
		calls++
		return bsdiff.Bytes(o, n)
	}
	_, st := roundTrip(t, cfg, src, from, to)
	if calls != 1 || st.Deltas+st.BSDiffs != 1 {
		t.Fatalf("BSDiff called %d times, stats %+v", calls, st)
	}
}

func TestApplyRejects(t *testing.T) {
	src := newMemSource()
	// Base: a.txt (0), b.txt (1), k.txt (2). Target: a.txt changed, b.txt
	// gone, c.txt = the old a.txt, k.txt kept.
	from := makeBundle(t, src, "1.0.0", map[string][]byte{"a.txt": []byte("hello world"), "b.txt": []byte("bbb"), "k.txt": []byte("kept")})
	to := makeBundle(t, src, "1.0.1", map[string][]byte{"a.txt": []byte("hello there"), "c.txt": []byte("hello world"), "k.txt": []byte("kept")})
	lit := rec(recLiteral, "a.txt", uv(11), []byte("hello there"))
	cp := rec(recCopy, "c.txt", uv(0))
	good := rawStream(from.id, to.id, drop(0, 1), lit, cp)
	if _, err := applyRaw(t, good, from, to); err != nil {
		t.Fatalf("the well-formed stream fails: %v", err)
	}
	other := release.Sum([]byte("other"))
	withHeader := func(mut func(b []byte)) []byte {
		b := bytes.Clone(good)
		mut(b)
		return b
	}
	delta := func(ops ...[]byte) []byte {
		return rawStream(from.id, to.id, drop(0, 1), rec(recDelta, "a.txt", append([][]byte{uv(11), oneBase(0)}, ops...)...), cp)
	}
	v1 := withHeader(func(b []byte) { b[8] = 1 })
	cases := []struct {
		name  string
		patch []byte
		want  error
	}{
		{"empty", nil, ErrCorruptPatch},
		{"bad magic", withHeader(func(b []byte) { b[0] = 'X' }), ErrCorruptPatch},
		{"format 1", v1, ErrUnsupportedVersion},
		{"format 1 too short for this header", v1[:12], ErrUnsupportedVersion},
		{"future version", withHeader(func(b []byte) { b[8] = 3 }), ErrUnsupportedVersion},
		{"header flags", withHeader(func(b []byte) { b[9] = 9 }), ErrUnsupportedVersion},
		{"unknown codec", withHeader(func(b []byte) { b[headerSize] = 9 }), ErrUnsupportedVersion},
		{"no frame end", good[:len(good)-1], ErrCorruptPatch},
		{"oversized chunk", append(bytes.Clone(good[:headerSize+1]), uv(maxChunk+1)...), ErrCorruptPatch},
		{"other base", rawStream(other, to.id), ErrWrongBase},
		{"other target", rawStream(from.id, other), ErrWrongTarget},
		{"nothing dropped", rawStream(from.id, to.id, lit, cp), ErrCorruptPatch},
		{"missing file", rawStream(from.id, to.id, drop(0, 1), lit), ErrVerify},
		{"kept file dropped", rawStream(from.id, to.id, drop(0, 1, 2), lit, cp), ErrVerify},
		{"extra file", rawStream(from.id, to.id, drop(0, 1), lit, cp, rec(recLiteral, "d.txt", uv(0))), ErrCorruptPatch},
		{"two drop lists", rawStream(from.id, to.id, drop(0), drop(1), lit, cp), ErrCorruptPatch},
		{"drop list after a file", rawStream(from.id, to.id, lit, drop(0, 1), cp), ErrCorruptPatch},
		{"drop out of range", rawStream(from.id, to.id, drop(3), lit, cp), ErrCorruptPatch},
		{"drop count over base", rawStream(from.id, to.id, []byte{recDrop, 4}), ErrCorruptPatch},
		{"file twice", rawStream(from.id, to.id, drop(0, 1), lit, lit), ErrCorruptPatch},
		{"path over a kept file", rawStream(from.id, to.id, drop(0, 1), lit, rec(recCopy, "k.txt", uv(2))), ErrCorruptPatch},
		{"unknown record", rawStream(from.id, to.id, []byte{9}), ErrCorruptPatch},
		{"record kind zero", rawStream(from.id, to.id, []byte{0}), ErrCorruptPatch},
		{"literal over the release size", rawStream(from.id, to.id, drop(0, 1), rec(recLiteral, "a.txt", uv(1<<20))), ErrCorruptPatch},
		{"bad mode", rawStream(from.id, to.id, drop(0, 1), append(appendString([]byte{recLiteral}, "a.txt"), uv(0o4755)...)), ErrCorruptPatch},
		{"path escapes", rawStream(from.id, to.id, drop(0, 1), rec(recLiteral, "../a.txt", uv(11), []byte("hello there")), cp), ErrUnsafePath},
		{"truncated literal", good[:len(good)-8], ErrCorruptPatch},
		{"trailing data", append(bytes.Clone(good), 1, 2, 3), ErrCorruptPatch},
		{"wrong literal", rawStream(from.id, to.id, drop(0, 1), rec(recLiteral, "a.txt", uv(11), []byte("hello THERE")), cp), ErrVerify},
		{"wrong mode", rawStream(from.id, to.id, drop(0, 1), append(appendString([]byte{recLiteral}, "a.txt"), append(uv(0o600), append(uv(11), "hello there"...)...)...), cp), ErrVerify},
		{"copy of absent base file", rawStream(from.id, to.id, drop(0, 1), lit, rec(recCopy, "c.txt", uv(7))), ErrCorruptPatch},
		{"copy of other content", rawStream(from.id, to.id, drop(0, 1), lit, rec(recCopy, "c.txt", uv(1))), ErrVerify},
		{"dup before any file", rawStream(from.id, to.id, drop(0, 1), rec(recDup, "c.txt", uv(0)), lit), ErrCorruptPatch},
		{"dup of a later file", rawStream(from.id, to.id, drop(0, 1), lit, rec(recDup, "c.txt", uv(1))), ErrCorruptPatch},
		{"delta without sources", rawStream(from.id, to.id, drop(0, 1), rec(recDelta, "a.txt", uv(11), uv(0))), ErrCorruptPatch},
		{"delta with too many sources", rawStream(from.id, to.id, drop(0, 1), rec(recDelta, "a.txt", uv(11), uv(maxSources+1))), ErrCorruptPatch},
		{"delta source not written", rawStream(from.id, to.id, drop(0, 1), rec(recDelta, "a.txt", uv(11), uv(1), []byte{srcTarget}, uv(0))), ErrCorruptPatch},
		{"delta source out of the base", rawStream(from.id, to.id, drop(0, 1), rec(recDelta, "a.txt", uv(11), uv(1), []byte{srcBase}, uv(3))), ErrCorruptPatch},
		{"delta source kind", rawStream(from.id, to.id, drop(0, 1), rec(recDelta, "a.txt", uv(11), uv(1), []byte{7})), ErrCorruptPatch},
		{"delta too short", delta(uv(1), uv(5), uv(0), appendVarint(nil, 0), appendRLE(nil, make([]byte, 5)), uv(0)), ErrCorruptPatch},
		{"delta too long", delta(uv(1), uv(12), uv(0), appendVarint(nil, 0)), ErrCorruptPatch},
		{"delta reads past base", delta(uv(1), uv(0), uv(11), appendVarint(nil, 5), []byte("hello there")), ErrCorruptPatch},
		{"delta seeks before base", delta(uv(2), uv(1), uv(0), appendVarint(nil, -5)), ErrCorruptPatch},
		{"delta empty op", delta(uv(2), uv(0), uv(0), appendVarint(nil, 0), uv(0), uv(0), appendVarint(nil, 0)), ErrCorruptPatch},
		{"delta too many ops", delta(uv(maxBlockOps + 1)), ErrCorruptPatch},
		{"delta empty run", delta(uv(1), uv(11), uv(0), appendVarint(nil, 0), uv(0), uv(0)), ErrCorruptPatch},
		{"delta run overrun", delta(uv(1), uv(5), uv(6), appendVarint(nil, 0), uv(9), uv(0)), ErrCorruptPatch},
		{"bsdiff payload too big", rawStream(from.id, to.id, drop(0, 1), rec(recBSDiff, "a.txt", uv(11), uv(0), uv(1<<40))), ErrCorruptPatch},
		{"bsdiff garbage", rawStream(from.id, to.id, drop(0, 1), rec(recBSDiff, "a.txt", uv(11), uv(0), uv(40), make([]byte, 40))), ErrCorruptPatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := applyRaw(t, c.patch, from, to)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "delta: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// A base file changed on the device (not what the installed list says) is
// never carried into the new release: kept, copied or linked, it fails
// with ErrWrongBase, and the device takes the full bundle instead.
func TestApplyRefusesAlteredBaseFiles(t *testing.T) {
	src := newMemSource()
	from := makeBundle(t, src, "1.0.0", map[string][]byte{"a.txt": []byte("hello world"), "k.txt": []byte("kept")})
	to := makeBundle(t, src, "1.0.1", map[string][]byte{"c.txt": []byte("hello world"), "k.txt": []byte("kept")})
	var patch bytes.Buffer
	if _, err := Build(context.Background(), DefaultBuildConfig(), from.m, from.id, to.m, to.id, src, &patch); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.txt", "k.txt"} {
		for _, link := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s link=%v", name, link), func(t *testing.T) {
				files := maps.Clone(from.files)
				files[name] = []byte("TAMPERED!!!")
				d, err := OpenDir(writeDir(t, files))
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				cfg := DefaultApplyConfig()
				cfg.LinkCopies = link
				_, _, err = Apply(context.Background(), cfg, bytes.NewReader(patch.Bytes()), baseOf(from, d), targetOf(to), t.TempDir())
				if !errors.Is(err, ErrWrongBase) {
					t.Fatalf("got %v, want ErrWrongBase", err)
				}
			})
		}
	}
}

// Every prefix and many single-byte corruptions of a real patch fail
// cleanly (the file hashes catch what the format cannot).
func TestApplyDamagedPatches(t *testing.T) {
	src := newMemSource()
	app := text(6, 30000)
	from := makeBundle(t, src, "1.0.0", map[string][]byte{"app.js": app, "x.txt": []byte("x")})
	to := makeBundle(t, src, "1.0.1", map[string][]byte{"app.js": edit(6, app), "y.txt": []byte("x"), "z.txt": text(7, 300)})
	for _, codecMax := range []int64{-1, 1 << 20} {
		cfg := DefaultBuildConfig()
		cfg.BrotliMaxBytes = codecMax
		var buf bytes.Buffer
		if _, err := Build(context.Background(), cfg, from.m, from.id, to.m, to.id, src, &buf); err != nil {
			t.Fatal(err)
		}
		good := buf.Bytes()
		step := max(1, len(good)/97)
		for n := 0; n < len(good); n += step {
			if _, err := applyRaw(t, good[:n], from, to); err == nil {
				t.Fatalf("a patch cut at %d of %d bytes applied", n, len(good))
			}
		}
		r := rand.New(rand.NewPCG(8, uint64(codecMax)))
		for range 60 {
			b := bytes.Clone(good)
			i := headerSize + r.IntN(len(b)-headerSize)
			b[i] ^= byte(1 + r.IntN(255))
			out, err := applyRaw(t, b, from, to)
			if err == nil {
				checkDir(t, out, to) // a flip the codec ignores must still give the right files
			}
		}
	}
}

// Apply writes only inside its folder: a symlink planted in the staging
// folder (pointing outside) is neither followed nor replaced.
func TestApplyRefusesSymlinks(t *testing.T) {
	src := newMemSource()
	to := makeBundle(t, src, "1.0.0", map[string][]byte{"sub/a.txt": []byte("payload"), "b.txt": []byte("payload2")})
	var buf bytes.Buffer
	if _, err := Build(context.Background(), DefaultBuildConfig(), nil, release.ZeroHash, to.m, to.id, src, &buf); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ link, to string }{{"sub", "outside"}, {"b.txt", "outside"}, {"sub", "inside"}} {
		t.Run(c.link+" to "+c.to, func(t *testing.T) {
			outside := t.TempDir()
			stage := t.TempDir()
			target := outside
			if c.to == "inside" {
				target = filepath.Join(stage, "elsewhere")
				if err := os.Mkdir(target, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Symlink(target, filepath.Join(stage, c.link)); err != nil {
				t.Skip("symlinks unavailable:", err)
			}
			_, _, err := Apply(context.Background(), DefaultApplyConfig(), bytes.NewReader(buf.Bytes()), Base{}, targetOf(to), stage)
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("got %v, want ErrUnsafePath", err)
			}
			if ents, _ := os.ReadDir(target); len(ents) != 0 {
				t.Fatalf("Apply wrote %d entries through the link", len(ents))
			}
		})
	}
}

func TestApplyLimits(t *testing.T) {
	src := newMemSource()
	to := makeBundle(t, src, "1.0.0", map[string][]byte{"a": make([]byte, 1000)})
	var buf bytes.Buffer
	if _, err := Build(context.Background(), DefaultBuildConfig(), nil, release.ZeroHash, to.m, to.id, src, &buf); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []ApplyConfig{{MaxFileSize: 999}, {MaxTotalSize: 999}} {
		_, _, err := Apply(context.Background(), cfg, bytes.NewReader(buf.Bytes()), Base{}, targetOf(to), t.TempDir())
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("%+v: got %v, want ErrTooLarge", cfg, err)
		}
	}
}

// badSource serves other bytes than the manifest promises.
type badSource struct{}

func (badSource) Open(context.Context, release.Hash) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("tampered")), nil
}

func TestBuildErrors(t *testing.T) {
	src := newMemSource()
	from := makeBundle(t, src, "1.0.0", map[string][]byte{"app.js": text(1, 5000)})
	to := makeBundle(t, src, "1.0.1", map[string][]byte{"app.js": edit(1, text(1, 5000)), "new.txt": []byte("n")})
	if _, err := Build(context.Background(), DefaultBuildConfig(), from.m, from.id, to.m, to.id, badSource{}, io.Discard); !errors.Is(err, ErrSource) {
		t.Errorf("tampered source: got %v, want ErrSource", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Build(ctx, DefaultBuildConfig(), from.m, from.id, to.m, to.id, src, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: got %v, want context.Canceled", err)
	}
	bad := *to.m
	bad.Files = append([]release.File{{Path: "../escape", Size: 1}}, bad.Files...)
	if _, err := Build(context.Background(), DefaultBuildConfig(), from.m, from.id, &bad, to.id, src, io.Discard); !errors.Is(err, ErrBadManifest) {
		t.Errorf("bad manifest: got %v, want ErrBadManifest", err)
	}
	if _, err := Build(context.Background(), DefaultBuildConfig(), from.m, from.id, to.m, to.id, src, failWriter{}); err == nil {
		t.Error("a failing writer did not fail Build")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// A tiny memory budget serialises deltas but must not deadlock.
func TestTinyMemoryBudget(t *testing.T) {
	src := newMemSource()
	files, next := map[string][]byte{}, map[string][]byte{}
	for i := range 8 {
		b := text(uint64(i), 8000)
		files[fmt.Sprintf("f%d.js", i)] = b
		next[fmt.Sprintf("f%d.js", i)] = edit(uint64(i), b)
	}
	cfg := DefaultBuildConfig()
	cfg.MemoryBudget = 1
	cfg.Workers = 3
	_, st := roundTrip(t, cfg, src, makeBundle(t, src, "1.0.0", files), makeBundle(t, src, "1.0.1", next))
	if st.Deltas != 8 {
		t.Fatalf("stats %+v", st)
	}
}

func TestStem(t *testing.T) {
	cases := map[string]string{
		"p-3f9c1a.js":                      "p-*.js",
		"build/p-8e02b7.entry.js":          "build/p-*.entry.js",
		"static/js/main.a1b2c3d4.chunk.js": "static/js/main.*.chunk.js",
		"assets/index-BjFkq1cS.js":         "assets/index-*.js",
		"swagger-ui-es-bundle.js":          "swagger-ui-es-bundle.js",
		"polyfills-es2015.js":              "polyfills-es2015.js",
		"vendor.js":                        "vendor.js",
	}
	for in, want := range cases {
		if got := stem(in); got != want {
			t.Errorf("stem(%q) = %q, want %q", in, got, want)
		}
	}
}

// oneBase is the source list of a delta against one base file.
func oneBase(i uint64) []byte {
	return append(append(uv(1), srcBase), uv(i)...)
}

// A file over its diff time budget, or over MaxDiffSize, is sent as a
// literal and the patch still applies.
func TestLiteralFallbacks(t *testing.T) {
	src := newMemSource()
	app := text(21, 50000)
	from := makeBundle(t, src, "1.0.0", map[string][]byte{"app.js": app})
	to := makeBundle(t, src, "1.0.1", map[string][]byte{"app.js": edit(21, app)})
	for name, mut := range map[string]func(*BuildConfig){
		"timeout":      func(c *BuildConfig) { c.FileTimeout = time.Nanosecond },
		"no deltas":    func(c *BuildConfig) { c.MaxDiffSize = -1 },
		"file too big": func(c *BuildConfig) { c.MaxDiffSize = 40000 },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultBuildConfig()
			mut(&cfg)
			_, st := roundTrip(t, cfg, src, from, to)
			if st.Literals != 1 || st.Deltas != 0 {
				t.Fatalf("stats %+v, want one literal", st)
			}
		})
	}
}

// With LinkCopies, unchanged files become hard links to the base folder
// (no bytes written); a file whose mode changes is still copied.
func TestLinkCopies(t *testing.T) {
	src := newMemSource()
	app := text(31, 20000)
	from := makeBundle(t, src, "1.0.0", map[string][]byte{"a/same.js": app, "mode.sh": []byte("echo"), "c.js": text(32, 9000)})
	to := makeBundle(t, src, "1.0.1", map[string][]byte{"a/same.js": app, "mode.sh": []byte("echo"), "c.js": edit(32, text(32, 9000))})
	to.m.Files[2].Mode = 0o755 // mode.sh
	enc, _ := to.m.EncodeDoc()
	to.id = release.Sum(enc)
	var patch bytes.Buffer
	if _, err := Build(context.Background(), DefaultBuildConfig(), from.m, from.id, to.m, to.id, src, &patch); err != nil {
		t.Fatal(err)
	}
	baseDir := writeDir(t, from.files)
	base, err := OpenDir(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	stage := t.TempDir()
	cfg := DefaultApplyConfig()
	cfg.LinkCopies = true
	_, st, err := Apply(context.Background(), cfg, &patch, baseOf(from, base), targetOf(to), stage)
	if err != nil {
		t.Fatal(err)
	}
	checkDir(t, stage, to)
	if st.Kept != 1 || st.Copies != 1 || st.Linked != 1 {
		t.Fatalf("stats %+v, want a/same.js kept (linked) and mode.sh copied", st)
	}
	a, _ := os.Stat(filepath.Join(baseDir, "a", "same.js"))
	b, _ := os.Stat(filepath.Join(stage, "a", "same.js"))
	if !os.SameFile(a, b) {
		t.Fatal("a/same.js was copied, not linked")
	}
}

// A bundler moved code between chunks: the new chunk has no old twin by
// name, but its text is in two old chunks. It is diffed against both
// (one delta reading two old files) and costs a fraction of its literal.
func TestCrossFileMatching(t *testing.T) {
	src := newMemSource()
	a1, a2 := text(41, 30000), text(42, 30000)
	b1, b2 := text(43, 30000), text(44, 30000)
	from := makeBundle(t, src, "1.0.0", map[string][]byte{
		"assets/vendor-QWERTYUI.js": append(bytes.Clone(a1), a2...),
		"assets/utils-ASDFGHJK.js":  append(bytes.Clone(b1), b2...),
		"assets/other-ZXCVBNMA.js":  text(45, 60000),
	})
	moved := append(append(bytes.Clone(a2), "/* glue */"...), b1...)
	to := makeBundle(t, src, "1.0.1", map[string][]byte{
		"assets/vendor-POIUYTRE.js": a1,
		"assets/shared-LKJHGFDS.js": moved,
		"assets/utils-MNBVCXZL.js":  b2,
		"assets/other-ZXCVBNMA.js":  text(45, 60000),
	})
	patch, st := roundTrip(t, DefaultBuildConfig(), src, from, to)
	if st.CrossFile < 1 || st.Literals != 0 {
		t.Fatalf("stats %+v: the moved code was not found in the two old chunks", st)
	}
	var lit bytes.Buffer
	zw, _ := zstd.NewWriter(&lit, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	zw.Write(moved)
	zw.Close()
	if len(patch)*10 > lit.Len() {
		t.Fatalf("patch is %d bytes; the moved chunk alone compresses to %d", len(patch), lit.Len())
	}
}

// Rollup's base64url hashes often have no digit ("StatsView-DqEJYToB.js"),
// so names do not pair a changed chunk with its old self; content does,
// even when another renamed chunk has a closer size.
func TestTwinFoundByContent(t *testing.T) {
	src := newMemSource()
	stats, detail := text(51, 2040), text(52, 2020)
	newStats := append(bytes.Clone(stats[:1000]), stats[1020:]...) // 2,020 bytes, like detail
	from := makeBundle(t, src, "1.0.0", map[string][]byte{
		"assets/StatsView-DqEJYToB.js":      stats,
		"assets/TripDetailView-CwvRfzYa.js": detail,
	})
	to := makeBundle(t, src, "1.0.1", map[string][]byte{
		"assets/StatsView-CALAwqcL.js":      newStats,
		"assets/TripDetailView-BbbbXyzW.js": append(bytes.Clone(detail), ';'),
	})
	patch, st := roundTrip(t, DefaultBuildConfig(), src, from, to)
	if st.Deltas != 2 || len(patch) > 200 {
		t.Fatalf("patch of %d bytes, stats %+v: a renamed chunk was not diffed against its old self", len(patch), st)
	}
}
