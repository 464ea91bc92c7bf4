// Package bundle reads and writes web-bundle zips safely: it refuses zip
// slip, absolute paths, symlinks, duplicate entries and zip bombs, and it
// makes deterministic zips of folders so the same folder always uploads as
// the same bytes.
package bundle
