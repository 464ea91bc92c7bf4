// Package regions runs a Capstan fleet spread over simulated regions on one
// machine — an origin and one edge process per region, each edge behind
// its own added round-trip delay — and measures whether devices find and
// use their nearest edge (the regions benchmark of `capstan bench
// --regions` and scripts/bench-regions.sh, and the fleet of the regions
// tests).
//
// Delay comes from network namespaces with tc netem where the machine
// allows it (root, iproute2, a kernel with sch_netem), and otherwise from a
// delaying TCP proxy in front of each edge (internal/netsim). Report.Mode
// says which was used.
package regions
