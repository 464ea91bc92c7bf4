// Package origin is the Capstan origin node: the API that CI uploads to, the
// durable release store, the signer of channel records, and the source that
// edges pull blobs, manifests and patches from.
//
// Storage goes through two interfaces (package store): content-addressed
// blobs (file contents, manifests, patches, zips) and a transactional
// key-value store of records (releases, channel records, API keys,
// counters). By default they are files under Config.DataDir/blobs and an
// embedded Badger database with synchronous writes; several origins share
// PostgreSQL and an S3-compatible bucket instead. A release becomes visible
// in one transaction after all of its blobs are durable, so a crash at any
// point leaves a release either whole or absent.
package origin
