package archtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/capstan-ota/capstan/"

// rows are the picture in docs/architecture.md, bottom row first: a
// package may import packages of the rows before its own, never of its
// own row or a later one. So imports point one way and cannot form a
// cycle, and a new package must be placed on purpose.
var rows = []struct {
	name string
	pkgs []string
}{
	{"leaves: formats and mechanisms that import nothing of Capstan", []string{
		"release", "delta/bsdiff40", "delta/internal/sadiff",
		"internal/httpenc", "internal/kv", "internal/netsim", "internal/testutil", "internal/servicetest",
		"internal/archtest", "internal/lifetime", "origin/console",
	}},
	{"shared shapes and engines", []string{
		"wire", "stats", "capgo", "gossip", "delta", "internal/bundle", "origin/store",
	}},
	{"parts of a role", []string{
		"capgo/capgokey", "gossip/gossiptest",
		"origin/store/badgerstore", "origin/store/fileblobs", "origin/store/migrate",
		"origin/store/pgstore", "origin/store/s3blobs", "origin/store/storetest",
	}},
	{"roles: servers, the device, the API client", []string{
		"origin", "edge", "device", "origin/client",
		"capgo/capgotest", "delta/internal/deltabench", "clients/capacitor/bench/wasmapply",
	}},
	{"tools and test kits", []string{"bench", "bench/regions", "internal/fleettest"}},
	{"the program: flags and wiring", []string{"cmd/capstan"}},
}

// never lists what a package must not link, directly or not, and why.
var never = []struct {
	pkg  string
	deps []string
	why  string
}{
	{"edge", []string{"origin", "device", "cmd/capstan", "capgo/capgokey", "origin/store"},
		"an edge is an untrusted mirror: it links no code that holds or uses a signing or decryption key"},
	{"origin", []string{"edge", "device", "capgo/capgokey"},
		"the origin serves edges over HTTP and gossip; Capgo keys stay with CI"},
	{"device", []string{"origin", "edge", "gossip", "capgo/capgokey", "github.com/dgraph-io/badger/v4"},
		"the reference client links only what an app would"},
	{"origin/client", []string{"origin", "origin/store", "github.com/dgraph-io/badger/v4", "github.com/jackc/pgx/v5", "github.com/minio/minio-go/v7"},
		"a program that talks to an origin does not link the origin or its stores (decision 140)"},
	{"delta", []string{"github.com/gabstv/go-bsdiff", "github.com/dsnet/compress"},
		"devices link delta for Apply; the diff side of go-bsdiff needs 17–23× the old file in memory"},
	{"bench", []string{"origin", "edge"},
		"the bench tool plays devices against servers it reaches over the network"},
}

type pkgInfo struct {
	imports []string // direct, non-test
}

// list returns every package the module's packages link, with its direct
// imports, keyed by import path.
func list(t *testing.T) map[string]pkgInfo {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	cmd := exec.Command(goBin, "list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", module+"...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkgInfo{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) > 0 {
			pkgs[f[0]] = pkgInfo{imports: f[1:]}
		}
	}
	return pkgs
}

func short(p string) string { return strings.TrimPrefix(p, module) }

// TestImportsPointDown: every package of the module sits in one row, and
// its imports of the module are all in rows below.
func TestImportsPointDown(t *testing.T) {
	pkgs := list(t)
	rowOf := map[string]int{}
	for i, r := range rows {
		for _, p := range r.pkgs {
			if _, dup := rowOf[p]; dup {
				t.Errorf("%s is in two rows", p)
			}
			rowOf[p] = i
		}
	}
	for path, info := range pkgs {
		if !strings.HasPrefix(path, module) {
			continue
		}
		p := short(path)
		r, ok := rowOf[p]
		if !ok {
			t.Errorf("package %s is in no row of the table: place it (and in docs/architecture.md)", p)
			continue
		}
		for _, imp := range info.imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			if ri, ok := rowOf[short(imp)]; ok && ri >= r {
				t.Errorf("%s (%s) imports %s (%s): imports must point to a row below", p, rows[r].name, short(imp), rows[ri].name)
			}
		}
	}
	for p := range rowOf {
		if _, ok := pkgs[module+p]; !ok {
			t.Errorf("the table names %s, which is no package of the module", p)
		}
	}
}

// TestNeverLinks: the packages in never link none of their banned
// packages, however indirectly.
func TestNeverLinks(t *testing.T) {
	pkgs := list(t)
	for _, rule := range never {
		root := module + rule.pkg
		if _, ok := pkgs[root]; !ok {
			t.Errorf("no package %s", rule.pkg)
			continue
		}
		// Walk the links, remembering who brought each package in, so a
		// failure names the path.
		via := map[string]string{root: ""}
		queue := []string{root}
		for len(queue) > 0 {
			p := queue[0]
			queue = queue[1:]
			for _, imp := range pkgs[p].imports {
				if _, seen := via[imp]; !seen {
					via[imp] = p
					queue = append(queue, imp)
				}
			}
		}
		for _, bad := range rule.deps {
			full := bad
			if !strings.Contains(bad, ".") {
				full = module + bad
			}
			if _, linked := via[full]; linked {
				chain := []string{short(full)}
				for p := via[full]; p != ""; p = via[p] {
					chain = append(chain, short(p))
				}
				slices.Reverse(chain)
				t.Errorf("%s links %s (%s): %s", rule.pkg, bad, strings.Join(chain, " → "), rule.why)
			}
		}
	}
}

// TestPictureNamesEveryPackage keeps docs/architecture.md's picture in
// step with the table: it names every package.
func TestPictureNamesEveryPackage(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, r := range rows {
		for _, p := range r.pkgs {
			if !strings.Contains(doc, p) {
				t.Errorf("docs/architecture.md does not show %s", p)
			}
		}
	}
}
