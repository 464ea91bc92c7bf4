package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/internal/testutil"
)

// TestBusyPortFailsBeforeAnything: a server whose address is taken fails
// at once, naming the flag, before it creates a data folder or prints an
// admin key that would then not exist.
func TestBusyPortFailsBeforeAnything(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	taken := busy.Addr().String()
	// A gossip port is TCP and UDP; taking UDP is enough to make it busy.
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	takenUDP := udp.LocalAddr().String()
	for _, tc := range []struct {
		name string
		args []string
		flag string
	}{
		{"dev api", []string{"dev", "--api", taken, "--edge", "127.0.0.1:0", "--gossip", "127.0.0.1:0"}, "--api"},
		{"dev edge", []string{"dev", "--api", "127.0.0.1:0", "--edge", taken, "--gossip", "127.0.0.1:0"}, "--edge"},
		{"dev gossip", []string{"dev", "--api", "127.0.0.1:0", "--edge", "127.0.0.1:0", "--gossip", takenUDP}, "--gossip"},
		{"origin api", []string{"origin", "--api", taken, "--gossip", "127.0.0.1:0"}, "--api"},
		{"edge http", []string{"edge", "--http", taken, "--gossip", "127.0.0.1:0"}, "--http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			cmd := exec.Command(testutil.Binary(t), append(tc.args, "--data", data)...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit %v, want 1:\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.flag+" ") || !strings.Contains(string(out), "in use") {
				t.Errorf("message does not name %s and the busy address:\n%s", tc.flag, out)
			}
			if strings.Contains(string(out), "CAPSTAN_API_KEY=") || strings.Contains(string(out), "gossip: gossip:") {
				t.Errorf("printed an admin key or a doubled prefix:\n%s", out)
			}
			if _, err := os.Stat(data); err == nil {
				t.Errorf("data folder %s created by a start that failed", data)
			}
		})
	}
}
