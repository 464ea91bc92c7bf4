// Package origin is the Capstan origin node: the API that CI uploads to, the
// durable release store, the signer of channel records, and the source that
// edges pull blobs, manifests and patches from.
//
// Storage: file contents, manifests and patches are content-addressed blobs,
// written as files (temp file, fsync, rename) under Config.DataDir/blobs;
// release records, channel records, API keys and counters live in Badger
// with synchronous writes. A release becomes visible in one Badger
// transaction after all of its blobs are durable, so a crash at any point
// leaves a release either whole or absent.
package origin
