package capgo

import (
	"strings"

	"github.com/capstan-ota/capstan/release"
)

// ReleaseMeta is what an edge needs, beyond the signed manifest, to answer
// a Capgo device for one release. The origin serves it at
// GET /v1/capgo/releases/{id}; it never changes for a release ID, so edges
// cache it for good.
type ReleaseMeta struct {
	// Zip is the full zip of the release's files, built once by the origin
	// (deterministic, content-addressed, served at /v1/capgo/zips/{id} and
	// as a blob). It is zero for encrypted releases.
	Zip release.Hash `json:"zip"`
	// ZipSize is its length in bytes.
	ZipSize int64 `json:"zip_size"`
	// Encrypted is set when the release was uploaded with Capgo
	// encryption: devices then get EncryptedZip instead of Zip.
	Encrypted *Encrypted `json:"encrypted,omitempty"`
	// EncryptedZip is the blob of the AES-encrypted zip (served at
	// /v1/blobs/{hash}); EncryptedSize its length.
	EncryptedZip  release.Hash `json:"encrypted_zip,omitzero"`
	EncryptedSize int64        `json:"encrypted_size,omitempty"`
}

// BrotliMinSize is the size from which a manifest file is sent as a
// Brotli payload (".br"), the Capgo CLI's threshold.
const BrotliMinSize = 8192

// WantsBrotli reports whether a file of this path and size is sent as a
// Brotli payload. A file whose own name ends in ".br" is always wrapped,
// because the plugin strips one ".br" and decodes: sending it bare would
// install it under the wrong name with the wrong bytes.
func WantsBrotli(path string, size int64) bool {
	return size >= BrotliMinSize || len(path) > 3 && path[len(path)-3:] == ".br"
}

// FolderPrefix returns the single top-level folder ("www/") that a bundle's
// files sit in when it has no index.html at its root, else "". The plugin
// flattens such a folder when it unzips; manifest entries must name the
// files the same way, so the edge strips the prefix from them.
func FolderPrefix(paths []string) string {
	prefix := ""
	for i, p := range paths {
		if p == "index.html" {
			return ""
		}
		top, _, ok := strings.Cut(p, "/")
		if !ok {
			return ""
		}
		if i == 0 {
			prefix = top + "/"
		} else if top+"/" != prefix {
			return ""
		}
	}
	return prefix
}
