package delta_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/capstan-ota/capstan/delta"
	"github.com/capstan-ota/capstan/release"
)

// makeRelease builds a manifest and its ID from path → content, storing blobs.
func makeRelease(blobs map[release.Hash][]byte, version string, files map[string]string) (*release.Manifest, release.Hash) {
	m := &release.Manifest{Type: release.TypeRelease, App: "com.example.app", Version: version}
	for p, c := range files {
		h := release.Sum([]byte(c))
		blobs[h] = []byte(c)
		m.Files = append(m.Files, release.File{Path: p, Size: int64(len(c)), Mode: 0o644, SHA256: h})
	}
	m.Sort()
	enc, _ := m.EncodeDoc()
	return m, release.Sum(enc)
}

// The origin builds a patch from its content-addressed store; the device
// applies it onto its installed folder into a fresh staging folder.
func Example() {
	blobs := map[release.Hash][]byte{}
	v1, v1ID := makeRelease(blobs, "1.0.0", map[string]string{"index.html": "<p>hello</p>", "app.3f9c1a7e.js": "console.log('v1')"})
	v2, v2ID := makeRelease(blobs, "1.0.1", map[string]string{"index.html": "<p>hello</p>", "app.8e02b7aa.js": "console.log('v2')"})
	store := delta.BlobSourceFunc(func(_ context.Context, h release.Hash) (io.ReadCloser, error) {
		b, ok := blobs[h]
		if !ok {
			return nil, fs.ErrNotExist
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	})

	// Origin.
	var patch bytes.Buffer
	st, err := delta.Build(context.Background(), delta.DefaultBuildConfig(), v1, v1ID, v2, v2ID, store, &patch)
	if err != nil {
		panic(err)
	}
	fmt.Println("files:", st.Files, "kept from v1:", st.Kept)

	// Device: v1 is installed in current/, v2 goes to a new staging folder.
	work, _ := os.MkdirTemp("", "device")
	defer os.RemoveAll(work)
	current, staging := filepath.Join(work, "current"), filepath.Join(work, "staging")
	os.MkdirAll(current, 0o755)
	os.Mkdir(staging, 0o755)
	for _, f := range v1.Files {
		os.WriteFile(filepath.Join(current, f.Path), blobs[f.SHA256], 0o644)
	}
	base, err := delta.OpenDir(current)
	if err != nil {
		panic(err)
	}
	defer base.Close()
	// What the device knows: v1's verified file list, and v2's signed
	// release document (file count, size and the hash of its file list).
	from := delta.Base{ID: v1ID, Files: v1.Files, Dir: base}
	to := delta.Target{ID: v2ID, Files: v2.Doc().Files}
	files, _, err := delta.Apply(context.Background(), delta.DefaultApplyConfig(), &patch, from, to, staging)
	if err != nil {
		panic(err) // a real device falls back to the full bundle here
	}
	fmt.Println("verified files:", len(files))
	js, _ := os.ReadFile(filepath.Join(staging, "app.8e02b7aa.js"))
	fmt.Println(string(js))
	// Output:
	// files: 2 kept from v1: 1
	// verified files: 2
	// console.log('v2')
}
