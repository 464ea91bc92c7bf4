// Package bsdiff40 applies classic BSDIFF40 patches (Colin Percival's
// format, as written by Debian's bsdiff and github.com/gabstv/go-bsdiff) and
// never trusts the patch.
//
// go-bsdiff's own patcher allocates the header's new size before checking it
// (a 32-byte patch can make the runtime die of out-of-memory, which recover
// cannot catch) and panics on negative control values (the Go form of
// CVE-2014-9862). This patcher streams instead: the old file is an
// io.ReaderAt, the new file goes to an io.Writer, memory is a few fixed
// buffers, the new size must equal the size the caller expects (a signed
// manifest's), and every malformed patch is an error wrapping ErrCorrupt.
//
// This is a leaf package: it imports nothing from Capstan. Patch is safe for
// concurrent use on different inputs.
package bsdiff40
