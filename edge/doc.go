// Package edge is a Capstan edge node: a fasthttp server that answers device
// update checks from signed channel records held in memory, and serves
// immutable content-addressed blobs (bundle files, manifests, patches) from
// a size-capped Badger cache, pulling each missing blob from an origin once
// however many devices ask for it at the same moment.
//
// Edges hold no signing key and are treated by devices as untrusted
// mirrors: every byte they serve is verified on the device against hashes
// in records signed by CI and by the origin.
package edge
