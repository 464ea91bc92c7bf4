// Package fleettest runs a fleet in one process for tests: a real origin
// (Badger in a temporary folder) serving its API over HTTP on 127.0.0.1,
// and real edges that pull from it and receive the records it signs as
// gossip would hand them over (Fleet, StartEdge). The release-management
// tests of this package, the device's tests, the edge's tests and the
// bench command's tests all build their origin and edges with it, so a
// change in how a server starts or stops is made once. Gossip itself is
// exercised with gossip/gossiptest.
package fleettest
