package edge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/delta"
	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/release"
)

// frameCodecs lists the codec byte of every frame of a patch stream.
func frameCodecs(t *testing.T, p []byte) []byte {
	t.Helper()
	r := bytes.NewReader(p[delta.HeaderSize:])
	var codecs []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			t.Fatalf("frame: %v", err)
		}
		if c == 0 {
			return codecs
		}
		codecs = append(codecs, c)
		for {
			n, err := binary.ReadUvarint(r)
			if err != nil {
				t.Fatalf("chunk: %v", err)
			}
			if n == 0 {
				break
			}
			r.Seek(int64(n), 1)
		}
	}
}

// TestPatchWithoutBrotli: GET /v1/patches/{base}/{target}?codecs=zstd is
// the same update built with zstd frames only, for clients without a brotli
// decoder (WebViews); it applies to the same release, is cached apart from
// the default patch, and the full bundle is one object for both.
func TestPatchWithoutBrotli(t *testing.T) {
	f := newFleet(t)
	lib := []byte(strings.Repeat("function add(a, b) { return a + b }\n", 2000))
	r1 := f.upload(t, "1.0.0", map[string][]byte{"app.js": lib, "index.html": []byte("<h1>1</h1>")})
	r2 := f.upload(t, "1.0.1", map[string][]byte{"app.js": append(bytes.Clone(lib), "export const v = 2\n"...), "index.html": []byte("<h1>2</h1>")})
	// With the origin's key, as in production: the edge checks the origin's
	// signed statement of each variant before caching it under its path.
	e := startEdge(t, f, t.TempDir(), func(c *edge.Config) {
		c.OriginKeys = []release.PublicKey{{Key: f.origin.PublicKey(), Role: release.RoleOrigin}}
	})
	url := e.url + "/v1/patches/" + r1.ID.String() + "/" + r2.ID.String()

	resp, plain := get(t, url)
	if resp.StatusCode != 200 {
		t.Fatalf("default patch: %d %s", resp.StatusCode, plain)
	}
	resp, zstdOnly := get(t, url+"?codecs=zstd")
	if resp.StatusCode != 200 {
		t.Fatalf("zstd patch: %d %s", resp.StatusCode, zstdOnly)
	}
	if got := frameCodecs(t, plain); !bytes.Contains(got, []byte{2}) {
		t.Fatalf("the default patch has no brotli frame (codecs %v): the test proves nothing", got)
	}
	if got := frameCodecs(t, zstdOnly); bytes.ContainsAny(got, "\x02") {
		t.Fatalf("?codecs=zstd patch has a brotli frame: codecs %v", got)
	}
	// Both make release 2, file for file.
	bm, _, err := r1.Envelope.Release()
	if err != nil {
		t.Fatal(err)
	}
	baseDir := t.TempDir()
	base := delta.Base{ID: r1.ID}
	files1, _, err := delta.Apply(context.Background(), delta.ApplyConfig{}, bytes.NewReader(mustGet(t, e.url+"/v1/patches/"+release.ZeroHash.String()+"/"+r1.ID.String())),
		delta.Base{}, delta.Target{ID: r1.ID, Files: bm.Files}, baseDir)
	if err != nil {
		t.Fatal(err)
	}
	d2, _, _ := r2.Envelope.Release()
	for _, p := range [][]byte{plain, zstdOnly} {
		dir, err := delta.OpenDir(baseDir)
		if err != nil {
			t.Fatal(err)
		}
		base.Files, base.Dir = files1, dir
		if _, _, err := delta.Apply(context.Background(), delta.ApplyConfig{}, bytes.NewReader(p), base, delta.Target{ID: r2.ID, Files: d2.Files}, t.TempDir()); err != nil {
			t.Fatalf("apply: %v", err)
		}
		dir.Close()
	}
	// The full bundle has no brotli frame: both spellings are one object.
	full := e.url + "/v1/patches/" + release.ZeroHash.String() + "/" + r2.ID.String()
	r, a := get(t, full)
	r2z, b := get(t, full+"?codecs=zstd")
	if r.StatusCode != 200 || !bytes.Equal(a, b) || r.Header.Get("ETag") != r2z.Header.Get("ETag") {
		t.Fatalf("full bundle: %d, %d vs %d bytes, ETag %s vs %s", r.StatusCode, len(a), len(b), r.Header.Get("ETag"), r2z.Header.Get("ETag"))
	}
	if resp, _ := get(t, url+"?codecs=lzma"); resp.StatusCode != 400 {
		t.Fatalf("unknown codecs: %d, want 400", resp.StatusCode)
	}
	// Cached apart: asking again, each variant keeps its own bytes.
	if _, again := get(t, url+"?codecs=zstd"); !bytes.Equal(again, zstdOnly) {
		t.Fatal("?codecs=zstd served other bytes the second time")
	}
	if _, again := get(t, url); !bytes.Equal(again, plain) {
		t.Fatal("the default patch served other bytes after the zstd variant")
	}
}

func mustGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, b := get(t, url)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", url, resp.StatusCode, b)
	}
	return b
}
