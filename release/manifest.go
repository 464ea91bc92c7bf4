package release

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"
)

// Limits that every decoder of a manifest enforces before trusting it.
const (
	// MaxFiles bounds the number of files in one release. Real web bundles
	// have hundreds to a few thousand; the bound keeps a hostile manifest
	// from costing more than a few tens of megabytes to parse.
	MaxFiles = 100_000
	// MaxPathLen bounds one file path in bytes (the common file-system limit).
	MaxPathLen = 1024
	// MaxManifestBytes bounds an encoded manifest or signed envelope.
	MaxManifestBytes = 32 << 20
	// MaxAppLen and MaxVersionLen bound identifiers.
	MaxAppLen     = 128
	MaxVersionLen = 64
)

// File is one file of a bundle. Mode holds only the permission bits.
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Mode   uint32 `json:"mode"`
	SHA256 Hash   `json:"sha256"`
}

// Manifest is the content of a release: what CI signs and what a device
// verifies every installed byte against. Files are sorted by Path.
type Manifest struct {
	// Type is always TypeRelease; it keeps a signature over a manifest from
	// being replayed as a signature over another document type.
	Type    string `json:"type"`
	App     string `json:"app"`
	Version string `json:"version"`
	// MinNative is the lowest native app version that can run this bundle;
	// empty means any.
	MinNative string `json:"min_native,omitempty"`
	Files     []File `json:"files"`
}

// Document types carried in a signed envelope.
const (
	TypeRelease = "capstan.release/v1"
	TypeChannel = "capstan.channel/v1"
)

// TotalSize is the sum of the file sizes.
func (m *Manifest) TotalSize() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Lookup returns the file at path, if any. Files must be sorted.
func (m *Manifest) Lookup(path string) (File, bool) {
	i := sort.Search(len(m.Files), func(i int) bool { return m.Files[i].Path >= path })
	if i < len(m.Files) && m.Files[i].Path == path {
		return m.Files[i], true
	}
	return File{}, false
}

// Sort orders the files by path, the canonical order.
func (m *Manifest) Sort() { SortFiles(m.Files) }

// Encode returns the canonical JSON encoding of m: the bytes CI signs and
// whose SHA-256 is the release ID. It validates m first.
func (m *Manifest) Encode() ([]byte, error) {
	c := *m
	c.Type = TypeRelease
	c.Files = append([]File(nil), m.Files...)
	c.Sort()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(&c)
}

// ErrInvalid is wrapped by every validation error in this package.
var ErrInvalid = errors.New("invalid")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Validate checks identifiers, semver, bounds and every path; it requires
// the files to be sorted with no duplicates.
func (m *Manifest) Validate() error {
	if m.Type != TypeRelease {
		return invalid("manifest type %q", m.Type)
	}
	if err := ValidateApp(m.App); err != nil {
		return err
	}
	if _, err := ParseVersion(m.Version); err != nil {
		return err
	}
	if m.MinNative != "" {
		if _, err := ParseVersion(m.MinNative); err != nil {
			return fmt.Errorf("min native version: %w", err)
		}
	}
	return m.validateFiles()
}

// validateFiles checks the file list: bounds, paths, order, no duplicates,
// no path that is both a file and a folder.
func (m *Manifest) validateFiles() error {
	if len(m.Files) > MaxFiles {
		return invalid("%d files is more than the limit of %d", len(m.Files), MaxFiles)
	}
	for i, f := range m.Files {
		if err := ValidatePath(f.Path); err != nil {
			return err
		}
		if f.Size < 0 {
			return invalid("file %q has negative size", f.Path)
		}
		if f.Mode&^0o777 != 0 {
			return invalid("file %q has mode %o beyond permission bits", f.Path, f.Mode)
		}
		if i > 0 && m.Files[i-1].Path >= f.Path {
			if m.Files[i-1].Path == f.Path {
				return invalid("duplicate file %q", f.Path)
			}
			return invalid("files are not sorted at %q", f.Path)
		}
	}
	// A file and a directory of the same name cannot both exist on disk.
	for i := 1; i < len(m.Files); i++ {
		prev := m.Files[i-1].Path
		for j := i; j < len(m.Files) && strings.HasPrefix(m.Files[j].Path, prev); j++ {
			if strings.HasPrefix(m.Files[j].Path, prev+"/") {
				return invalid("%q is both a file and a directory", prev)
			}
		}
	}
	return nil
}

