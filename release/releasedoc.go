package release

import (
	"encoding/json"
	"fmt"
)

// TypeReleaseDoc is the type of a release document (format 2).
const TypeReleaseDoc = "capstan.release/v2"

// MaxDocBytes bounds an encoded release document: it names no file, so it
// is small whatever the bundle.
const MaxDocBytes = 2048

// Doc is the release document CI signs (docs/decisions/012): app, version,
// minimum native version and the FileSet of the bundle: its file count,
// total size and the hash of its canonical file list. It replaces the full
// manifest (TypeRelease) in what devices download before deciding, so an
// update answer costs the same for 30 files or 3,000. The SHA-256 of its
// signed bytes is the release ID.
type Doc struct {
	// Type is always TypeReleaseDoc.
	Type    string `json:"type"`
	App     string `json:"app"`
	Version string `json:"version"`
	// MinNative is the lowest native app version that can run this bundle;
	// empty means any.
	MinNative string  `json:"min_native,omitempty"`
	Files     FileSet `json:"files"`
}

// Validate checks identifiers, semver and bounds.
func (d *Doc) Validate() error {
	if d.Type != TypeReleaseDoc {
		return invalid("release document type %q", d.Type)
	}
	if err := ValidateApp(d.App); err != nil {
		return err
	}
	if _, err := ParseVersion(d.Version); err != nil {
		return err
	}
	if d.MinNative != "" {
		if _, err := ParseVersion(d.MinNative); err != nil {
			return fmt.Errorf("min native version: %w", err)
		}
	}
	if d.Files.Count < 0 || d.Files.Count > MaxFiles {
		return invalid("%d files is outside 0–%d", d.Files.Count, MaxFiles)
	}
	if d.Files.Size < 0 {
		return invalid("negative release size")
	}
	return nil
}

// Encode returns the canonical encoding of the document: the bytes CI
// signs.
func (d *Doc) Encode() ([]byte, error) {
	c := *d
	c.Type = TypeReleaseDoc
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(&c)
}

// Doc returns the release document of a full manifest.
func (m *Manifest) Doc() *Doc {
	return &Doc{Type: TypeReleaseDoc, App: m.App, Version: m.Version, MinNative: m.MinNative, Files: FileSetOf(m.Files)}
}

// EncodeDoc validates m and returns the canonical bytes of its release
// document.
func (m *Manifest) EncodeDoc() ([]byte, error) {
	c := *m
	c.Type = TypeRelease
	c.Files = append([]File(nil), m.Files...)
	c.Sort()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c.Doc().Encode()
}

// WithFiles returns the full manifest of the release d describes, given its
// file list, after checking that the list is the one d signs.
func (d *Doc) WithFiles(files []File) (*Manifest, error) {
	if got := FileSetOf(files); got != d.Files {
		return nil, invalid("file list (%d files, %d bytes, %s) is not the one release %s %s signs (%d files, %d bytes, %s)",
			got.Count, got.Size, got.SHA256, d.App, d.Version, d.Files.Count, d.Files.Size, d.Files.SHA256)
	}
	return &Manifest{Type: TypeRelease, App: d.App, Version: d.Version, MinNative: d.MinNative, Files: files}, nil
}

// DecodeRelease parses the signed bytes of a release in either format: a
// release document (format 2) or a full manifest (format 1, releases
// uploaded before format 2). It returns the document, derived from the
// manifest for format 1, and the manifest when the bytes hold one.
func DecodeRelease(b []byte) (*Doc, *Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, nil, invalid("release of %d bytes is over the limit", len(b))
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, nil, invalid("release: %v", err)
	}
	switch head.Type {
	case TypeReleaseDoc:
		if len(b) > MaxDocBytes {
			return nil, nil, invalid("release document of %d bytes is over the limit", len(b))
		}
		var d Doc
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, nil, invalid("release document: %v", err)
		}
		if err := d.Validate(); err != nil {
			return nil, nil, err
		}
		return &d, nil, nil
	case TypeRelease:
		m, err := DecodeManifest(b)
		if err != nil {
			return nil, nil, err
		}
		return m.Doc(), m, nil
	}
	return nil, nil, invalid("release type %q", head.Type)
}

// Release decodes the envelope's signed bytes as a release in either
// format (see DecodeRelease).
func (e *Envelope) Release() (*Doc, *Manifest, error) { return DecodeRelease(e.Signed) }
