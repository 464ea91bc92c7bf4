// Package fleettest holds the release-management tests that need a whole
// fleet in one process: a real origin (Badger in a temporary folder), a
// real edge and reference devices, talking HTTP on 127.0.0.1. It has no
// code of its own.
package fleettest
