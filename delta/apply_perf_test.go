package delta

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
)

// TestAddBytes: the eight-at-a-time addition is byte-wise addition modulo
// 256 for every length and alignment.
func TestAddBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 70 {
		for off := range 3 {
			dst, src := make([]byte, n+off), make([]byte, n+off)
			for i := range dst {
				dst[i], src[i] = byte(rng.Uint32()), byte(rng.Uint32())
			}
			want := make([]byte, n)
			for i := range want {
				want[i] = dst[off+i] + src[off+i]
			}
			addBytes(dst[off:], src[off:])
			for i := range want {
				if dst[off+i] != want[i] {
					t.Fatalf("n=%d off=%d byte %d: %#x, want %#x", n, off, i, dst[off+i], want[i])
				}
			}
		}
	}
}

func BenchmarkAddBytes(b *testing.B) {
	dst, src := make([]byte, 256<<10), make([]byte, 256<<10)
	b.SetBytes(int64(len(dst)))
	for b.Loop() {
		addBytes(dst, src)
	}
}

// TestLinkedFilesVerifiedInParallel: among many kept files, hard-linked
// and checked several at once, one altered on the device still fails the
// update with ErrWrongBase, whichever it is.
func TestLinkedFilesVerifiedInParallel(t *testing.T) {
	src := newMemSource()
	files := map[string][]byte{"app.js": text(8, 5000)}
	for i := range 24 {
		files[fmt.Sprintf("kept/%02d.js", i)] = text(uint64(100+i), 3000)
	}
	next := maps.Clone(files)
	next["app.js"] = edit(8, files["app.js"])
	from := makeBundle(t, src, "1.0.0", files)
	to := makeBundle(t, src, "1.0.1", next)
	var patch bytes.Buffer
	if _, err := Build(context.Background(), DefaultBuildConfig(), from.m, from.id, to.m, to.id, src, &patch); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultApplyConfig()
	cfg.LinkCopies = true
	for _, altered := range []string{"", "kept/00.js", "kept/13.js", "kept/23.js"} {
		onDevice := maps.Clone(from.files)
		if altered != "" {
			onDevice[altered] = []byte("TAMPERED")
		}
		d, err := OpenDir(writeDir(t, onDevice))
		if err != nil {
			t.Fatal(err)
		}
		stage := t.TempDir()
		_, st, err := Apply(context.Background(), cfg, bytes.NewReader(patch.Bytes()), baseOf(from, d), targetOf(to), stage)
		d.Close()
		switch {
		case altered == "" && err != nil:
			t.Fatal(err)
		case altered == "":
			checkDir(t, stage, to)
			if st.Linked < 24 {
				t.Fatalf("%d files linked, want the 24 kept ones", st.Linked)
			}
		case !errors.Is(err, ErrWrongBase):
			t.Fatalf("%s altered: got %v, want ErrWrongBase", altered, err)
		}
	}
}
