package bsdiff40

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gabstv/go-bsdiff/pkg/bsdiff"
)

// pair returns an old file and a new one made of edits of it.
func pair(seed uint64, n int) (old, cur []byte) {
	r := rand.New(rand.NewPCG(seed, 1))
	old = make([]byte, n)
	for i := range old {
		old[i] = byte('a' + r.IntN(8)) // text-like, so matches exist
	}
	cur = append([]byte(nil), old...)
	for range n / 200 {
		i := r.IntN(len(cur))
		switch r.IntN(3) {
		case 0:
			cur[i] ^= byte(1 + r.IntN(255))
		case 1:
			cur = append(cur[:i], append([]byte("inserted!"), cur[i:]...)...)
		default:
			cur = append(cur[:i], cur[min(i+7, len(cur)):]...)
		}
	}
	return old, cur
}

func patchBytes(old, patch []byte, newSize int64) ([]byte, error) {
	var out bytes.Buffer
	err := Patch(bytes.NewReader(old), int64(len(old)), bytes.NewReader(patch), int64(len(patch)), newSize, &out)
	return out.Bytes(), err
}

func TestGoBSDiffPatchesApply(t *testing.T) {
	for _, n := range []int{0, 1, 100, 20000} {
		old, cur := pair(uint64(n), n)
		p, err := bsdiff.Bytes(old, cur)
		if err != nil {
			t.Fatal(err)
		}
		got, err := patchBytes(old, p, int64(len(cur)))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !bytes.Equal(got, cur) {
			t.Fatalf("n=%d: patched output differs", n)
		}
	}
}

// header builds a BSDIFF40 header.
func header(ctrlLen, diffLen, newSize int64) []byte {
	b := []byte(Magic)
	for _, v := range []int64{ctrlLen, diffLen, newSize} {
		var x [8]byte
		u := uint64(v)
		if v < 0 {
			u = uint64(-v) | 1<<63
		}
		binary.LittleEndian.PutUint64(x[:], u)
		b = append(b, x[:]...)
	}
	return b
}

