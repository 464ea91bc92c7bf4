// Package wire holds the JSON shapes that travel between Capstan's parts
// and that both sides must agree on: what an edge answers a device's
// update check (check.go), and the bodies of the origin's CI and operator
// API that `capstan`, origin/client and the origin's handlers read and
// write (api.go). It has no server inside and imports only the signed
// formats (release), so edges, devices, the bench tool, the API client and
// clients in other languages read one definition without linking a
// server or its store (as tailscale keeps client/tailscale/apitype apart
// from its servers). Shapes that only the origin writes and only the
// embedded console reads (its fleet, timeline and release-detail views)
// stay beside their handlers in origin.
package wire
