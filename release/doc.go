// Package release holds the wire formats that the origin, the edges and the
// devices share: the release manifest that CI signs, the channel record that
// the origin signs, the signed envelope around both, key files, and the
// rollout decision that edges and devices compute the same way.
//
// Everything here is pure data and pure functions: no I/O beyond parsing, no
// global state. Every decoder bounds its input before allocating.
package release
