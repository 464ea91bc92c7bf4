package device

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/release"
)

func manifestOf(t *testing.T, version string, files map[string]string) (*release.Manifest, *release.Envelope) {
	t.Helper()
	m := &release.Manifest{Type: release.TypeRelease, App: "com.x", Version: version}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		m.Files = append(m.Files, release.File{Path: n, Size: int64(len(files[n])), Mode: 0o644, SHA256: release.Sum([]byte(files[n]))})
	}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return m, &release.Envelope{Signed: b}
}

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for n, b := range files {
		p := filepath.Join(dir, n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRecoverAfterCrash simulates a device killed around the swap: the
// next start must know which bundle Dir/current holds.
func TestRecoverAfterCrash(t *testing.T) {
	a := map[string]string{"index.html": "A", "a.js": "aaa"}
	b := map[string]string{"index.html": "B", "b/b.js": "bbb"}
	_, envA := manifestOf(t, "1.0.0", a)
	_, envB := manifestOf(t, "2.0.0", b)
	refA := release.Ref{Version: "1.0.0", ID: envA.ID()}
	refB := release.Ref{Version: "2.0.0", ID: envB.ID()}
	for _, tc := range []struct {
		name    string
		onDisk  map[string]string
		wantCur release.Ref
	}{
		{"killed before the swap", a, refA},
		{"killed after the swap", b, refB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, currentDir(dir), tc.onDisk)
			// A staging folder left behind by the crash.
			staging, _ := newStaging(dir)
			writeTree(t, staging, b)
			st := &State{DeviceID: "d", Current: refA, Manifest: envA, Installing: &refB, InstallingManifest: envB}
			if err := saveState(dir, st); err != nil {
				t.Fatal(err)
			}
			d, err := New(Config{Dir: dir, Edges: []string{"http://127.0.0.1:1"}, App: "com.x", Channel: "production"})
			if err != nil {
				t.Fatal(err)
			}
			if got := d.State().Current; got != tc.wantCur {
				t.Fatalf("current = %+v, want %+v", got, tc.wantCur)
			}
			if d.State().Installing != nil {
				t.Fatal("installing marker not cleared")
			}
			if _, err := os.Stat(staging); !os.IsNotExist(err) {
				t.Fatal("stale staging folder not removed")
			}
		})
	}
}

// TestExchangeCurrent: both bundles stay whole across the swap, the new
// one in current and the outgoing one where the new one was.
func TestExchangeCurrent(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, currentDir(dir), map[string]string{"old.txt": "old"})
	staging, _ := newStaging(dir)
	writeTree(t, staging, map[string]string{"new.txt": "new"})
	if err := exchangeCurrent(dir, staging); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(currentDir(dir), "new.txt")); err != nil || string(b) != "new" {
		t.Fatal("new bundle not in place")
	}
	if _, err := os.Stat(filepath.Join(currentDir(dir), "old.txt")); !os.IsNotExist(err) {
		t.Fatal("old file left in current")
	}
	if b, err := os.ReadFile(filepath.Join(staging, "old.txt")); err != nil || string(b) != "old" {
		t.Fatal("the outgoing bundle is not where the new one was")
	}
}

// TestCrashInFallbackExchangeIsMended: on a file system without
// RENAME_EXCHANGE a crash after current → src.old leaves no current; the
// next start (cleanStaging) puts the old bundle back.
func TestCrashInFallbackExchangeIsMended(t *testing.T) {
	dir := t.TempDir()
	staging, _ := newStaging(dir)
	writeTree(t, staging, map[string]string{"new.txt": "new"})
	writeTree(t, staging+".old", map[string]string{"old.txt": "old"})
	cleanStaging(dir)
	if b, err := os.ReadFile(filepath.Join(currentDir(dir), "old.txt")); err != nil || string(b) != "old" {
		t.Fatalf("current not mended from the .old folder: %v", err)
	}
	if _, err := os.Stat(staging); !os.IsNotExist(err) {
		t.Fatal("the unfinished staging folder was kept")
	}
}

func TestWriteFileRefusesMismatch(t *testing.T) {
	dir := t.TempDir()
	f := release.File{Path: "a/b.js", Size: 3, Mode: 0o644, SHA256: release.Sum([]byte("abc"))}
	if err := writeFile(dir, f, stringsReader("abd")); err == nil {
		t.Fatal("wrong content accepted")
	}
	if err := writeFile(t.TempDir(), f, stringsReader("abcd")); err == nil {
		t.Fatal("oversized content accepted")
	}
	f.Path = "../escape.js"
	if err := writeFile(t.TempDir(), f, stringsReader("abc")); err == nil {
		t.Fatal("path traversal accepted")
	}
}

// TestFolderBelongsToOneApp: a device folder used for one app is refused
// for another (the quick start's ./phone after the README's answered
// "up-to-date" for the wrong app and installed nothing), with a message
// that says what to do; the first app keeps working.
func TestFolderBelongsToOneApp(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, Edges: []string{"http://127.0.0.1:1"}, App: "com.example.app"}
	if _, err := New(cfg); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(statePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	other := cfg
	other.App = "com.example.hello"
	_, err = New(other)
	if !errors.Is(err, ErrOtherApp) || !strings.Contains(err.Error(), "com.example.app") || !strings.Contains(err.Error(), "--dir") {
		t.Fatalf("another app on the folder: %v, want ErrOtherApp naming the folder's app and --dir", err)
	}
	if after, _ := os.ReadFile(statePath(dir)); !bytes.Equal(before, after) {
		t.Fatal("the refused run changed the folder's state")
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("the folder's own app: %v", err)
	}
	if st := d.State(); st.App != cfg.App {
		t.Fatalf("state app %q", st.App)
	}
}

// TestRefusalIsNotNoEdge: an edge that answers the check with an error
// (the app has no such channel) did answer; the device says what it said
// instead of "no edge answered", which is kept for edges that did not.
func TestRefusalIsNotNoEdge(t *testing.T) {
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"app com.example.app has no channel prodution"}`))
	}))
	defer refusing.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // nothing listens there any more
	for _, tc := range []struct {
		edge, want string
		noEdge     bool
	}{
		{refusing.URL, "has no channel prodution", false},
		{down.URL, "no edge answered", true},
	} {
		d, err := New(Config{Dir: t.TempDir(), Edges: []string{tc.edge}, App: "com.example.app", Channel: "prodution", Ranking: RankConfig{Off: true}})
		if err != nil {
			t.Fatal(err)
		}
		res := d.Update(context.Background())
		if res.Status != StatusFailed || !strings.Contains(res.Error, tc.want) || strings.Contains(res.Error, "no edge answered") != tc.noEdge {
			t.Errorf("edge %s: %s %q, want a failure saying %q", tc.edge, res.Status, res.Error, tc.want)
		}
	}
}
