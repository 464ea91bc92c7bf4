package device

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/capstan-ota/capstan/release"
)

// State is what a device remembers between runs, kept in Dir/.capstan.
type State struct {
	DeviceID string `json:"device_id"`
	// App is the app this folder belongs to: a phone's app folder holds
	// one app, so New refuses another app rather than answer its checks
	// with this one's releases (ErrOtherApp).
	App string `json:"app,omitempty"`
	// Current is the installed release (zero ID: the bundle inside the app).
	Current release.Ref `json:"current"`
	// Manifest is the signed release of Current: a release document
	// (format 2), whose file list is kept in Dir/.capstan/lists, or a full
	// manifest (format 1).
	Manifest *release.Envelope `json:"manifest,omitempty"`
	// Installing is set just before a new bundle is swapped in, so a run
	// after a crash can tell which bundle Dir/current holds.
	Installing *release.Ref `json:"installing,omitempty"`
	// InstallingManifest is the signed release of Installing.
	InstallingManifest *release.Envelope `json:"installing_manifest,omitempty"`
	// Seqs is the highest channel record sequence seen per channel; a
	// lower one is a replay and is refused.
	Seqs map[string]uint64 `json:"seqs,omitempty"`
	// Failed lists releases that failed on this device; they are never
	// installed again.
	Failed []release.Hash `json:"failed,omitempty"`
	// Previous is the release to revert to if Current is not confirmed.
	Previous *release.Ref `json:"previous,omitempty"`
	// PreviousManifest is the signed release of Previous.
	PreviousManifest *release.Envelope `json:"previous_manifest,omitempty"`
	// Pending is true while Current awaits confirmation by the app.
	Pending bool `json:"pending,omitempty"`
	// PendingSince is when Current was installed (unix seconds).
	PendingSince int64 `json:"pending_since,omitempty"`
	// Reverting is set with Installing while a revert swaps Previous back
	// in, so a run after a crash finishes the revert, not an install.
	Reverting bool `json:"reverting,omitempty"`
	// Channel is the channel of the newest verified record; events name it.
	Channel string `json:"channel,omitempty"`
	// Keys is the trusted key set: Config.Keys at first, then moved on by
	// the rotation statements the device has followed (see trust.go).
	Keys []release.PublicKey `json:"keys,omitempty"`
	// KeysPinned identifies the Config.Keys that Keys grew from; when the
	// app ships other keys, they replace Keys.
	KeysPinned string `json:"keys_pinned,omitempty"`
}

func stateDir(dir string) string  { return filepath.Join(dir, ".capstan") }
func statePath(dir string) string { return filepath.Join(stateDir(dir), "state.json") }

func loadState(dir string) (*State, []byte, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return &State{}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("device: read state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, nil, fmt.Errorf("device: state file %s is corrupt: %w", statePath(dir), err)
	}
	return &st, b, nil
}

func encodeState(st *State) ([]byte, error) {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("device: save state: %w", err)
	}
	return b, nil
}

// saveState writes the state durably: its bytes, then its name (a rename
// over the old file, then a sync of the folder).
func saveState(dir string, st *State) error {
	b, err := encodeState(st)
	if err != nil {
		return err
	}
	return writeState(dir, b, true)
}

// writeState writes encoded state. The bytes are always synced before the
// rename, so the file is never torn; with syncName false the rename itself
// is left for the caller to make durable by a later sync of the same file
// system (an install's syncfs), which must come before anything relies on
// it.
func writeState(dir string, b []byte, syncName bool) error {
	if err := os.MkdirAll(stateDir(dir), 0o755); err != nil {
		return fmt.Errorf("device: save state: %w", err)
	}
	if err := writeFileDurable(statePath(dir), b, 0o644, syncName); err != nil {
		return fmt.Errorf("device: save state: %w", err)
	}
	return nil
}

func writeFileSync(path string, b []byte, mode os.FileMode) error {
	return writeFileDurable(path, b, mode, true)
}

// writeFileDurable replaces path with b: written to a temporary file and
// synced, renamed over path, and with syncName the folder synced so the
// new name survives a crash.
func writeFileDurable(path string, b []byte, mode os.FileMode, syncName bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if !syncName {
		return nil
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func newDeviceID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
