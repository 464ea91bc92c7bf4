package regions

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/capstan-ota/capstan/internal/netsim"
)

// TestStartFleetCleansUpOnFailure: a fleet whose origin cannot start
// leaves none of the namespaces it made behind.
func TestStartFleetCleansUpOnFailure(t *testing.T) {
	for _, netns := range []bool{false, true} {
		var mu sync.Mutex
		var made []string
		nsAdd := regexp.MustCompile(`^ip netns add (\S+)$`)
		logf := func(format string, args ...any) {
			if m := nsAdd.FindStringSubmatch(fmt.Sprintf(format, args...)); m != nil {
				mu.Lock()
				made = append(made, m[1])
				mu.Unlock()
			}
		}
		_, err := StartFleet(context.Background(), FleetConfig{Binary: "/bin/false", Dir: t.TempDir(), Netns: netns, NetLogf: logf})
		if netns && errors.Is(err, netsim.ErrUnavailable) {
			t.Logf("namespaces unavailable: %v", err)
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "exited before") {
			t.Fatalf("netns=%v: StartFleet with a binary that exits: %v", netns, err)
		}
		if netns && len(made) == 0 {
			t.Fatal("no namespace was made")
		}
		out, _ := exec.Command("ip", "netns", "list").Output()
		for _, ns := range made {
			if strings.Contains(string(out), ns) {
				t.Errorf("namespace %s left behind after a failed start", ns)
			}
		}
	}
}
