// Command deltabench builds or applies one Capstan patch between two bundle
// folders (or zips) and prints the size and time as one JSON line. It is the
// Capstan column of scripts/bench-delta.sh, which measures its peak memory
// with /usr/bin/time.
//
//	deltabench build -from OLD -to NEW -out PATCH   (-from "" for a full bundle)
//	deltabench apply -from OLD -to NEW -patch PATCH
package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
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
		return fmt.Errorf("usage: deltabench build|apply -from OLD -to NEW [-out|-patch FILE]")
	}
	fl := flag.NewFlagSet(args[0], flag.ContinueOnError)
	from := fl.String("from", "", "old bundle: folder or zip (empty: full bundle)")
	to := fl.String("to", "", "new bundle: folder or zip")
	out := fl.String("out", "", "build: where to write the patch")
	patch := fl.String("patch", "", "apply: the patch to apply")
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
		st, err := delta.Build(ctx, delta.DefaultConfig(), base, baseID, target, targetID, src, f)
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
		st, err := delta.Apply(ctx, delta.DefaultApplyConfig(), bytes.NewReader(pb), bf, baseID, target, targetID, stage)
		if err != nil {
			return err
		}
		el := time.Since(start)
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"ms": el.Milliseconds(), "stats": st})
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

// store is an in-memory BlobSource.
type store map[release.Hash][]byte

func (s store) Open(_ context.Context, h release.Hash) (io.ReadCloser, error) {
	b, ok := s[h]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

type emptyBase struct{}

func (emptyBase) Open(string) (io.ReadCloser, error) { return nil, fs.ErrNotExist }

func manifest(s store, version string, files map[string][]byte) (*release.Manifest, release.Hash) {
	m := &release.Manifest{Type: release.TypeRelease, App: "bench", Version: version}
	for p, b := range files {
		h := release.Sum(b)
		s[h] = b
		m.Files = append(m.Files, release.File{Path: p, Size: int64(len(b)), Mode: 0o644, SHA256: h})
	}
	m.Sort()
	enc, err := m.Encode()
	if err != nil {
		panic(err) // bench inputs are local folders; a bad one is a usage error
	}
	return m, release.Sum(enc)
}

// load reads a folder or a zip into path → content.
func load(p string) (map[string][]byte, error) {
	out := map[string][]byte{}
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
			out[f.Name] = b
		}
		return out, nil
	}
	err := filepath.WalkDir(p, func(fp string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(fp)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(p, fp)
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	return out, err
}
