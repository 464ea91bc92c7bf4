package edge

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCapgoLinksNoKeyCode: the edge serves Capgo's encrypted bundles as
// opaque strings and blobs; the key side of that encryption (capgokey,
// which can sign) stays out of its binary.
func TestCapgoLinksNoKeyCode(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", "github.com/capstan-ota/capstan/edge", "github.com/capstan-ota/capstan/origin").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/capstan-ota/capstan/capgo/capgokey" {
			t.Errorf("edge or origin imports %s", dep)
		}
	}
}
