// Command wasmapply is delta.Apply built for GOOS=js GOARCH=wasm: the
// alternative to the TypeScript applier that clients/capacitor/bench/applier.mjs
// measures (size and speed, decision 130). Arguments: patch file, base folder
// (or -), base file list, target id, file count, total size, list hash, output
// folder, base id. It applies five times and prints each time.
package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/capstan-ota/capstan/delta"
	"github.com/capstan-ota/capstan/release"
)

// args: patch baseDir baseList targetID count size listsha outDir
func main() {
	p, _ := os.ReadFile(os.Args[1])
	var base delta.Base
	if os.Args[2] != "-" {
		lb, _ := os.ReadFile(os.Args[3])
		files, err := release.DecodeFileList(lb)
		if err != nil {
			panic(err)
		}
		dir, err := delta.OpenDir(os.Args[2])
		if err != nil {
			panic(err)
		}
		bid, _ := release.ParseHash(os.Args[9])
		base = delta.Base{ID: bid, Files: files, Dir: dir}
	}
	tid, _ := release.ParseHash(os.Args[4])
	var fs release.FileSet
	fmt.Sscan(os.Args[5], &fs.Count)
	fmt.Sscan(os.Args[6], &fs.Size)
	b, _ := hex.DecodeString(os.Args[7])
	copy(fs.SHA256[:], b)
	for i := 0; i < 5; i++ {
		out := fmt.Sprintf("%s/%d", os.Args[8], i)
		os.MkdirAll(out, 0o755)
		t := time.Now()
		_, _, err := delta.Apply(context.Background(), delta.ApplyConfig{}, bytes.NewReader(p), base, delta.Target{ID: tid, Files: fs}, out)
		fmt.Println("apply", time.Since(t), err)
	}
}
