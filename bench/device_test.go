package bench

import (
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/capstan-ota/capstan/release"
)

func TestVerifyPatch(t *testing.T) {
	base, target := release.Sum([]byte("base")), release.Sum([]byte("target"))
	ri := &relInfo{ref: release.Ref{ID: target}, manifest: &release.Manifest{Files: make([]release.File, 3)}}
	// The format 2 header (delta/format.go): magic, version, flags, the
	// first 8 bytes of base and target IDs.
	stream := func(b, tg release.Hash, version byte) []byte {
		h := append([]byte("CAPDELTA"), version, 0)
		h = append(h, b[:8]...)
		h = append(h, tg[:8]...)
		return append(h, "body bytes"...)
	}
	etag := func(b []byte) string { return release.Hash(sha256.Sum256(b)).String() }
	good := stream(base, target, 2)
	tests := []struct {
		name string
		body []byte
		etag string
		ok   bool
	}{
		{"good", good, etag(good), true},
		{"good without etag", good, "", true},
		{"good, etag no content address", good, "6566f4c1-4ed2", true},
		{"short", good[:20], "", false},
		{"bad magic", append([]byte("NOTAPTCH"), good[8:]...), "", false},
		{"other base", stream(target, target, 2), "", false},
		{"other target", stream(base, base, 2), "", false},
		{"format 1", stream(base, target, 1), "", false},
		{"tampered body", append(append([]byte(nil), good[:len(good)-1]...), 'X'), etag(good), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyPatch(tt.body, tt.etag, base, ri)
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrVerify) {
				t.Errorf("err = %v, want ErrVerify", err)
			}
		})
	}
}

func TestRotateTo(t *testing.T) {
	got := rotateTo([]int{2, 0, 1}, 0)
	if len(got) != 3 || got[0] != 0 || got[1] != 1 || got[2] != 2 {
		t.Errorf("rotateTo = %v, want [0 1 2]", got)
	}
}
