package origin

import (
	"fmt"
	"sort"

	"github.com/capstan-ota/capstan/origin/store"

	"github.com/Masterminds/semver/v3"
	"github.com/capstan-ota/capstan/stats"
)

// pfxNatives keys the census of native app versions devices report with
// their checks: n/<app> → nativeCensus.
const pfxNatives = "n/"

// maxNativeVersions bounds the census per app; rarer versions are counted
// under "other" so hostile devices cannot grow it without end.
const maxNativeVersions = 64

// nativeCensus counts checks per native app version. Checks, not devices:
// a device that checks more often weighs more, which is a fair proxy for
// "how much of the active fleet" an upload warning needs.
type nativeCensus struct {
	Checks map[string]uint64 `json:"checks"`
}

// countNatives adds the native versions of check events to the census,
// inside the events' transaction.
func countNatives(txn store.Txn, events []stats.Event) error {
	byApp := map[string]*nativeCensus{}
	for i := range events {
		e := &events[i]
		if e.Action != stats.ActionCheck || e.Native == "" {
			continue
		}
		c := byApp[e.App]
		if c == nil {
			c = &nativeCensus{}
			if err := getJSON(txn, pfxNatives+e.App, c); err != nil && err != ErrNotFound {
				return err
			}
			if _, err := txn.Get(pfxApp + e.App); err != nil {
				continue // unknown app: not counted
			}
			if c.Checks == nil {
				c.Checks = map[string]uint64{}
			}
			byApp[e.App] = c
		}
		v := e.Native
		if _, err := semver.NewVersion(v); err != nil {
			v = "other"
		}
		if _, ok := c.Checks[v]; !ok && len(c.Checks) >= maxNativeVersions {
			v = "other"
		}
		c.Checks[v] += e.N()
	}
	for app, c := range byApp {
		if err := setJSON(txn, pfxNatives+app, c); err != nil {
			return err
		}
	}
	return nil
}

// nativeWarnings says which share of the checks an app's fleet made came
// from native versions below minNative: devices that will not be offered
// a release needing minNative.
func (s *Server) nativeWarnings(app, version, minNative string) []string {
	if minNative == "" {
		return nil
	}
	min, err := semver.NewVersion(minNative)
	if err != nil {
		return nil
	}
	var c nativeCensus
	if err := s.db.View(func(txn store.Txn) error { return getJSON(txn, pfxNatives+app, &c) }); err != nil {
		return nil
	}
	var total, below uint64
	var versions []string
	for v, n := range c.Checks {
		total += n
		if sv, err := semver.NewVersion(v); err == nil && sv.LessThan(min) {
			below += n
			versions = append(versions, v)
		}
	}
	if below == 0 || total == 0 {
		return nil
	}
	sort.Strings(versions)
	return []string{fmt.Sprintf("%.0f%% of recent device checks come from native versions below %s (%v): those devices will not be offered %s until they update the app from the store",
		100*float64(below)/float64(total), minNative, versions, version)}
}
