package regions

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/internal/netsim"
)

// namespaces lists this package's network namespaces.
func namespaces(t *testing.T) []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil
	}
	var ns []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "capstan-") {
			ns = append(ns, f[0])
		}
	}
	return ns
}

// TestStartFleetCleansUpOnFailure: a fleet whose origin cannot start
// leaves no namespace, link or process behind.
func TestStartFleetCleansUpOnFailure(t *testing.T) {
	for _, netns := range []bool{false, true} {
		before := len(namespaces(t))
		_, err := StartFleet(context.Background(), FleetConfig{Binary: "/bin/false", Dir: t.TempDir(), Netns: netns})
		if netns && errors.Is(err, netsim.ErrUnavailable) {
			t.Logf("namespaces unavailable: %v", err)
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "exited before") {
			t.Fatalf("netns=%v: StartFleet with a binary that exits: %v", netns, err)
		}
		if after := len(namespaces(t)); after != before {
			t.Fatalf("netns=%v: %d namespaces before, %d after a failed start", netns, before, after)
		}
	}
}
