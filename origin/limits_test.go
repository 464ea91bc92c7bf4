package origin

import (
	"archive/zip"
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestOriginOversizedInput(t *testing.T) {
	cfg := DefaultConfig(t.TempDir())
	cfg.AdminKey = testAdminKey
	cfg.MaxUploadBytes = 1 << 20
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	srv := &http.Server{Handler: o.Handler(), MaxHeaderBytes: 64 << 10}
	ts := newServer(t, srv)
	big := makeZip(t, zipEntry{name: "big.bin", body: randomish(2 << 20)})
	if s, r := upload(t, ts, testAdminKey, "com.x", "1.0.0", big); s != 400 || !strings.Contains(r, "over the limit") {
		t.Fatalf("upload over MaxUploadBytes: %d %q", s, r)
	}
	s, r := apiCall(t, ts, "PUT", "/v1/apps/com.x/channels/production", `{"version":"`+strings.Repeat("1", 100<<10)+`"}`)
	if s != 400 {
		t.Fatalf("100 KiB JSON body: %d %q", s, r)
	}
	req, _ := http.NewRequest("GET", ts.URL+"/v1/apps", nil)
	req.Header.Set("X-Padding", strings.Repeat("x", 128<<10))
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("128 KiB of headers: %d", resp.StatusCode)
		}
	}
}

func TestBundleNames(t *testing.T) {
	_, ts := newTestOrigin(t)
	cases := []struct {
		name   string
		entry  string
		status int
		reason string
	}{
		{"non-UTF-8 name", "\xff\xfe.js", 400, "UTF-8"},
		{"very long name", strings.Repeat("a", 2000) + ".js", 400, "over the limit"},
		{"unicode name", "ünïcode/файл.js", 201, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			z := makeZip(t, zipEntry{name: tc.entry, body: []byte("x")})
			s, r := upload(t, ts, testAdminKey, "com.x", fmt.Sprintf("1.0.%d", i), z)
			if s != tc.status || !strings.Contains(r, tc.reason) {
				t.Fatalf("got %d %q, want %d %q", s, r, tc.status, tc.reason)
			}
		})
	}
}

// TestHundredThousandFiles: a 100,000-file bundle is refused at once with a
// clear reason (the default limit is 20,000 files); a bundle of thousands of
// files is stored whole.
func TestHundredThousandFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("large bundle")
	}
	o, ts := newTestOrigin(t)
	build := func(n int) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for i := 0; i < n; i++ {
			w, _ := zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("f/%03d/%d.js", i%1000, i), Method: zip.Store})
			fmt.Fprintf(w, "%d", i)
		}
		zw.Close()
		return buf.Bytes()
	}
	if s, r := upload(t, ts, testAdminKey, "com.x", "1.0.1", build(100_000)); s != 400 || !strings.Contains(r, "20000 files") {
		t.Fatalf("100,000 files: %d %q", s, r)
	}
	if n := countBlobs(t, o); n != 0 {
		t.Fatalf("%d blobs stored for a refused bundle", n)
	}
	if s, r := upload(t, ts, testAdminKey, "com.x", "1.0.0", build(3000)); s != 201 {
		t.Fatalf("3,000 files: %d %q", s, r)
	}
	rec, err := o.st.release("com.x", "1.0.0")
	if err != nil || rec.Files != 3000 {
		t.Fatalf("stored %v files (%v)", rec, err)
	}
}
