package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/capstan-ota/capstan/bench"
	"github.com/capstan-ota/capstan/release"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newBenchCmd() *cobra.Command {
	cfg := bench.DefaultConfig()
	var edges, releases, jsonFile, reportFile, killCmd string
	var keyFiles []string
	var useOrigin bool
	var reg regionsOptions
	slow := bench.DefaultSlowLinkConfig()
	var pairs string
	var linkDown, linkUp float64
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load edges with a fleet of simulated devices and report latency, throughput and errors",
		Long: `bench simulates a fleet of devices against one or more edges. Each device checks
for an update and, when offered one, downloads the patch (or the files its release
lacks), verifies every byte against the signed manifest and reports events.

Devices start spread over the app's releases (--fleet): older releases come from
--releases (IDs, or versions with the origin API) or from the origin's release list
(CAPSTAN_SERVER, CAPSTAN_API_KEY). Without either, "prev" and "older" devices start
on the app's builtin bundle and download everything.

--rate N runs an open loop (N sessions started per second, latency measured from
the intended start, so a stalled server cannot hide its latency); otherwise a
closed loop keeps --concurrency sessions in flight.

Scenarios: steady (constant mix), storm (--storm-version is released mid-run:
time until 99 % of devices run it and origin fetches), edge-kill (--kill-cmd is
run after --kill-after; devices fail over, failed updates are counted).

slow-link times single updates instead of loading the edges: for each --pairs
FROM:TO it points the channel at FROM (origin API needed), installs it over the
fast path, points the channel at TO and times, through a simulated mobile link
in front of the first --edge (--link-down, --link-up, --link-rtt; default
1.6 Mbit/s, 0.75 Mbit/s, 150 ms), the reference device's update (check, patch,
verify, install) and a Capgo plugin's manifest-mode update (the answer listing
every file, then each changed file, Brotli from 8 KiB). The channel is put back
where it was at the end.`,
		Example: `  capstan bench --edge http://127.0.0.1:7080 --app com.example.app --channel production --devices 1000 --duration 30s
  capstan bench --edge http://e1:7080,http://e2:7080 --app A --channel production --devices 5000 --rate 2000 --duration 1m --json out.json --report out.html
  capstan bench --edge ... --scenario storm --storm-version 1.4.3 --fleet current=100
  capstan bench --edge http://e1:7080,http://e2:7080 ... --scenario edge-kill --kill-after 5s --kill-cmd "kill 12345"
  capstan bench --edge http://127.0.0.1:7080 --app com.example.app --channel production --scenario slow-link --pairs 1.4.2:1.4.3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if reg.sites != "" {
				return runRegions(cmd, &reg, cfg.Devices, jsonFile)
			}
			if edges == "" || cfg.App == "" || cfg.Channel == "" {
				return &exitError{code: 2, err: errors.New(`required flag(s) "edge", "app", "channel" not set (or use --regions)`)}
			}
			cfg.Edges = splitList(edges)
			cfg.Releases = splitList(releases)
			if err := readKeyFiles(&cfg.Keys, keyFiles); err != nil {
				return err
			}
			if cfg.Scenario == bench.ScenarioSlowLink {
				return runSlowLink(cmd, slow, cfg, pairs, linkDown, linkUp, jsonFile)
			}
			// The origin API is used when it is configured or needed: a
			// bench against edges alone must not need origin credentials.
			if api := apiClient(); useOrigin || api.APIKey != "" || cfg.Scenario == bench.ScenarioStorm {
				cfg.Origin = api
			}
			if killCmd != "" {
				cfg.Kill = func(ctx context.Context) error {
					out, err := exec.CommandContext(ctx, "sh", "-c", killCmd).CombinedOutput()
					if err != nil {
						return fmt.Errorf("%s: %w: %s", killCmd, err, out)
					}
					return nil
				}
			}
			if cfg.Scenario != bench.ScenarioSteady && !cmd.Flags().Changed("recycle") {
				cfg.Recycle = cfg.Scenario == bench.ScenarioEdgeKill
			}
			if f, ok := cmd.ErrOrStderr().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				cfg.Progress = f
			}
			cfg.Logger = newLogger(cmd)
			b, err := bench.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			res, err := b.Run(ctx)
			if err != nil {
				return err
			}
			if jsonFile == "-" {
				return res.WriteJSON(cmd.OutOrStdout())
			}
			if err := res.WriteText(cmd.OutOrStdout()); err != nil {
				return err
			}
			if jsonFile != "" {
				if err := writeFileWith(jsonFile, res.WriteJSON); err != nil {
					return err
				}
			}
			if reportFile != "" {
				if err := writeFileWith(reportFile, res.WriteHTML); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "report: %s\n", reportFile)
			}
			return nil
		},
	}
	reg.bind(cmd)
	f := cmd.Flags()
	f.StringVar(&edges, "edge", "", "comma-separated edge URLs; each device tries them in its own rotation (required)")
	f.StringVar(&cfg.App, "app", "", "app ID (required)")
	f.StringVar(&cfg.Channel, "channel", "", "channel (required)")
	f.IntVar(&cfg.Devices, "devices", cfg.Devices, "number of simulated devices")
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long sessions keep starting")
	f.Float64Var(&cfg.Rate, "rate", 0, "open loop: device sessions started per second (0: closed loop)")
	f.IntVar(&cfg.Concurrency, "concurrency", 0, "closed loop: sessions in flight (default 50); open loop: cap on sessions in flight (default 10000)")
	f.StringVar(&cfg.Scenario, "scenario", cfg.Scenario, "steady, storm, edge-kill or slow-link")
	f.StringVar(&cfg.Fleet, "fleet", cfg.Fleet, "shares of devices per starting release: prev, older, current, none")
	f.StringVar(&releases, "releases", "", "releases devices may start on: IDs, or versions with the origin API (default: the origin's list)")
	f.BoolVar(&useOrigin, "origin", false, "read releases from the origin API (--server, CAPSTAN_SERVER) even without an API key")
	f.StringVar(&cfg.StormVersion, "storm-version", "", "storm: the version to point the channel at mid-run (needs CAPSTAN_API_KEY)")
	f.DurationVar(&cfg.StormAfter, "storm-after", 0, "storm: when to release it (default a quarter of --duration)")
	f.StringVar(&killCmd, "kill-cmd", "", "edge-kill: shell command that stops an edge")
	f.DurationVar(&cfg.KillAfter, "kill-after", 0, "edge-kill: when to run --kill-cmd (default half of --duration)")
	f.BoolVar(&cfg.Recycle, "recycle", cfg.Recycle, "put an updated device back on its starting release, keeping the mix constant (the storm scenario never does)")
	f.StringVar(&cfg.Mode, "mode", cfg.Mode, "download: auto (patch, else files), patch or files")
	f.IntVar(&cfg.Parallel, "parallel", cfg.Parallel, "concurrent file downloads per device in files mode")
	f.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "per-request timeout")
	f.StringVar(&cfg.NativeVersion, "native-version", "", "native app version the devices report")
	f.StringArrayVar(&keyFiles, "public-key", nil, "trusted public keys (PEM; verify every record like a device; repeatable)")
	f.BoolVar(&cfg.Events, "events", cfg.Events, "devices POST install/fail events to /v1/events (off for the run if the edge has none)")
	f.Int64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the device-to-release assignment")
	f.StringVar(&cfg.DevicePrefix, "device-prefix", cfg.DevicePrefix, "prefix of the device ids")
	f.StringVar(&pairs, "pairs", "", "slow-link: updates to time, FROM:TO versions, comma-separated")
	f.Float64Var(&linkDown, "link-down", float64(slow.Down)/1e6, "slow-link: the link's download rate, Mbit/s")
	f.Float64Var(&linkUp, "link-up", float64(slow.Up)/1e6, "slow-link: the link's upload rate, Mbit/s")
	f.DurationVar(&slow.RTT, "link-rtt", slow.RTT, "slow-link: the link's round trip")
	f.StringVar(&jsonFile, "json", "", "write every figure as JSON to FILE (- for stdout instead of the table)")
	f.StringVar(&reportFile, "report", "", "write a self-contained HTML report with charts to FILE")
	return cmd
}

// writeFileWith creates path and fills it with write.
func writeFileWith(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readKeyFiles appends the public keys of each PEM file to keys.
func readKeyFiles(keys *[]release.PublicKey, files []string) error {
	for _, kf := range files {
		b, err := os.ReadFile(kf)
		if err != nil {
			return fmt.Errorf("--public-key: %w", err)
		}
		k, err := release.ParsePublicKeys(b)
		if err != nil {
			return fmt.Errorf("--public-key %s: %w", kf, err)
		}
		*keys = append(*keys, k...)
	}
	return nil
}

// runSlowLink runs the slow-link scenario: the edge, app, channel, keys
// and native version come from the fleet flags in fleet.
func runSlowLink(cmd *cobra.Command, slow bench.SlowLinkConfig, fleet bench.Config, pairs string, down, up float64, jsonFile string) error {
	var err error
	if slow.Pairs, err = bench.ParsePairs(pairs); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("--pairs: %w", err)}
	}
	if down <= 0 || up <= 0 {
		return &exitError{code: 2, err: errors.New("--link-down and --link-up must be positive (Mbit/s)")}
	}
	slow.Down, slow.Up = int64(down*1e6), int64(up*1e6)
	slow.Edge, slow.App, slow.Channel = fleet.Edges[0], fleet.App, fleet.Channel
	slow.Keys, slow.NativeVersion = fleet.Keys, fleet.NativeVersion
	slow.Origin = apiClient()
	slow.Logger = newLogger(cmd)
	s, err := bench.NewSlowLink(slow)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	res, err := s.Run(ctx)
	if err != nil {
		return err
	}
	if jsonFile == "-" {
		return res.WriteJSON(cmd.OutOrStdout())
	}
	if err := res.WriteText(cmd.OutOrStdout()); err != nil {
		return err
	}
	if jsonFile != "" {
		return writeFileWith(jsonFile, res.WriteJSON)
	}
	return nil
}
