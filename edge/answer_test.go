package edge_test

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/capstan-ota/capstan/internal/bundle"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// signedUpload stores a release of files signed by key, as `capstan upload
// --sign-key` does.
func signedUpload(t *testing.T, f *fleet, version string, files map[string][]byte, key []byte) *release.Record {
	return signedUploadAs(t, f, version, files, key, (*release.Manifest).EncodeDoc)
}

// signedUploadAs signs what encode makes of the manifest: the release
// document, or a format 1 full manifest as CLIs before format 2 signed.
func signedUploadAs(t *testing.T, f *fleet, version string, files map[string][]byte, key []byte, encode func(*release.Manifest) ([]byte, error)) *release.Record {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, b := range files {
		w, _ := zw.Create(name)
		w.Write(b)
	}
	zw.Close()
	z := buf.Bytes()
	entries, err := bundle.Read(bytes.NewReader(z), int64(len(z)), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.Manifest(context.Background(), entries, "com.x", version, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := encode(m)
	if err != nil {
		t.Fatal(err)
	}
	req := &origin.UploadRequest{App: "com.x", Version: version, Channel: "production", RolloutBPS: release.FullRollout,
		Envelope: release.Seal(doc, key)}
	rec, err := f.origin.Upload(context.Background(), req, bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// bundleOf makes n files with hashed-chunk names, as a component library
// ships them.
func bundleOf(n int, salt string) map[string][]byte {
	files := map[string][]byte{"index.html": []byte("<html>" + salt)}
	for i := range n {
		files[fmt.Sprintf("build/p-%08x.entry.js", i*7919)] = []byte(fmt.Sprintf("export const c%d = %q;", i, salt))
	}
	return files
}

// TestUpdateAnswerSmallWhateverTheBundle: an answer that offers an update
// is at most 2 KB for 3 files or 3,000 (the file list travels only as what
// the patch changes), an up-to-date answer about 500 B.
func TestUpdateAnswerSmallWhateverTheBundle(t *testing.T) {
	key, _ := release.GenerateKey()
	sizes := map[int]int{}
	for _, n := range []int{3, 3000} {
		f := newFleet(t)
		rec := signedUpload(t, f, "1.4.2", bundleOf(n, "a"), key)
		e := startEdge(t, f, t.TempDir(), nil)
		if err := e.SyncFromOrigin(context.Background()); err != nil {
			t.Fatal(err)
		}
		q := "/v1/check?app=com.x&channel=production&device=3f2504e0-4f89-11d3-9a0c-0305e82c3301&native=1.0.0"
		resp, body := get(t, e.url+q, "Accept-Encoding", "identity")
		var ans wire.CheckAnswer
		if err := json.Unmarshal(body, &ans); err != nil || ans.Status != wire.StatusUpdate || ans.Release.ID() != rec.ID {
			t.Fatalf("%d files: %d %s", n, resp.StatusCode, body)
		}
		if len(body) > 2048 {
			t.Fatalf("%d files: the update answer is %d bytes, over 2 KB", n, len(body))
		}
		sizes[n] = len(body)
		_, up := get(t, e.url+q+"&current="+rec.ID.String()+"&version=1.4.2", "Accept-Encoding", "identity")
		if len(up) > 700 || !bytes.Contains(up, []byte(`"up-to-date"`)) {
			t.Fatalf("%d files: up-to-date answer of %d bytes: %s", n, len(up), up)
		}
	}
	if sizes[3000] > sizes[3]+16 {
		t.Fatalf("the answer grows with the file count: %v", sizes)
	}
	t.Logf("update answer: %v bytes (3 and 3,000 files)", sizes)
}

// TestJSONAnswersCompressed: answers over 1 KB are compressed with what
// the client accepts (zstd, br, gzip), decode to the same bytes, and say
// Vary; a client that accepts nothing gets them plain.
func TestJSONAnswersCompressed(t *testing.T) {
	key, _ := release.GenerateKey()
	f := newFleet(t)
	// A release signed in format 1 carries its whole file list in the
	// answer: several KB.
	signedUploadAs(t, f, "1.0.0", bundleOf(30, "a"), key, (*release.Manifest).Encode)
	e := startEdge(t, f, t.TempDir(), nil)
	if err := e.SyncFromOrigin(context.Background()); err != nil {
		t.Fatal(err)
	}
	q := e.url + "/v1/check?app=com.x&channel=production&device=d1"
	resp, plain := get(t, q, "Accept-Encoding", "identity")
	if resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("identity answered with %q", resp.Header.Get("Content-Encoding"))
	}
	if len(plain) <= 1024 {
		t.Fatalf("answer is %d bytes, too small for this test", len(plain))
	}
	decoders := map[string]func(io.Reader) (io.Reader, error){
		"gzip": func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) },
		"br":   func(r io.Reader) (io.Reader, error) { return brotli.NewReader(r), nil },
		"zstd": func(r io.Reader) (io.Reader, error) { return zstd.NewReader(r) },
	}
	// An answer built once goes out in the smallest form the client
	// accepts (brotli's dictionary wins on JSON this small).
	smallest := map[string]int{}
	for accept, want := range map[string]string{"gzip": "gzip", "zstd": "zstd", "br": "br", "br, gzip": "", "gzip, deflate, br, zstd": "", "zstd;q=0, gzip": "gzip"} {
		req, _ := http.NewRequest("GET", q, nil)
		req.Header.Set("Accept-Encoding", accept)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		sent, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := resp.Header.Get("Content-Encoding")
		if want != "" && got != want || got == "" || !strings.Contains(accept, got) {
			t.Fatalf("Accept-Encoding %q: answered %q, want %q", accept, got, want)
		}
		if want == "" {
			defer func() {
				for enc, n := range smallest {
					if strings.Contains(accept, enc) && n < len(sent) {
						t.Errorf("Accept-Encoding %q: answered %s (%d bytes), %s is %d", accept, got, len(sent), enc, n)
					}
				}
			}()
		} else {
			smallest[want] = len(sent)
		}
		want = got
		if resp.Header.Get("Vary") != "Accept-Encoding" {
			t.Fatalf("no Vary: Accept-Encoding")
		}
		r, err := decoders[want](bytes.NewReader(sent))
		if err != nil {
			t.Fatal(err)
		}
		dec, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(dec, plain) {
			t.Fatalf("%s answer does not decode to the plain one (%v)", want, err)
		}
		if len(sent) >= len(plain) {
			t.Fatalf("%s answer is %d bytes, plain %d", want, len(sent), len(plain))
		}
	}
}
