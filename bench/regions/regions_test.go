package regions_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/bench/regions"
	"github.com/capstan-ota/capstan/internal/netsim"
	"github.com/capstan-ota/capstan/internal/testutil"
)

// TestBenchmarkRegions is the regions benchmark (scripts/bench-regions.sh).
// It runs only with CAPSTAN_BENCH_REGIONS=1: it takes a minute or more.
// CAPSTAN_BENCH_DEVICES sets the devices per arm (default 30),
// CAPSTAN_BENCH_NETNS=0 keeps to loopback, CAPSTAN_BENCH_JSON names a file
// for the JSON report.
func TestBenchmarkRegions(t *testing.T) {
	if os.Getenv("CAPSTAN_BENCH_REGIONS") == "" {
		t.Skip("set CAPSTAN_BENCH_REGIONS=1 (or run scripts/bench-regions.sh)")
	}
	devices, _ := strconv.Atoi(os.Getenv("CAPSTAN_BENCH_DEVICES"))
	cfg := regions.Config{
		Fleet:   regions.FleetConfig{Binary: testutil.Binary(t), Dir: t.TempDir(), Netns: os.Getenv("CAPSTAN_BENCH_NETNS") != "0", Logf: t.Logf},
		Base:    testutil.Fixture(t, "swagger-ui/www-5.34.0.zip"),
		Target:  testutil.Fixture(t, "swagger-ui/www-5.34.1.zip"),
		Devices: devices,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	rep, err := regions.Run(ctx, cfg)
	if cfg.Fleet.Netns && errors.Is(err, netsim.ErrUnavailable) {
		t.Logf("namespaces unavailable (%v): running on loopback", err)
		cfg.Fleet.Netns = false
		rep, err = regions.Run(ctx, cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.String())
	if p := os.Getenv("CAPSTAN_BENCH_JSON"); p != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if rep.Ranked.Failed > 0 || rep.Ranked.NearestShare < 0.9 {
		t.Errorf("ranked devices: %d failed, %.0f%% from the nearest edge", rep.Ranked.Failed, 100*rep.Ranked.NearestShare)
	}
}
