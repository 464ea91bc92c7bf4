package origin

import (
	"encoding/json"

	"github.com/capstan-ota/capstan/origin/store"

	"github.com/prometheus/client_golang/prometheus"
)

// statsCollector exports the durable release counters on /metrics. It
// reads them from the database at scrape time, so the numbers survive
// restarts and agree with `capstan stats`.
type statsCollector struct{ s *Server }

var (
	descEvents = prometheus.NewDesc("capstan_release_events_total",
		"Device events received per app, channel, release version and action.",
		[]string{"app", "channel", "version", "action"}, nil)
	descBytes = prometheus.NewDesc("capstan_release_download_bytes_total",
		"Bytes devices reported downloading per release.",
		[]string{"app", "channel", "version"}, nil)
	descDevices = prometheus.NewDesc("capstan_release_devices",
		"Distinct devices that reported on a release (HyperLogLog estimate).",
		[]string{"app", "channel", "version"}, nil)
	descFailed = prometheus.NewDesc("capstan_release_failed_devices",
		"Distinct devices that reported a fail or revert of a release (HyperLogLog estimate).",
		[]string{"app", "channel", "version"}, nil)
)

var _ prometheus.Collector = statsCollector{}

// Describe implements prometheus.Collector.
func (statsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descEvents
	ch <- descBytes
	ch <- descDevices
	ch <- descFailed
}

// Collect implements prometheus.Collector.
func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.db.View(func(txn store.Txn) error {
		return iterate(txn, pfxStats, func(_ string, b []byte) error {
			var r statsRecord
			if json.Unmarshal(b, &r) != nil {
				return nil
			}
			v := r.view()
			l := []string{r.App, r.Channel, r.Version}
			for _, a := range []struct {
				name string
				n    uint64
			}{{"check", v.Checks}, {"download", v.Downloads}, {"install", v.Installs}, {"confirm", v.Confirms}, {"fail", v.Failures}, {"revert", v.Reverts}} {
				ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(a.n), append(l, a.name)...)
			}
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(v.Bytes), l...)
			ch <- prometheus.MustNewConstMetric(descDevices, prometheus.GaugeValue, float64(v.Devices), l...)
			ch <- prometheus.MustNewConstMetric(descFailed, prometheus.GaugeValue, float64(v.FailedDevices), l...)
			return nil
		})
	})
}
