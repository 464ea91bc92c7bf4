package gossip

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkPropagation10 measures how long a record published at the
// origin takes to be accepted by every edge of a 10-edge cluster (11
// nodes, real UDP/TCP on 127.0.0.1, one process). Each iteration publishes
// 20 records one after another; the custom metrics are over all records:
//
//	go test -run '^$' -bench Propagation10 -benchtime 1x ./gossip/
//
// "default" uses DefaultConfig timings (what capstan origin/edge run),
// "local" DefaultLocalConfig (capstan dev, tests). The SPEC target is
// every edge within 1 s.
func BenchmarkPropagation10(b *testing.B) {
	for _, p := range []struct {
		name string
		cfg  func() Config
	}{
		{"default", func() Config {
			c := DefaultConfig()
			c.BindAddr = "127.0.0.1:0"
			return c
		}},
		{"local", DefaultLocalConfig},
	} {
		b.Run(p.name, func(b *testing.B) {
			benchPropagation(b, p.cfg, 10, 20)
		})
	}
}

func benchPropagation(b *testing.B, base func() Config, edges, records int) {
	key := testKey(b)
	c := newCluster(b)
	ocfg := base()
	ocfg.Logger = testLogger()
	ocfg.Meta = Meta{Role: RoleOrigin}
	origin, _ := c.start(ocfg)
	for range edges {
		ecfg := base()
		ecfg.Logger = testLogger()
		ecfg.Meta = Meta{Role: RoleEdge}
		ecfg.Join = []string{origin.Addr()}
		c.start(ecfg)
	}
	c.waitMembers(edges + 1)

	var lat []time.Duration
	seq := uint64(0)
	b.ResetTimer()
	for range b.N {
		for range records {
			seq++
			start := time.Now()
			if err := origin.Publish(signedRecord(b, key, "bench", "prod", seq)); err != nil {
				b.Fatal(err)
			}
			var last time.Time
			eventually(b, 30*time.Second, func() bool {
				last = start
				for _, r := range c.recs[1:] {
					at, ok := r.arrival("bench/prod", seq)
					if !ok {
						return false
					}
					if at.After(last) {
						last = at
					}
				}
				return true
			}, "record %d reaches every edge", seq)
			lat = append(lat, last.Sub(start))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 99)), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(0, "ns/op") // wall time per iteration is meaningless here
	if testing.Verbose() {
		b.Logf("%d records, %d edges: %v", len(lat), edges, fmtDurations(lat))
	}
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 × n)
	return sorted[max(rank, 1)-1]
}

func fmtDurations(ds []time.Duration) string {
	s := ""
	for _, d := range ds {
		s += fmt.Sprintf("%.0fms ", float64(d)/float64(time.Millisecond))
	}
	return s
}
