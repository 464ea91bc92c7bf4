// Package capgo speaks the device protocol of the @capgo/capacitor-updater
// plugin (v8), so that apps built with that plugin can update from a
// Capstan edge by pointing updateUrl, statsUrl and channelUrl at it.
//
// The package holds what edge, origin and CLI share and nothing that does
// I/O: the request and answer types (with the exact JSON types the iOS
// decoder demands), bounded parsers for the plugin's bodies, the update
// decision of Capgo's backend mapped onto Capstan channels, the per-app
// Capgo settings an operator stores on the origin, and the shapes of the
// plugin's bundle-encryption strings. The key side of that encryption
// (key pairs, encryption in CI, recovery on a device) is package
// capgo/capgokey, which edges and origins never import. The protocol is
// described in docs/capgo.md; the choices made where the plugin leaves
// room are in docs/decisions/070-capgo-compat.md.
//
// All functions are safe for concurrent use. Parsers copy what they keep:
// callers may reuse the byte slices they pass in.
package capgo
