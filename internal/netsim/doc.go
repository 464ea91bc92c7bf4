// Package netsim puts distance between the processes of a test or a
// benchmark on one machine: a TCP proxy that delays every byte on
// loopback and can cap each direction's rate with a token bucket shared by
// all its connections, standing for one device's slow access link (no
// privileges needed), and network namespaces joined by veth
// pairs to one bridge, with tc netem adding delay to each namespace's link
// (root and iproute2 needed).
//
// Only addresses this package creates are used: loopback listeners, and
// 10.200.N.0/24 on veths it made inside namespaces it made.
package netsim
