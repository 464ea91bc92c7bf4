// Package sadiff computes bsdiff-style binary deltas (Percival's algorithm:
// approximate matches found through a suffix array of the old file, stored
// as "add these bytes to old", "insert these new bytes", "seek in old").
//
// It differs from go-bsdiff in three ways that matter to Capstan: the suffix
// array is built with the standard library's SA-IS (index/suffixarray),
// several times faster than qsufsort with 8 bytes per old byte less memory;
// the work can be cancelled through a context; and the result is handed to a
// callback as plain control/diff/extra slices, so the caller chooses the
// container and the entropy coder (Capstan compresses the whole patch stream
// with zstd, which finds the redundancy between the deltas of similar files).
//
// Diff is safe for concurrent use on different inputs; it keeps no state.
package sadiff
