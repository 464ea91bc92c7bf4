package delta

import (
	"os/exec"
	"strings"
	"testing"
)

// Devices link this package for Apply; the diff side of go-bsdiff (qsufsort,
// 17–23× the old file in memory) must stay out of it (style rule 2). The
// origin passes bsdiff.Bytes in through Config.BSDiff instead.
func TestDeps(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, bad := range []string{"github.com/gabstv/go-bsdiff", "github.com/dsnet/compress"} {
		if strings.Contains(string(out), bad) {
			t.Errorf("package delta depends on %s", bad)
		}
	}
}
