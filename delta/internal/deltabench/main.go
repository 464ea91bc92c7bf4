package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/delta"
	"github.com/capstan-ota/capstan/release"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "deltabench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: deltabench build|apply -from OLD -to NEW [-out|-patch FILE] | gen -dir DIR")
	}
	if args[0] == "gen" {
		return gen(args[1:])
	}
	fl := flag.NewFlagSet(args[0], flag.ContinueOnError)
	from := fl.String("from", "", "old bundle: folder or zip (empty: full bundle)")
	to := fl.String("to", "", "new bundle: folder or zip")
	out := fl.String("out", "", "build: where to write the patch")
	patch := fl.String("patch", "", "apply: the patch to apply")
	link := fl.Bool("link", false, "apply: hard-link unchanged files (ApplyConfig.LinkCopies)")
	siblings := fl.Bool("siblings", true, "build: use siblings (BuildConfig.NoSiblings when false)")
	if err := fl.Parse(args[1:]); err != nil {
		return err
	}
	src := store{}
	var base *release.Manifest
	var baseID release.Hash
	var baseDir string
	if *from != "" {
		files, err := load(*from)
		if err != nil {
			return err
		}
		base, baseID = manifest(src, "0.0.1", files)
		baseDir = *from
	}
	files, err := load(*to)
	if err != nil {
		return err
	}
	target, targetID := manifest(src, "0.0.2", files)
	ctx := context.Background()
	switch args[0] {
	case "build":
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		start := time.Now()
		cfg := delta.DefaultBuildConfig()
		cfg.NoSiblings = !*siblings
		st, err := delta.Build(ctx, cfg, base, baseID, target, targetID, src, f)
		if err != nil {
			return err
		}
		el := time.Since(start)
		return json.NewEncoder(os.Stdout).Encode(map[string]any{
			"bytes": st.PatchBytes, "ms": el.Milliseconds(), "stats": st,
		})
	case "apply":
		if baseDir != "" && strings.HasSuffix(baseDir, ".zip") {
			return fmt.Errorf("apply needs -from as a folder")
		}
		pb, err := os.ReadFile(*patch)
		if err != nil {
			return err
		}
		stage, err := os.MkdirTemp("", "deltabench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(stage)
		var bf delta.BaseFiles = emptyBase{}
		if baseDir != "" {
			d, err := delta.OpenDir(baseDir)
			if err != nil {
				return err
			}
			defer d.Close()
			bf = d
		}
		start := time.Now()
		acfg := delta.DefaultApplyConfig()
		acfg.LinkCopies = *link
		from := delta.Base{ID: baseID, Dir: bf}
		if base != nil {
			from.Files = base.Files
		}
		_, st, err := delta.Apply(ctx, acfg, bytes.NewReader(pb), from, delta.Target{ID: targetID, Files: target.Doc().Files}, stage)
		if err != nil {
			return err
		}
		el := time.Since(start)
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"ms": el.Milliseconds(), "stats": st})
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

// store is a BlobSource over the bundles' files: folders are read from
// disk when delta.Build opens them, as the origin streams from its store,
// so the peak RSS measured around this process is the builder's own
// working memory, not two bundles held in memory. Zips are held in memory.
type store map[release.Hash]blob

// blob is one file: on disk at path, or in data.
type blob struct {
	path string
	data []byte
	size int64
	hash release.Hash
}

func (s store) Open(_ context.Context, h release.Hash) (io.ReadCloser, error) {
	b, ok := s[h]
	if !ok {
		return nil, fs.ErrNotExist
	}
	if b.path != "" {
		return os.Open(b.path)
	}
	return io.NopCloser(bytes.NewReader(b.data)), nil
}

type emptyBase struct{}

func (emptyBase) Open(string) (io.ReadCloser, error) { return nil, fs.ErrNotExist }

func manifest(s store, version string, files map[string]blob) (*release.Manifest, release.Hash) {
	m := &release.Manifest{Type: release.TypeRelease, App: "bench", Version: version}
	for p, b := range files {
		s[b.hash] = b
		m.Files = append(m.Files, release.File{Path: p, Size: b.size, Mode: 0o644, SHA256: b.hash})
	}
	m.Sort()
	enc, err := m.EncodeDoc()
	if err != nil {
		panic(err) // bench inputs are local folders; a bad one is a usage error
	}
	return m, release.Sum(enc)
}

// load lists a folder or a zip as path → file, hashing every file.
func load(p string) (map[string]blob, error) {
	out := map[string]blob{}
	if strings.HasSuffix(p, ".zip") {
		zr, err := zip.OpenReader(p)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		for _, f := range zr.File {
			if f.FileInfo().IsDir() {
				continue
			}
			rc, err := f.Open()
			if err != nil {
				return nil, err
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return nil, err
			}
			out[f.Name] = blob{data: b, size: int64(len(b)), hash: release.Sum(b)}
		}
		return out, nil
	}
	err := filepath.WalkDir(p, func(fp string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(fp)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(p, fp)
		out[filepath.ToSlash(rel)] = blob{path: fp, size: n, hash: release.Hash(h.Sum(nil))}
		return nil
	})
	return out, err
}

// gen writes a synthetic bundle (DIR/a) and its next version (DIR/b) with
// JavaScript-like text files named by content hash, as bundlers do: in b,
// 70 % of files are unchanged, 20 % edited (and so renamed), 5 % deleted and
// 5 % new. It is the "150 MB, 1,500 files" memory case.
func gen(args []string) error {
	fl := flag.NewFlagSet("gen", flag.ContinueOnError)
	dir := fl.String("dir", "", "output folder")
	files := fl.Int("files", 1500, "number of files")
	mb := fl.Int("mb", 150, "total size in MB")
	seed := fl.Uint64("seed", 1, "random seed")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("gen needs -dir")
	}
	r := rand.New(rand.NewPCG(*seed, 7))
	words := []string{"function ", "return ", "const ", "let ", "e", "t", "n", "r", "(", ")", "{", "}", ";", "=", "=>", ".map", ".then", "0x1f", "\n", "\"use strict\"", "this.", "props", "state", "render", "null", "!0", "void 0"}
	body := func(n int) []byte {
		b := make([]byte, 0, n+16)
		for len(b) < n {
			b = append(b, words[r.IntN(len(words))]...)
		}
		return b[:n]
	}
	hashed := func(name string, b []byte) string {
		s := sha256.Sum256(b)
		return name + "." + hex.EncodeToString(s[:4]) + ".js"
	}
	write := func(side, p string, b []byte) error {
		fp := filepath.Join(*dir, side, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
			return err
		}
		return os.WriteFile(fp, b, 0o644)
	}
	mean := *mb << 20 / *files
	for i := range *files {
		size := mean/10 + r.IntN(2*mean-mean/5)
		a := body(size)
		name := fmt.Sprintf("build/chunk-%04d", i)
		roll := r.IntN(100)
		if roll >= 95 { // new in b
			if err := write("b", hashed(name, a), a); err != nil {
				return err
			}
			continue
		}
		if err := write("a", hashed(name, a), a); err != nil {
			return err
		}
		switch {
		case roll < 70: // unchanged
			if err := write("b", hashed(name, a), a); err != nil {
				return err
			}
		case roll < 90: // edited, and renamed because the content hash changed
			b := append([]byte(nil), a...)
			for range 1 + size/20000 {
				at := r.IntN(len(b) + 1)
				b = append(b[:at], append(body(20+r.IntN(200)), b[at:]...)...)
			}
			if err := write("b", hashed(name, b), b); err != nil {
				return err
			}
		default: // deleted
		}
	}
	return nil
}
