// Package device is Capstan's reference device: it asks an edge for
// updates, verifies the signed channel record and release manifest,
// downloads a patch (or the files it lacks), verifies every file against
// the manifest, and installs the new bundle atomically so that a device
// killed at any moment still has a complete bundle in Dir/current.
//
// Edges are untrusted mirrors: nothing they send is installed unless it
// hashes to what a signed manifest says.
package device
