package delta

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// memBase is a BaseFiles without io.ReaderAt: Apply must read it into
// memory, bounded by what is there.
type memBase map[string][]byte

func (m memBase) Open(p string) (io.ReadCloser, error) {
	b, ok := m[p]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// fuzzFixture is the release pair every FuzzApply input is applied to.
func fuzzFixture(t testing.TB) (src *memSource, from, to *bundle) {
	src = newMemSource()
	app := text(11, 6000)
	from = makeBundle(t, src, "1.0.0", map[string][]byte{
		"index.html": []byte("<html>v1</html>"), "js/app.1a2b3c4d.js": app, "gone.txt": []byte("bye"),
	})
	to = makeBundle(t, src, "1.0.1", map[string][]byte{
		"index.html": []byte("<html>v1</html>"), "js/app.9f8e7d6c.js": edit(11, app),
		"js/copy.js": []byte("<html>v1</html>"), "new/n.txt": text(12, 700), "new/m.txt": text(12, 700),
		"js/app-es.5e6f7a8b.js": append(edit(11, app), "export{}"...), // a sibling of the app chunk
	})
	return src, from, to
}

// fuzzSeeds are valid patches in each frame codec plus hand-made records.
func fuzzSeeds(t testing.TB) [][]byte {
	src, from, to := fuzzFixture(t)
	var seeds [][]byte
	for _, brotliMax := range []int64{-1, 1 << 20} {
		cfg := DefaultBuildConfig()
		cfg.BrotliMaxBytes = brotliMax
		var buf bytes.Buffer
		if _, err := Build(context.Background(), cfg, from.m, from.id, to.m, to.id, src, &buf); err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, buf.Bytes())
	}
	// Base: gone.txt (0), index.html (1), js/app.1a2b3c4d.js (2).
	seeds = append(seeds, rawStream(from.id, to.id, drop(0, 2),
		rec(recCopy, "js/copy.js", uv(1)),
		rec(recDelta, "js/app.9f8e7d6c.js", uv(13), oneBase(2), uv(1), uv(10), uv(3), appendVarint(nil, 2), appendRLE(nil, []byte{0, 0, 1, 0, 0, 0, 0, 0, 0, 2}), []byte("abc"), uv(0)),
		rec(recDup, "new/m.txt", uv(0)),
		rec(recLiteral, "new/n.txt", uv(700), text(12, 700)),
	))
	return seeds
}

// FuzzApply: a malformed patch never panics, never writes outside the
// staging folder, never allocates far beyond its bound, and whatever it
// accepts is exactly the target release.
func FuzzApply(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	_, from, to := fuzzFixture(f)
	cfg := DefaultApplyConfig()
	cfg.MaxWindow = 1 << 20
	// One parent folder for all inputs: a TempDir per input made each run
	// slow enough that minimizing an input took the whole fuzz time.
	parent := f.TempDir()
	stage := filepath.Join(parent, "stage")
	f.Fuzz(func(t *testing.T, patch []byte) {
		if err := os.RemoveAll(stage); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(stage, 0o755); err != nil {
			t.Fatal(err)
		}
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		_, _, err := Apply(context.Background(), cfg, bytes.NewReader(patch), baseOf(from, memBase(from.files)), targetOf(to), stage)
		runtime.ReadMemStats(&m1)
		// Brotli's window (16 MiB) is the largest legitimate allocation.
		if a := m1.TotalAlloc - m0.TotalAlloc; a > 64<<20 {
			t.Fatalf("Apply allocated %d bytes for a %d-byte patch", a, len(patch))
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 1 {
			t.Fatalf("Apply wrote outside its folder: %d entries beside it", len(ents)-1)
		}
		if err == nil {
			checkDir(t, stage, to)
		}
	})
}

// TestWriteFuzzCorpus regenerates the committed seed corpus:
// CAPSTAN_WRITE_CORPUS=1 go test -run WriteFuzzCorpus ./delta/
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("CAPSTAN_WRITE_CORPUS") == "" {
		t.Skip("set CAPSTAN_WRITE_CORPUS=1 to rewrite testdata/fuzz/FuzzApply")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzApply")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// The generated seeds must be valid patches, or the fuzzer starts from noise.
func TestFuzzSeedsApply(t *testing.T) {
	_, from, to := fuzzFixture(t)
	for i, s := range fuzzSeeds(t)[:2] {
		stage := t.TempDir()
		if _, _, err := Apply(context.Background(), DefaultApplyConfig(), bytes.NewReader(s), baseOf(from, memBase(from.files)), targetOf(to), stage); err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		checkDir(t, stage, to)
	}
}
