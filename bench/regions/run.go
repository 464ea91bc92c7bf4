package regions

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/device"
)

// Config configures a regions benchmark. Zero values mean the documented
// defaults.
type Config struct {
	// Fleet is the fleet to start (Binary and Dir required).
	Fleet FleetConfig
	// Base and Target are the bundles (zip or folder) of two consecutive
	// releases: every device installs Base, then updates to Target, which
	// is the measured update (required).
	Base, Target string
	// Devices is the number of devices per arm (default 30).
	Devices int
	// App and Channel name what the devices follow (default
	// com.example.regions / production).
	App, Channel string
	// Seed makes the shipped-edge choices repeatable (default 1).
	Seed uint64
}

// Arm is what one way of choosing an edge gave.
type Arm struct {
	// Name is "ranked" (the device ranks the fleet) or "random" (ranking
	// off, one shipped edge picked at random per device).
	Name string `json:"name"`
	// Devices is the number of devices that ran.
	Devices int `json:"devices"`
	// Failed counts runs that failed.
	Failed int `json:"failed"`
	// NearestShare is the share of measured updates served by the
	// nearest edge, 0..1.
	NearestShare float64 `json:"nearest_share"`
	// ByRegion counts the measured updates each region served.
	ByRegion map[string]int `json:"by_region"`
	// First is the first run's latency (ms): ranking (for ranked devices)
	// plus the full install of Base.
	First Latency `json:"first_run_ms"`
	// Update is the measured update's latency (ms): check + patch +
	// verify + install of Target. It includes the device's disk work
	// (every file of the new bundle is written and synced).
	Update Latency `json:"update_ms"`
	// Check is the latency (ms) of a check that finds the device up to
	// date: one verified answer from the edge, the network share of an
	// update without the disk.
	Check Latency `json:"check_ms"`
}

// Latency summarises run times in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

// Report is the result of Run.
type Report struct {
	// Mode is how delay was added (ModeNetem, ModeNetnsProxy, ModeLoopback).
	Mode string `json:"mode"`
	// Sites are the regions and their added round trips (ms).
	Sites []SiteReport `json:"sites"`
	// Ranked and Random are the two arms.
	Ranked Arm `json:"ranked"`
	Random Arm `json:"random"`
}

// SiteReport is one region of a Report.
type SiteReport struct {
	Region string  `json:"region"`
	RTTms  float64 `json:"rtt_ms"`
	URL    string  `json:"url"`
}

