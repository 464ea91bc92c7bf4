package device

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/capstan-ota/capstan/release"
)

// writeRelease writes files into dir and returns their signed-less
// manifest envelope and ref.
func writeRelease(t *testing.T, dir, version string, files map[string]string) (release.Ref, *release.Envelope) {
	t.Helper()
	m := &release.Manifest{Type: release.TypeRelease, App: "app", Version: version}
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		m.Files = append(m.Files, release.File{Path: p, Size: int64(len(c)), Mode: 0o644, SHA256: release.Sum([]byte(c))})
	}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	env := release.Seal(b)
	return release.Ref{Version: version, ID: env.ID()}, env
}

func TestRecoverInterruptedRevert(t *testing.T) {
	for _, swapped := range []bool{true, false} {
		t.Run(map[bool]string{true: "after swap", false: "before swap"}[swapped], func(t *testing.T) {
			dir := t.TempDir()
			scratch := t.TempDir()
			refA, envA := writeRelease(t, filepath.Join(scratch, "a"), "1.0.0", map[string]string{"index.html": "A"})
			refB, envB := writeRelease(t, filepath.Join(scratch, "b"), "1.1.0", map[string]string{"index.html": "B", "x.js": "x"})
			src := "b"
			if swapped {
				src = "a"
			}
			if err := copyTree(filepath.Join(scratch, src), currentDir(dir)); err != nil {
				t.Fatal(err)
			}
			st := &State{
				DeviceID: "d", Current: refB, Manifest: envB, Previous: &refA, PreviousManifest: envA,
				Pending: true, PendingSince: 1, Installing: &refA, InstallingManifest: envA, Reverting: true, Channel: "production",
			}
			if err := saveState(dir, st); err != nil {
				t.Fatal(err)
			}
			d, err := New(Config{Dir: dir, Edges: []string{"http://127.0.0.1:1"}, App: "app", Channel: "production"})
			if err != nil {
				t.Fatal(err)
			}
			got := d.State()
			if got.Installing != nil || got.Reverting {
				t.Fatalf("revert intent left behind: %+v", got)
			}
			if swapped {
				if got.Current != refA || got.Pending || !slices.Contains(got.Failed, refB.ID) || len(d.outbox) != 1 {
					t.Fatalf("finished revert: %+v, %d events", got, len(d.outbox))
				}
			} else if got.Current != refB || !got.Pending || len(got.Failed) != 0 {
				t.Fatalf("abandoned revert: %+v", got)
			}
		})
	}
}

func TestRecentFailedBounded(t *testing.T) {
	var ids []release.Hash
	for i := range 40 {
		ids = append(ids, release.Sum([]byte{byte(i)}))
	}
	got := recentFailed(ids)
	if want := 16*64 + 15; len(got) != want {
		t.Fatalf("failed= is %d bytes, want %d (the newest 16 ids)", len(got), want)
	}
	if got[len(got)-64:] != ids[39].String() {
		t.Fatal("the newest id is not sent")
	}
}
