package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/capstan-ota/capstan/origin"
	"github.com/spf13/cobra"
)

// addReleaseFlags gives the commands that run an origin (dev, origin) the
// origin-wide release-management flags.
func addReleaseFlags(root *cobra.Command) {
	for _, c := range root.Commands() {
		if c.Name() != "dev" && c.Name() != "origin" {
			continue
		}
		c.Flags().String("auto-pause-failure-rate", "", fmt.Sprintf("pause a rollout by itself when more than this share of its devices (percent) report a fail or revert; \"off\" disables (default %g; env CAPSTAN_AUTO_PAUSE_FAILURE_RATE)", origin.DefaultAutoPauseFailureRate*100))
		c.Flags().Duration("gc-interval", origin.DefaultGCInterval, "how often garbage collection runs in the background (capstan gc runs it now); 0 or negative turns it off")
		c.Flags().Int("auto-pause-min-addresses", 0, fmt.Sprintf("network addresses (IPv4, IPv6 /64) the failures must come from before a rollout pauses itself (default %d; env CAPSTAN_AUTO_PAUSE_MIN_ADDRESSES)", origin.DefaultAutoPauseMinAddresses))
		c.Flags().Int("auto-pause-min-devices", 0, fmt.Sprintf("devices that must report on a release before its failure rate counts (default %d; env CAPSTAN_AUTO_PAUSE_MIN_DEVICES)", origin.DefaultAutoPauseMinDevices))
	}
}

// releaseConfig fills the origin's release-management settings from the
// flags added by addReleaseFlags, or the environment.
func releaseConfig(cmd *cobra.Command, cfg *origin.Config) error {
	cfg.EventsToken = os.Getenv("CAPSTAN_EVENTS_TOKEN")
	rate := os.Getenv("CAPSTAN_AUTO_PAUSE_FAILURE_RATE")
	if f := cmd.Flags().Lookup("auto-pause-failure-rate"); f != nil && f.Changed {
		rate = f.Value.String()
	}
	switch rate {
	case "":
	case "off":
		cfg.AutoPause.FailureRate = -1
	default:
		v, err := strconv.ParseFloat(strings.TrimSuffix(rate, "%"), 64)
		if err != nil || v <= 0 || v > 100 {
			return usageError("--auto-pause-failure-rate %q must be a percentage above 0 and at most 100, or \"off\"", rate)
		}
		cfg.AutoPause.FailureRate = v / 100
	}
	addrs := os.Getenv("CAPSTAN_AUTO_PAUSE_MIN_ADDRESSES")
	if f := cmd.Flags().Lookup("auto-pause-min-addresses"); f != nil && f.Changed {
		addrs = f.Value.String()
	}
	if addrs != "" {
		n, err := strconv.Atoi(addrs)
		if err != nil || n < 1 {
			return usageError("--auto-pause-min-addresses %q must be a whole number of at least 1", addrs)
		}
		cfg.AutoPause.MinAddresses = n
	}
	if f := cmd.Flags().Lookup("gc-interval"); f != nil && f.Changed {
		d, _ := cmd.Flags().GetDuration("gc-interval")
		if d <= 0 {
			d = -1
		}
		cfg.GC.Interval = d
	}
	min := os.Getenv("CAPSTAN_AUTO_PAUSE_MIN_DEVICES")
	if f := cmd.Flags().Lookup("auto-pause-min-devices"); f != nil && f.Changed {
		min = f.Value.String()
	}
	if min != "" {
		n, err := strconv.Atoi(min)
		if err != nil || n < 1 {
			return usageError("--auto-pause-min-devices %q must be a whole number of at least 1", min)
		}
		cfg.AutoPause.MinDevices = n
	}
	return nil
}