// Run starts a fleet in regions, installs Base on Devices ranked devices
// and Devices random-edge devices, uploads Target and measures each
// device's update to it: which edge served it and how long it took.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Base == "" || cfg.Target == "" {
		return nil, errors.New("regions: Base and Target bundles are required")
	}
	if cfg.Devices <= 0 {
		cfg.Devices = 30
	}
	if cfg.App == "" {
		cfg.App = "com.example.regions"
	}
	if cfg.Channel == "" {
		cfg.Channel = "production"
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	logf := cfg.Fleet.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	f, err := StartFleet(ctx, cfg.Fleet)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rep := &Report{Mode: f.Mode()}
	nearest := f.Edges[0]
	for _, e := range f.Edges {
		rep.Sites = append(rep.Sites, SiteReport{Region: e.Region, RTTms: ms(e.RTT), URL: e.URL})
		if e.RTT < nearest.RTT {
			nearest = e
		}
	}
	if err := f.Upload(ctx, cfg.App, cfg.Channel, "1.0.0", cfg.Base); err != nil {
		return nil, err
	}
	if err := f.WaitServing(ctx, 30*time.Second, cfg.App, cfg.Channel, "1.0.0"); err != nil {
		return nil, err
	}
	devDir := filepath.Join(cfg.Fleet.Dir, "devices")
	rng := rand.New(rand.NewPCG(cfg.Seed, 0))
	newDevice := func(name string, ranked bool, shipped string) (*device.Device, error) {
		return device.New(device.Config{
			Dir: filepath.Join(devDir, name), Edges: []string{shipped}, App: cfg.App, Channel: cfg.Channel,
			Ranking: device.RankConfig{Off: !ranked, Seed: rng.Uint64() | 1},
		})
	}
	// Warm every edge's cache with both releases first, so that no
	// measured device pays an edge's first pull from the origin.
	var warm []*device.Device
	for i, e := range f.Edges {
		d, err := newDevice(fmt.Sprintf("warm-%d", i), false, e.URL)
		if err != nil {
			return nil, err
		}
		if r := d.Update(ctx); r.Status != device.StatusUpdated {
			return nil, fmt.Errorf("regions: warming edge %s: %s %s", e.Region, r.Status, r.Error)
		}
		warm = append(warm, d)
	}
	arms := []*Arm{{Name: "ranked"}, {Name: "random"}}
	devs := make([][]*device.Device, 2)
	var first [2][]float64
	for k, arm := range arms {
		for i := 0; i < cfg.Devices; i++ {
			shipped := f.Edges[rng.IntN(len(f.Edges))].URL
			d, err := newDevice(fmt.Sprintf("%s-%03d", arm.Name, i), k == 0, shipped)
			if err != nil {
				return nil, err
			}
			t0 := time.Now()
			r := d.Update(ctx)
			if r.Status != device.StatusUpdated {
				arm.Failed++
				logf("regions: %s device %d first run: %s %s", arm.Name, i, r.Status, r.Error)
				continue
			}
			first[k] = append(first[k], ms(time.Since(t0)))
			devs[k] = append(devs[k], d)
		}
	}
	if err := f.Upload(ctx, cfg.App, cfg.Channel, "1.0.1", cfg.Target); err != nil {
		return nil, err
	}
	if err := f.WaitServing(ctx, 30*time.Second, cfg.App, cfg.Channel, "1.0.1"); err != nil {
		return nil, err
	}
	for i, d := range warm {
		if r := d.Update(ctx); r.Status != device.StatusUpdated {
			return nil, fmt.Errorf("regions: warming edge %s with the update: %s %s", f.Edges[i].Region, r.Status, r.Error)
		}
	}
	regionOf := map[string]string{}
	for _, e := range f.Edges {
		regionOf[e.URL] = e.Region
	}
	// The measured updates, one device at a time, the arms interleaved so
	// that both see the same machine load.
	var upd, chk [2][]float64
	for i := 0; i < max(len(devs[0]), len(devs[1])); i++ {
		for k, arm := range arms {
			if i >= len(devs[k]) {
				continue
			}
			t0 := time.Now()
			r := devs[k][i].Update(ctx)
			took := ms(time.Since(t0))
			if r.Status != device.StatusUpdated {
				arm.Failed++
				logf("regions: %s device %d update: %s %s", arm.Name, i, r.Status, r.Error)
				continue
			}
			t0 = time.Now()
			c := devs[k][i].Check(ctx)
			if c.Status != device.StatusUpToDate {
				arm.Failed++
				logf("regions: %s device %d check: %s %s", arm.Name, i, c.Status, c.Error)
				continue
			}
			chk[k] = append(chk[k], ms(time.Since(t0)))
			if arm.ByRegion == nil {
				arm.ByRegion = map[string]int{}
			}
			arm.ByRegion[regionOf[r.Edge]]++
			upd[k] = append(upd[k], took)
		}
	}
	for k, arm := range arms {
		arm.Devices = cfg.Devices
		if n := len(upd[k]); n > 0 {
			arm.NearestShare = float64(arm.ByRegion[nearest.Region]) / float64(n)
		}
		arm.First, arm.Update, arm.Check = summarise(first[k]), summarise(upd[k]), summarise(chk[k])
	}
	rep.Ranked, rep.Random = *arms[0], *arms[1]
	os.RemoveAll(devDir)
	return rep, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func summarise(xs []float64) Latency {
	if len(xs) == 0 {
		return Latency{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	q := func(p float64) float64 { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return Latency{P50: q(0.50), P95: q(0.95), Mean: sum / float64(len(s)), Max: s[len(s)-1]}
}

// String renders the report as a small table.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "regions benchmark (%s)\n", r.Mode)
	for _, s := range r.Sites {
		fmt.Fprintf(&b, "  %-10s +%5.0f ms  %s\n", s.Region, s.RTTms, s.URL)
	}
	fmt.Fprintf(&b, "%-7s %7s %7s %8s %9s %9s %9s %9s %9s  %s\n", "arm", "devices", "failed", "nearest", "check p50", "check p95", "upd p50", "upd p95", "1st p50", "served by region")
	for _, a := range []Arm{r.Ranked, r.Random} {
		var regions []string
		for _, s := range r.Sites {
			regions = append(regions, fmt.Sprintf("%s=%d", s.Region, a.ByRegion[s.Region]))
		}
		fmt.Fprintf(&b, "%-7s %7d %7d %7.0f%% %7.1fms %7.1fms %7.0fms %7.0fms %7.0fms  %s\n", a.Name, a.Devices, a.Failed,
			100*a.NearestShare, a.Check.P50, a.Check.P95, a.Update.P50, a.Update.P95, a.First.P50, strings.Join(regions, " "))
	}
	return b.String()
}
