package bundle

import (
	"archive/zip"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/release"
)

func zipOf(t testing.TB, files map[string]string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for n, b := range files {
		w, err := zw.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(b))
	}
	zw.Close()
	return buf.Bytes()
}

func TestReadGoodBundle(t *testing.T) {
	z := zipOf(t, map[string]string{"index.html": "<html>", "assets/app.js": "x", "assets/": ""})
	es, err := Read(bytes.NewReader(z), int64(len(z)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Path != "assets/app.js" || es[1].Path != "index.html" {
		t.Fatalf("entries: %+v", es)
	}
	m, err := Manifest(context.Background(), es, "com.x", "1.0.0", "", nil)
	if err != nil || m.Files[1].Size != 6 || m.Files[1].Path != "index.html" || m.Type != release.TypeRelease || m.App != "com.x" {
		t.Fatalf("manifest: %v %+v", err, m)
	}
}

func TestLimits(t *testing.T) {
	z := zipOf(t, map[string]string{"a": "1", "b": "2", "c": "3"})
	if _, err := Read(bytes.NewReader(z), int64(len(z)), Limits{MaxFiles: 2}); err == nil {
		t.Fatal("file count limit not enforced")
	}
	z = zipOf(t, map[string]string{"a": "12345", "b": "12345"})
	if _, err := Read(bytes.NewReader(z), int64(len(z)), Limits{MaxTotalSize: 8}); err == nil {
		t.Fatal("total size limit not enforced")
	}
	if _, err := Read(bytes.NewReader(z), int64(len(z)), Limits{MaxFileSize: 4}); err == nil {
		t.Fatal("file size limit not enforced")
	}
}

func TestZipDirDeterministic(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "js"), 0o755)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<html>"), 0o644)
	os.WriteFile(filepath.Join(dir, "js", "run.sh"), []byte("#!/bin/sh"), 0o755)
	var a, b bytes.Buffer
	if err := ZipDir(dir, &a); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(dir, "index.html"), later, later)
	if err := ZipDir(dir, &b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("zipping the same folder twice gave different bytes")
	}
	es, err := Read(bytes.NewReader(a.Bytes()), int64(a.Len()), Limits{})
	if err != nil || len(es) != 2 || es[1].Mode != 0o755 {
		t.Fatalf("read back: %v %+v", err, es)
	}
	os.Symlink("/etc/passwd", filepath.Join(dir, "link"))
	if err := ZipDir(dir, io.Discard); err == nil {
		t.Fatal("a symlink in the folder was zipped")
	}
}

// FuzzRead feeds arbitrary bytes to the zip reader: it must never panic,
// and every entry it accepts must have a safe path and bounded content.
func FuzzRead(f *testing.F) {
	f.Add(zipOf(f, map[string]string{"index.html": "<html>"}))
	f.Add(zipOf(f, map[string]string{"../evil": "x"}))
	f.Add(zipOf(f, map[string]string{"a/b/c.js": "abc", "a/d.css": ""}))
	f.Add([]byte("PK\x03\x04 not really a zip"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lim := Limits{MaxFiles: 100, MaxTotalSize: 1 << 20, MaxFileSize: 1 << 20}
		es, err := Read(bytes.NewReader(data), int64(len(data)), lim)
		if err != nil {
			return
		}
		var total int64
		for _, e := range es {
			if err := checkPath(e.Path); err != nil {
				t.Fatalf("accepted unsafe path %q", e.Path)
			}
			rc, err := e.Open()
			if err != nil {
				continue
			}
			n, _ := io.Copy(io.Discard, rc)
			rc.Close()
			total += n
			if n > e.Size() {
				t.Fatalf("%q yielded %d bytes, declared %d", e.Path, n, e.Size())
			}
		}
		if total > lim.MaxTotalSize {
			t.Fatalf("read %d bytes, over the limit", total)
		}
	})
}
