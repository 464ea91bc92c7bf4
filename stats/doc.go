// Package stats is the wire format of the events devices report (check,
// download, install, confirm, fail, revert) and the small mergeable
// distinct-count sketch the origin keeps per release. Devices post events
// to the edge they use; edges batch them to an origin; the origin keeps
// durable counters. The package has no state of its own.
package stats
