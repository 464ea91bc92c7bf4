package sadiff

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
)

// apply is a reference patcher for Ops.
func apply(old []byte, ops []Op) []byte {
	var out []byte
	pos := int64(0)
	for _, op := range ops {
		for i, d := range op.Diff {
			out = append(out, old[pos+int64(i)]+d)
		}
		pos += int64(len(op.Diff))
		out = append(out, op.Extra...)
		pos += op.Seek
	}
	return out
}

func diffOps(t *testing.T, old, cur []byte) []Op {
	t.Helper()
	var ops []Op
	err := Diff(context.Background(), old, cur, func(op Op) error {
		ops = append(ops, Op{Diff: bytes.Clone(op.Diff), Extra: bytes.Clone(op.Extra), Seek: op.Seek})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ops
}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	text := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abcdefgh ;{}()"[r.IntN(14)]
		}
		return b
	}
	base := text(30000)
	edited := append([]byte(nil), base...)
	for range 50 {
		i := r.IntN(len(edited))
		edited = append(edited[:i], append(text(r.IntN(20)), edited[i+r.IntN(10):]...)...)
	}
	cases := []struct {
		name     string
		old, cur []byte
	}{
		{"both empty", nil, nil},
		{"empty old", nil, []byte("hello")},
		{"empty new", []byte("hello"), nil},
		{"identical", base, base},
		{"edited", base, edited},
		{"moved halves", base, append(append([]byte(nil), base[15000:]...), base[:15000]...)},
		{"zeros", make([]byte, 5000), make([]byte, 5100)},
		{"unrelated", text(2000), text(3000)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ops := diffOps(t, c.old, c.cur)
			if got := apply(c.old, ops); !bytes.Equal(got, c.cur) {
				t.Fatalf("round trip differs: got %d bytes, want %d", len(got), len(c.cur))
			}
		})
	}
}

// A small edit in a large file must give a small delta: that is the point.
func TestSmallEditSmallDelta(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	old := make([]byte, 1<<18)
	for i := range old {
		old[i] = byte(r.Uint32())
	}
	cur := append([]byte(nil), old...)
	copy(cur[100000:], "a small edit")
	var extra, nonzero int
	for _, op := range diffOps(t, old, cur) {
		extra += len(op.Extra)
		for _, d := range op.Diff {
			if d != 0 {
				nonzero++
			}
		}
	}
	if extra+nonzero > 64 {
		t.Fatalf("a 12-byte edit costs %d extra and %d non-zero diff bytes", extra, nonzero)
	}
}

func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Diff(ctx, []byte("abc"), []byte("abd"), func(Op) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}
