package edge_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/release"
)

// TestHotPathSendfile: the full bundle and the Capgo zip are
// handed to fasthttp as the blob's open file, the body fasthttp sends with
// sendfile (page cache to socket, no copy through the edge), and the bytes
// on the wire are the blob's, ranges included.
func TestHotPathSendfile(t *testing.T) {
	if raceEnabled {
		t.Skip("builds swagger-ui patches, ~15x slower under the race detector; make test runs it without")
	}
	he := newHotEdge(t)
	for _, row := range []string{"full", "zip"} {
		ctx := he.do(row)
		f, ok := ctx.Response.BodyStream().(*os.File)
		if ctx.Response.StatusCode() != 200 || !ok {
			t.Fatalf("%s: %d, body %T; want the blob's *os.File", row, ctx.Response.StatusCode(), ctx.Response.BodyStream())
		}
		f.Close()
	}
	ctx := he.do("full")
	full := ctx.Response.BodyStream().(*os.File)
	want, err := io.ReadAll(full)
	full.Close()
	if err != nil || len(want) < 1<<20 {
		t.Fatalf("full bundle: %d bytes, %v", len(want), err)
	}
	he.reqs["full"].Header.Set("Range", "bytes=1000000-1000099")
	defer he.reqs["full"].Header.Del("Range")
	ctx = he.do("full")
	part := ctx.Response.BodyStream().(*os.File)
	got := make([]byte, 100)
	_, err = io.ReadFull(part, got)
	part.Close()
	if ctx.Response.StatusCode() != 206 || err != nil || !bytes.Equal(got, want[1000000:1000100]) {
		t.Fatalf("range from the file: %d %v", ctx.Response.StatusCode(), err)
	}
}

// TestBlobFilesAreCompleteOrAbsent: a blob whose file went away is fetched
// again rather than failing, and a half-written temporary file (a crash
// mid-fetch) is never served.
func TestBlobFilesAreCompleteOrAbsent(t *testing.T) {
	f := newFleet(t)
	content := randomBytes(3 << 20)
	f.upload(t, "1.0.0", map[string][]byte{"app.js": content})
	h := release.Sum(content)
	dir := t.TempDir()
	e := startEdge(t, f, dir, func(c *edge.Config) { c.MemCacheObject = 1 << 10 })
	u := e.url + "/v1/blobs/" + h.String()
	if resp, body := get(t, u); resp.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Fatalf("download: %d", resp.StatusCode)
	}
	file := filepath.Join(dir, "blobs", h.String()[:2], h.String())
	if fi, err := os.Stat(file); err != nil || fi.Size() != int64(len(content)) {
		t.Fatalf("blob file: %v", err)
	}
	// Gone under the edge (say, removed by an operator): fetched again.
	os.Remove(file)
	if resp, _ := get(t, u); resp.StatusCode != 503 && resp.StatusCode != 200 {
		t.Fatalf("after the file went: %d", resp.StatusCode)
	}
	if resp, body := get(t, u); resp.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Fatalf("fetched again: %d", resp.StatusCode)
	}
	e.Shutdown(t.Context())

	// A restart finds a torn temporary file (a crash mid-fetch): it is
	// removed, never served, and the blobs that were complete still are.
	torn := filepath.Join(dir, "blobs", "tmp", "blob-123")
	os.WriteFile(torn, content[:1000], 0o600)
	f.originDown.Store(true)
	e2 := startEdge(t, f, dir, nil)
	if _, err := os.Stat(torn); err == nil {
		t.Error("temporary file kept across a restart")
	}
	if resp, body := get(t, e2.url+"/v1/blobs/"+h.String()); resp.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Fatalf("after restart: %d", resp.StatusCode)
	}
}
