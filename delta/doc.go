// Package delta builds and applies Capstan patch streams: one file that turns
// an installed release (the base) into another (the target), or that carries
// a whole release when there is no base.
//
// A stream (format 2, docs/decisions/013-patch-format-v2.md) is a 26-byte
// header (magic, format version, the first bytes of the base and target IDs)
// followed by compressed frames of records. Base files the target holds
// unchanged at the same path cost nothing: the stream lists the base files
// the target drops, then one record per other target file, naming its path
// and saying how to produce it: copy a base file with the same content,
// duplicate an earlier target file, apply a binary delta to the file's "old
// twin" (the base file at the same path, or the renamed file it came from
// when a bundler put a content hash in the name) and other sources, or take
// literal bytes.
//
// Build runs at the origin and needs whole files in memory; it bounds that
// memory with a byte-weighted semaphore and falls back to literals for files
// above BuildConfig.MaxDiffSize. Apply runs on devices and streams: it trusts
// nothing in the patch, bounds every size by what the signed release
// document leaves (file count and total size), writes only inside its
// staging folder, hashes every file it writes or keeps, and returns the
// target's file list only once its hash is the one the release document
// signs. Every error wraps one of the exported sentinels.
//
// Build and Apply are safe for concurrent use; they keep no global state.
package delta
