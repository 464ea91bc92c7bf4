// Package delta builds and applies Capstan patch streams: one file that turns
// an installed release (the base) into another (the target), or that carries
// a whole release when there is no base.
//
// A stream is a fixed 80-byte header (magic, format version, body codec,
// base ID, target ID, file count) followed by one compressed body holding one
// record per target file, in any order, then an end record. A record says how
// to produce the file: copy a base file with the same content, duplicate an
// earlier target file, apply a binary delta to the file's "old twin" (the
// base file at the same path, or the renamed file it came from when a bundler
// put a content hash in the name), or take literal bytes. See
// docs/decisions/010-delta-format.md for the layout and why.
//
// Build runs at the origin and needs whole files in memory; it bounds that
// memory with a byte-weighted semaphore and falls back to literals for files
// above Config.MaxDiffSize. Apply runs on devices and streams: it never
// trusts a size from the patch when the signed target manifest has one,
// writes only inside its staging folder, and checks every file's size and
// SHA-256 before returning. Every error wraps one of the exported sentinels.
//
// Build and Apply are safe for concurrent use; they keep no global state.
package delta
