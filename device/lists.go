package device

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/capstan-ota/capstan/release"
)

// A format 2 release signs only a document naming its file list by hash
// (docs/decisions/012). The device builds that list itself as it installs
// (delta.Apply returns it once its hash checks out) and keeps it here,
// content-addressed, so the next update can start from it: the list never
// rides in check answers, and it stays out of state.json, which is written
// several times per update.
func listsDir(dir string) string { return filepath.Join(stateDir(dir), "lists") }

func listPath(dir string, h release.Hash) string {
	return filepath.Join(listsDir(dir), h.String())
}

// saveList stores a verified file list under its hash: its bytes synced,
// its name made durable by the install's syncfs that follows (the lists
// live on the same file system as the staging folder), before the state
// names it.
func saveList(dir string, files []release.File) (release.Hash, error) {
	b := release.EncodeFileList(files)
	h := release.Sum(b)
	p := listPath(dir, h)
	if _, err := os.Stat(p); err == nil {
		return h, nil
	}
	if err := os.MkdirAll(listsDir(dir), 0o755); err != nil {
		return h, fmt.Errorf("device: save file list: %w", err)
	}
	if err := writeFileDurable(p, b, 0o644, false); err != nil {
		return h, fmt.Errorf("device: save file list: %w", err)
	}
	return h, nil
}

// manifestOf returns the full manifest of a signed release the device
// holds: from the envelope itself for a format 1 manifest, else from the
// stored list, checked against the hash the release document signs.
func (d *Device) manifestOf(env *release.Envelope) (*release.Manifest, error) {
	if env == nil {
		return nil, errors.New("device: no signed release")
	}
	doc, m, err := env.Release()
	if err != nil {
		return nil, fmt.Errorf("device: stored release: %w", err)
	}
	if m != nil {
		return m, nil
	}
	f, err := os.Open(listPath(d.cfg.Dir, doc.Files.SHA256))
	if err != nil {
		return nil, fmt.Errorf("device: file list of %s %s: %w", doc.App, doc.Version, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, release.MaxFileListBytes))
	if err != nil {
		return nil, fmt.Errorf("device: file list of %s %s: %w", doc.App, doc.Version, err)
	}
	files, err := release.DecodeFileList(b)
	if err != nil {
		return nil, fmt.Errorf("device: file list of %s %s: %w", doc.App, doc.Version, err)
	}
	return doc.WithFiles(files)
}

// pruneLists removes stored lists that no release in the state names.
func (d *Device) pruneLists() {
	keep := map[string]bool{}
	for _, env := range []*release.Envelope{d.st.Manifest, d.st.PreviousManifest, d.st.InstallingManifest} {
		if env == nil {
			continue
		}
		if doc, _, err := env.Release(); err == nil {
			keep[doc.Files.SHA256.String()] = true
		}
	}
	ents, err := os.ReadDir(listsDir(d.cfg.Dir))
	if err != nil {
		return
	}
	for _, e := range ents {
		if !keep[e.Name()] {
			os.Remove(filepath.Join(listsDir(d.cfg.Dir), e.Name()))
		}
	}
}
