package delta

import (
	"bytes"
	"context"
	"fmt"
	"github.com/capstan-ota/capstan/internal/testutil"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/capstan-ota/capstan/release"
)

// memSource is an in-memory content-addressed store.
type memSource struct {
	mu    sync.Mutex // guards blobs
	blobs map[release.Hash][]byte
}

var _ BlobSource = (*memSource)(nil)

func newMemSource() *memSource { return &memSource{blobs: map[release.Hash][]byte{}} }

func (m *memSource) put(b []byte) release.Hash {
	h := release.Sum(b)
	m.mu.Lock()
	m.blobs[h] = b
	m.mu.Unlock()
	return h
}

func (m *memSource) Open(_ context.Context, h release.Hash) (io.ReadCloser, error) {
	m.mu.Lock()
	b, ok := m.blobs[h]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", h, os.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// bundle is a release held in memory: its manifest and ID.
type bundle struct {
	m     *release.Manifest
	id    release.Hash
	files map[string][]byte
}

// makeBundle builds a release from path → content, storing blobs in src.
func makeBundle(t testing.TB, src *memSource, version string, files map[string][]byte) *bundle {
	t.Helper()
	m := &release.Manifest{Type: release.TypeRelease, App: "com.example.app", Version: version}
	for p, b := range files {
		m.Files = append(m.Files, release.File{Path: p, Size: int64(len(b)), Mode: 0o644, SHA256: src.put(b)})
	}
	m.Sort()
	enc, err := m.EncodeDoc()
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{m: m, id: release.Sum(enc), files: files}
}

// fixtureDir finds the swagger-ui fixture zips: $CAPSTAN_FIXTURES, else
// ../shared/fixtures beside the repository (testutil.Fixture fails the test
// in CI when they are missing, and skips it elsewhere).
func fixtureDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("CAPSTAN_FIXTURES"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "www-5.34.0.zip")); err == nil {
			return d
		}
	}
	return filepath.Dir(testutil.Fixture(t, "swagger-ui/www-5.34.0.zip"))
}

var (
	zipCacheMu sync.Mutex // guards zipCache
	zipCache   = map[string]map[string][]byte{}
)

// readZip returns the regular files of a fixture zip (cached: tests share it).
func readZip(t testing.TB, name string) map[string][]byte {
	t.Helper()
	p := filepath.Join(fixtureDir(t), name)
	zipCacheMu.Lock()
	defer zipCacheMu.Unlock()
	if m, ok := zipCache[p]; ok {
		return m
	}
	out := testutil.ZipFiles(t, p)
	zipCache[p] = out
	return out
}

// writeDir writes files into a new temp folder, as an installed base.
func writeDir(t testing.TB, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for p, b := range files {
		fp := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fp, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// checkDir asserts dir holds exactly the files of b, byte for byte.
func checkDir(t testing.TB, dir string, b *bundle) {
	t.Helper()
	var got []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		got = append(got, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	if len(got) != len(b.m.Files) {
		t.Fatalf("dir has %d files, release has %d", len(got), len(b.m.Files))
	}
	for i, f := range b.m.Files {
		if got[i] != f.Path {
			t.Fatalf("file %d: got %s, want %s", i, got[i], f.Path)
		}
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, b.files[f.Path]) {
			t.Fatalf("%s differs from the release", f.Path)
		}
		fi, _ := os.Stat(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if uint32(fi.Mode().Perm()) != f.Mode {
			t.Fatalf("%s has mode %o, want %o", f.Path, fi.Mode().Perm(), f.Mode)
		}
	}
}

// roundTrip builds a patch from → to (from may be nil), applies it onto a
// folder holding from, checks the result and returns the patch and stats.
func roundTrip(t testing.TB, cfg BuildConfig, src *memSource, from, to *bundle) ([]byte, BuildStats) {
	t.Helper()
	var buf bytes.Buffer
	var bm *release.Manifest
	var bid release.Hash
	baseFiles := map[string][]byte{}
	if from != nil {
		bm, bid, baseFiles = from.m, from.id, from.files
	}
	st, err := Build(context.Background(), cfg, bm, bid, to.m, to.id, src, &buf)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if st.PatchBytes != int64(buf.Len()) {
		t.Fatalf("BuildStats.PatchBytes %d, wrote %d", st.PatchBytes, buf.Len())
	}
	baseDir := writeDir(t, baseFiles)
	base, err := OpenDir(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	out := t.TempDir()
	files, ast, err := Apply(context.Background(), DefaultApplyConfig(), bytes.NewReader(buf.Bytes()), baseOf(from, base), targetOf(to), out)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if ast.Files != len(to.m.Files) || len(files) != len(to.m.Files) {
		t.Fatalf("Apply made %d files (%d listed), want %d", ast.Files, len(files), len(to.m.Files))
	}
	for i := range files {
		if files[i] != to.m.Files[i] {
			t.Fatalf("Apply lists %+v, the release has %+v", files[i], to.m.Files[i])
		}
	}
	checkDir(t, out, to)
	return buf.Bytes(), st
}

// baseOf is the Base of an installed bundle b (nil: nothing installed)
// read from dir.
func baseOf(b *bundle, dir BaseFiles) Base {
	if b == nil {
		return Base{Dir: dir}
	}
	return Base{ID: b.id, Files: b.m.Files, Dir: dir}
}

// targetOf is what the signed release document says of b.
func targetOf(b *bundle) Target {
	return Target{ID: b.id, Files: release.FileSetOf(b.m.Files)}
}
