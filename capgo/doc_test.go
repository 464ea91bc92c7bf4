package capgo

import (
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocComments enforces the house rule in capgo, capgotest and capgokey: every
// exported name has a doc comment that starts with its name.
func TestDocComments(t *testing.T) {
	for _, dir := range []string{".", "capgotest", "capgokey"} {
		fset := token.NewFileSet()
		names, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		var files []*ast.File
		for _, name := range names {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		p, err := doc.NewFromFiles(fset, files, "github.com/capstan-ota/capstan/capgo/"+dir)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(p.Doc, "Package "+p.Name+" ") {
			t.Errorf("%s: package doc does not start with \"Package %s \"", dir, p.Name)
		}
		check := func(name, text string) {
			if ast.IsExported(name) && !strings.HasPrefix(text, name+" ") {
				t.Errorf("%s: %s: doc comment missing or not starting with its name: %q", dir, name, text)
			}
		}
		for _, f := range p.Funcs {
			check(f.Name, f.Doc)
		}
		for _, ty := range p.Types {
			check(ty.Name, ty.Doc)
			for _, f := range ty.Funcs {
				check(f.Name, f.Doc)
			}
			for _, m := range ty.Methods {
				check(m.Name, m.Doc)
			}
		}
	}
}

// TestDeps: capgo is shared by edge, origin and the CLI, so it imports
// none of them (and no server framework).
func TestDeps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"capstan-ota/capstan/edge", "capstan-ota/capstan/origin", "capstan-ota/capstan/gossip",
			"capstan-ota/capstan/delta", "valyala/fasthttp", "dgraph-io/badger"} {
			if strings.Contains(dep, bad) {
				t.Errorf("capgo depends on %s", dep)
			}
		}
	}
}
