package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/capstan-ota/capstan/bench/regions"
	"github.com/capstan-ota/capstan/internal/netsim"
	"github.com/spf13/cobra"
)

// regionsOptions are the flags of `capstan bench --regions`.
type regionsOptions struct {
	sites        string
	base, target string
	loopback     bool
}

func (o *regionsOptions) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.sites, "regions", "", `run the regions benchmark instead: edges at these added delays, e.g. "near=5ms,mid=40ms,far=120ms" ("default" for that set); needs --base and --target`)
	f.StringVar(&o.base, "base", "", "--regions: bundle (zip or folder) every device installs first")
	f.StringVar(&o.target, "target", "", "--regions: bundle of the measured update")
	f.BoolVar(&o.loopback, "loopback", false, "--regions: delaying proxies on loopback instead of network namespaces (automatic when namespaces are unavailable)")
}

// runRegions starts an origin and one edge per site (in network namespaces
// with added delay where the machine allows, else behind delaying proxies),
// and compares devices that rank the fleet with devices that pick an edge
// at random: the share of updates served by the nearest edge, and latency.
func runRegions(cmd *cobra.Command, o *regionsOptions, devices int, jsonFile string) error {
	if o.base == "" || o.target == "" {
		return &exitError{code: 2, err: errors.New("--regions needs --base and --target bundles")}
	}
	sites := regions.DefaultSites()
	if o.sites != "default" {
		s, err := regions.ParseSites(o.sites)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("--regions: %w", err)}
		}
		sites = s
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "capstan-regions-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logf := func(format string, args ...any) { fmt.Fprintf(cmd.ErrOrStderr(), format+"\n", args...) }
	cfg := regions.Config{
		Fleet:   regions.FleetConfig{Binary: bin, Dir: dir, Sites: sites, Netns: !o.loopback, Logf: logf},
		Base:    o.base,
		Target:  o.target,
		Devices: devices,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	rep, err := regions.Run(ctx, cfg)
	if cfg.Fleet.Netns && errors.Is(err, netsim.ErrUnavailable) {
		logf("network namespaces unavailable (%v): using delaying proxies on loopback", err)
		cfg.Fleet.Netns = false
		rep, err = regions.Run(ctx, cfg)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), rep.String())
	if jsonFile != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(jsonFile, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}
