//go:build race

package delta

// raceEnabled: the race detector slows the suffix-array scan about 15×, so
// the fixture cases run only without it (make test runs them).
const raceEnabled = true
