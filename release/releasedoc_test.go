package release

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func sortedManifest(n int) *Manifest {
	m := &Manifest{Type: TypeRelease, App: "com.example.app", Version: "1.2.3", MinNative: "1.0.0"}
	for i := range n {
		body := fmt.Sprintf("file %d", i)
		m.Files = append(m.Files, File{Path: fmt.Sprintf("assets/chunk-%05d.js", i), Size: int64(len(body)), Mode: 0o644, SHA256: Sum([]byte(body))})
	}
	m.Sort()
	return m
}

func TestFileListRoundTripAndHash(t *testing.T) {
	m := sortedManifest(3)
	m.Files[1].Mode = 0o755
	b := EncodeFileList(m.Files)
	want := FileListMagic + m.Files[0].SHA256.String() + " 6 644 assets/chunk-00000.js\n"
	if !strings.HasPrefix(string(b), want) {
		t.Fatalf("encoding starts %q, want %q", b[:len(want)], want)
	}
	got, err := DecodeFileList(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[1] != m.Files[1] {
		t.Fatalf("round trip: %+v", got)
	}
	fs := FileSetOf(m.Files)
	if fs.SHA256 != Sum(b) || fs.Count != 3 || fs.Size != m.TotalSize() {
		t.Fatalf("FileSetOf %+v does not describe the encoded list", fs)
	}
}

func TestFileListRefusesNonCanonical(t *testing.T) {
	h := Sum([]byte("x")).String()
	for name, body := range map[string]string{
		"no magic":          h + " 1 644 a\n",
		"upper hex":         FileListMagic + strings.ToUpper(h) + " 1 644 a\n",
		"leading zero size": FileListMagic + h + " 01 644 a\n",
		"mode with 0":       FileListMagic + h + " 1 0644 a\n",
		"unsorted":          FileListMagic + h + " 1 644 b\n" + h + " 1 644 a\n",
		"duplicate":         FileListMagic + h + " 1 644 a\n" + h + " 1 644 a\n",
		"no final newline":  FileListMagic + h + " 1 644 a",
		"dot dot":           FileListMagic + h + " 1 644 ../a\n",
		"file and folder":   FileListMagic + h + " 1 644 a\n" + h + " 1 644 a/b\n",
		"negative size":     FileListMagic + h + " -1 644 a\n",
		"mode beyond perm":  FileListMagic + h + " 1 4755 a\n",
		"short hash":        FileListMagic + h[:62] + " 1 644 a\n",
		"carriage return":   FileListMagic + h + " 1 644 a\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeFileList([]byte(body)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("accepted (err %v)", err)
			}
		})
	}
	if _, err := DecodeFileList([]byte(FileListMagic)); err != nil {
		t.Fatalf("an empty list is valid: %v", err)
	}
}

func TestValidatePathRefusesControlCharacters(t *testing.T) {
	for _, p := range []string{"a\nb", "a\tb", "a\x7fb", "a\rb"} {
		if ValidatePath(p) == nil {
			t.Errorf("accepted %q", p)
		}
	}
	if err := ValidatePath("assets/ünïcode file (1).js"); err != nil {
		t.Errorf("refused a plain path: %v", err)
	}
}

// TestReleaseDocIsSmallWhateverTheBundle: the document devices download to
// decide names the file list by hash, so 3,000 files cost what 3 do.
func TestReleaseDocIsSmallWhateverTheBundle(t *testing.T) {
	small, err := sortedManifest(3).EncodeDoc()
	if err != nil {
		t.Fatal(err)
	}
	big, err := sortedManifest(3000).EncodeDoc()
	if err != nil {
		t.Fatal(err)
	}
	if len(big) > len(small)+8 || len(big) > 400 {
		t.Fatalf("release document is %d bytes for 3,000 files, %d for 3", len(big), len(small))
	}
	d, m, err := DecodeRelease(big)
	if err != nil || m != nil {
		t.Fatalf("decode: %v (manifest %v)", err, m != nil)
	}
	if d.Files.Count != 3000 || d.MinNative != "1.0.0" {
		t.Fatalf("decoded %+v", d)
	}
}

func TestDecodeReleaseReadsBothFormats(t *testing.T) {
	m := sortedManifest(4)
	v1, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d1, m1, err := DecodeRelease(v1)
	if err != nil || m1 == nil || len(m1.Files) != 4 {
		t.Fatalf("format 1: %v", err)
	}
	v2, _ := m.EncodeDoc()
	d2, m2, err := DecodeRelease(v2)
	if err != nil || m2 != nil {
		t.Fatalf("format 2: %v", err)
	}
	if *d1 != *d2 {
		t.Fatalf("the two formats describe different releases: %+v %+v", d1, d2)
	}
	if _, err := d2.WithFiles(m.Files); err != nil {
		t.Fatalf("the right list: %v", err)
	}
	other := append([]File(nil), m.Files...)
	other[2].SHA256 = Sum([]byte("tampered"))
	if _, err := d2.WithFiles(other); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a tampered list: %v", err)
	}
	if _, _, err := DecodeRelease([]byte(`{"type":"capstan.release/v9"}`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown type: %v", err)
	}
}