// DecodeManifest parses and validates canonical manifest bytes.
func DecodeManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, invalid("manifest of %d bytes is over the limit", len(b))
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, invalid("manifest: %v", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// ValidateApp checks an app ID: 1–128 characters of letters, digits, '.',
// '-' and '_', starting with a letter or digit (reverse-domain IDs fit).
func ValidateApp(app string) error {
	if app == "" || len(app) > MaxAppLen {
		return invalid("app id must be 1 to %d characters", MaxAppLen)
	}
	for i := 0; i < len(app); i++ {
		c := app[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i > 0 {
			ok = ok || c == '.' || c == '-' || c == '_'
		}
		if !ok {
			return invalid("app id %q: only letters, digits, '.', '-' and '_' are allowed", app)
		}
	}
	return nil
}

// ValidateChannel checks a channel name with the same rules as an app ID.
func ValidateChannel(ch string) error {
	if err := ValidateApp(ch); err != nil {
		return invalid("channel name %q: only letters, digits, '.', '-' and '_' are allowed, 1 to %d characters", ch, MaxAppLen)
	}
	return nil
}

// ParseVersion parses a strict semantic version (MAJOR.MINOR.PATCH with
// optional pre-release and build), without a leading "v".
func ParseVersion(v string) (*semver.Version, error) {
	if v == "" || len(v) > MaxVersionLen {
		return nil, invalid("version %q: must be semver such as 1.4.2, at most %d characters", v, MaxVersionLen)
	}
	sv, err := semver.StrictNewVersion(v)
	if err != nil {
		return nil, invalid("version %q is not semver (MAJOR.MINOR.PATCH, e.g. 1.4.2): %v", v, err)
	}
	return sv, nil
}

// ValidatePath checks a bundle-relative file path: valid UTF-8, forward
// slashes, no empty, "." or ".." segments, not absolute, no backslash and
// no control character (NUL, newline, …), at most MaxPathLen bytes. These
// are the rules that keep a path inside the install folder on every
// platform, and one line of a file list (EncodeFileList).
func ValidatePath(p string) error {
	switch {
	case p == "":
		return invalid("empty file path")
	case len(p) > MaxPathLen:
		return invalid("file path of %d bytes is over the limit of %d", len(p), MaxPathLen)
	case !utf8.ValidString(p):
		return invalid("file path %q is not valid UTF-8", p)
	case strings.HasPrefix(p, "/"):
		return invalid("absolute file path %q", p)
	case strings.ContainsRune(p, '\\') || strings.ContainsFunc(p, isControl):
		return invalid("file path %q contains a backslash or a control character", p)
	case len(p) >= 2 && p[1] == ':':
		return invalid("file path %q looks like a drive letter", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return invalid("file path %q has an empty, '.' or '..' segment", p)
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// Record is what the origin stores and serves for a release: the signed
// manifest envelope plus unsigned facts the origin adds.
type Record struct {
	// ID is the SHA-256 of the canonical manifest bytes.
	ID       Hash      `json:"id"`
	App      string    `json:"app"`
	Version  string    `json:"version"`
	Uploaded time.Time `json:"uploaded"`
	// UploadedBy is the ID of the API key that uploaded the release
	// (empty when uploaded through the Go API, or before it was recorded).
	UploadedBy string `json:"uploaded_by,omitempty"`
	// Size is the total uncompressed size of the files.
	Size  int64 `json:"size"`
	Files int   `json:"files"`
	// Envelope is the signed manifest as uploaded (signatures may be empty).
	Envelope *Envelope `json:"envelope"`
}