func TestRejectsHostilePatches(t *testing.T) {
	old, cur := pair(7, 5000)
	good, err := bsdiff.Bytes(old, cur)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		patch []byte
		size  int64
		want  error
	}{
		{"empty", nil, 10, ErrCorrupt},
		{"bad magic", append([]byte("BSDIFF41"), good[8:]...), int64(len(cur)), ErrCorrupt},
		{"negative ctrl length", append(header(-1, 0, 10), good[32:]...), 10, ErrCorrupt},
		{"lengths past the end", append(header(1<<40, 0, 10), good[32:]...), 10, ErrCorrupt},
		// go-bsdiff allocates this before looking further: runtime OOM.
		{"huge new size", append(header(0, 0, 1<<44), good[32:]...), 100, ErrSize},
		{"new size differs from manifest", good, int64(len(cur)) + 1, ErrSize},
		{"truncated", good[:len(good)/2], int64(len(cur)), ErrCorrupt},
		{"ctrl garbage", append(header(10, 0, 10), bytes.Repeat([]byte{0xff}, 40)...), 10, ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := patchBytes(old, c.patch, c.size)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

// go-bsdiff's patcher panics on a negative control value (deps.md §4); ours
// must return ErrCorrupt. The control block is built with Debian's bsdiff
// layout: bzip2 streams of 24-byte sign-magnitude triples.
func TestRejectsNegativeControl(t *testing.T) {
	// The same construction with sane values applies: the rejections below
	// come from the control checks, not from a malformed container.
	old := []byte("0123456789")
	ok := buildPatch(t, [][3]int64{{4, 2, 3}, {1, 3, 0}}, []byte{0, 0, 0, 1, 0}, []byte("xyabc"), 10)
	if got, err := patchBytes(old, ok, 10); err != nil || string(got) != "0124xy7abc" {
		t.Fatalf("hand-built patch: %q, %v", got, err)
	}
	for _, ctrl := range [][3]int64{{-5, 0, 0}, {0, -5, 0}, {11, 0, 0}, {0, 11, 0}, {1, 0, -1 << 62}} {
		p := buildPatch(t, [][3]int64{ctrl}, make([]byte, 16), make([]byte, 16), 10)
		if _, err := patchBytes(make([]byte, 10), p, 10); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ctrl %v: got %v, want ErrCorrupt", ctrl, err)
		}
	}
}

// buildPatch assembles a BSDIFF40 patch from raw streams, compressing them
// with the bzip2 command (the Go standard library has no bzip2 writer).
func buildPatch(t *testing.T, ctrl [][3]int64, diff, extra []byte, newSize int64) []byte {
	t.Helper()
	if _, err := exec.LookPath("bzip2"); err != nil {
		t.Skip("bzip2 command not installed (apt-get install -y bzip2)")
	}
	var cb []byte
	for _, c := range ctrl {
		h := header(c[0], c[1], c[2])
		cb = append(cb, h[8:]...)
	}
	bz := func(b []byte) []byte {
		cmd := exec.Command("bzip2", "-c")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	c, d, e := bz(cb), bz(diff), bz(extra)
	p := header(int64(len(c)), int64(len(d)), newSize)
	return append(append(append(p, c...), d...), e...)
}

// Interoperability with Debian's bsdiff 4.3 in both directions: a patch
// made by go-bsdiff applies with bspatch, and one made by bsdiff applies
// with this package.
func TestDebianInterop(t *testing.T) {
	for _, tool := range []string{"bsdiff", "bspatch"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed; apt-get install -y bsdiff to run this test", tool)
		}
	}
	dir := t.TempDir()
	old, cur := pair(42, 50000)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	oldP, curP := write("old", old), write("new", cur)

	t.Run("go-bsdiff patch with Debian bspatch", func(t *testing.T) {
		p, err := bsdiff.Bytes(old, cur)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out1")
		if b, err := exec.Command("bspatch", oldP, out, write("go.patch", p)).CombinedOutput(); err != nil {
			t.Fatalf("bspatch: %v: %s", err, b)
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, cur) {
			t.Fatal("bspatch output differs")
		}
	})
	t.Run("Debian bsdiff patch with this patcher", func(t *testing.T) {
		pp := filepath.Join(dir, "c.patch")
		if b, err := exec.Command("bsdiff", oldP, curP, pp).CombinedOutput(); err != nil {
			t.Fatalf("bsdiff: %v: %s", err, b)
		}
		p, _ := os.ReadFile(pp)
		got, err := patchBytes(old, p, int64(len(cur)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, cur) {
			t.Fatal("output differs")
		}
	})
}

// FuzzPatch: no input panics, and output never exceeds the expected size.
func FuzzPatch(f *testing.F) {
	old, cur := pair(3, 2000)
	good, err := bsdiff.Bytes(old, cur)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, int64(len(cur)))
	f.Add(good[:40], int64(len(cur)))
	f.Add(header(0, 0, 0), int64(0))
	f.Fuzz(func(t *testing.T, patch []byte, size int64) {
		if size < 0 || size > 1<<20 {
			size = int64(len(cur))
		}
		var out limitWriter
		out.max = size
		_ = Patch(bytes.NewReader(old), int64(len(old)), bytes.NewReader(patch), int64(len(patch)), size, &out)
		if out.n > size {
			t.Fatalf("wrote %d bytes, expected at most %d", out.n, size)
		}
	})
}

type limitWriter struct{ n, max int64 }

func (w *limitWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

// TestWriteFuzzCorpus regenerates the committed seed corpus:
// CAPSTAN_WRITE_CORPUS=1 go test -run WriteFuzzCorpus ./delta/bsdiff40/
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("CAPSTAN_WRITE_CORPUS") == "" {
		t.Skip("set CAPSTAN_WRITE_CORPUS=1 to rewrite testdata/fuzz/FuzzPatch")
	}
	old, cur := pair(3, 2000)
	good, err := bsdiff.Bytes(old, cur)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzPatch")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seeds := map[string][]byte{"valid": good, "truncated": good[:len(good)/2], "negative-ctrl": append(header(-1, 0, 10), good[32:]...)}
	for name, s := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nint64(%d)\n", s, len(cur))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// The patcher is a leaf (style rule 4): devices and tools can take it
// without the rest of Capstan.
func TestLeaf(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "github.com/") && line != "github.com/capstan-ota/capstan/delta/bsdiff40" {
			t.Errorf("bsdiff40 depends on %s", line)
		}
	}
}
