// Package wire holds the JSON shapes that travel between Capstan's parts
// and that both sides must agree on: what an edge answers a device's
// update check, and the documents devices and tools read from edges. It
// has no server inside and imports only the signed formats (release), so
// edges, devices, the bench tool and clients in other languages read one
// definition (as tailscale keeps client/tailscale/apitype apart from its
// servers).
package wire
