//go:build race

package edge_test

// raceEnabled: the race detector changes what allocates (sync.Pool drops
// entries at random) and slows patch builds about 15×.
const raceEnabled = true
