package edge

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the edge an untrusted mirror by construction: it must not
// import the origin (which holds the channel-signing key) and must never
// link code that signs.
func TestDeps(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", "github.com/capstan-ota/capstan/edge").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch dep {
		case "github.com/capstan-ota/capstan/origin", "github.com/capstan-ota/capstan/device", "github.com/capstan-ota/capstan/cmd/capstan":
			t.Errorf("edge imports %s", dep)
		}
	}
}
