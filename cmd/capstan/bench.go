package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/capstan-ota/capstan/bench"
	"github.com/capstan-ota/capstan/bench/regions"
	"github.com/capstan-ota/capstan/internal/netsim"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// benchOptions are the flags of `capstan bench`: most fill the fleet
// benchmark's configuration directly.
type benchOptions struct {
	cfg                                            bench.Config
	slow                                           bench.SlowLinkConfig
	regions                                        regionsOptions
	edges, releases, jsonFile, reportFile, killCmd string
	keyFiles                                       []string
	useOrigin                                      bool
	pairs                                          string
	linkDown, linkUp                               float64
}

func newBenchCmd() *cobra.Command {
	o := benchOptions{cfg: bench.DefaultConfig(), slow: bench.DefaultSlowLinkConfig()}
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
		RunE: o.run,
	}
	o.regions.bind(cmd)
	f := cmd.Flags()
	f.StringVar(&o.edges, "edge", "", "comma-separated edge URLs; each device tries them in its own rotation (required)")
	f.StringVar(&o.cfg.App, "app", "", "app ID (required)")
	f.StringVar(&o.cfg.Channel, "channel", "", "channel (required)")
	f.IntVar(&o.cfg.Devices, "devices", o.cfg.Devices, "number of simulated devices")
	f.DurationVar(&o.cfg.Duration, "duration", o.cfg.Duration, "how long sessions keep starting")
	f.Float64Var(&o.cfg.Rate, "rate", 0, "open loop: device sessions started per second (0: closed loop)")
	f.IntVar(&o.cfg.Concurrency, "concurrency", 0, "closed loop: sessions in flight (default 50); open loop: cap on sessions in flight (default 10000)")
	f.StringVar(&o.cfg.Scenario, "scenario", o.cfg.Scenario, "steady, storm, edge-kill or slow-link")
	f.StringVar(&o.cfg.Fleet, "fleet", o.cfg.Fleet, "shares of devices per starting release: prev, older, current, none")
	f.StringVar(&o.releases, "releases", "", "releases devices may start on: IDs, or versions with the origin API (default: the origin's list)")
	f.BoolVar(&o.useOrigin, "origin", false, "read releases from the origin API (--server, CAPSTAN_SERVER) even without an API key")
	f.StringVar(&o.cfg.StormVersion, "storm-version", "", "storm: the version to point the channel at mid-run (needs CAPSTAN_API_KEY)")
	f.DurationVar(&o.cfg.StormAfter, "storm-after", 0, "storm: when to release it (default a quarter of --duration)")
	f.StringVar(&o.killCmd, "kill-cmd", "", "edge-kill: shell command that stops an edge")
	f.DurationVar(&o.cfg.KillAfter, "kill-after", 0, "edge-kill: when to run --kill-cmd (default half of --duration)")
	f.BoolVar(&o.cfg.Recycle, "recycle", o.cfg.Recycle, "put an updated device back on its starting release, keeping the mix constant (the storm scenario never does)")
	f.StringVar(&o.cfg.Mode, "mode", o.cfg.Mode, "download: auto (patch, else files), patch or files")
	f.IntVar(&o.cfg.Parallel, "parallel", o.cfg.Parallel, "concurrent file downloads per device in files mode")
	f.DurationVar(&o.cfg.Timeout, "timeout", o.cfg.Timeout, "per-request timeout")
	f.StringVar(&o.cfg.NativeVersion, "native-version", "", "native app version the devices report")
	f.StringArrayVar(&o.keyFiles, "public-key", nil, "trusted public keys (PEM; verify every record like a device; repeatable)")
	f.BoolVar(&o.cfg.Events, "events", o.cfg.Events, "devices POST install/fail events to /v1/events (off for the run if the edge has none)")
	f.Int64Var(&o.cfg.Seed, "seed", o.cfg.Seed, "seed of the device-to-release assignment")
	f.StringVar(&o.cfg.DevicePrefix, "device-prefix", o.cfg.DevicePrefix, "prefix of the device ids")
	f.StringVar(&o.pairs, "pairs", "", "slow-link: updates to time, FROM:TO versions, comma-separated")
	f.Float64Var(&o.linkDown, "link-down", float64(o.slow.Down)/1e6, "slow-link: the link's download rate, Mbit/s")
	f.Float64Var(&o.linkUp, "link-up", float64(o.slow.Up)/1e6, "slow-link: the link's upload rate, Mbit/s")
	f.DurationVar(&o.slow.RTT, "link-rtt", o.slow.RTT, "slow-link: the link's round trip")
	f.StringVar(&o.jsonFile, "json", "", "write every figure as JSON to FILE (- for stdout instead of the table)")
	f.StringVar(&o.reportFile, "report", "", "write a self-contained HTML report with charts to FILE")
	return cmd
}

func (o *benchOptions) run(cmd *cobra.Command, _ []string) error {
	if o.regions.sites != "" {
		return runRegions(cmd, &o.regions, o.cfg.Devices, o.jsonFile)
	}
	if o.edges == "" || o.cfg.App == "" || o.cfg.Channel == "" {
		return &exitError{code: 2, err: errors.New(`required flag(s) "edge", "app", "channel" not set (or use --regions)`)}
	}
	o.cfg.Edges = splitList(o.edges)
	o.cfg.Releases = splitList(o.releases)
	if err := readKeyFiles(&o.cfg.Keys, o.keyFiles); err != nil {
		return err
	}
	if o.cfg.Scenario == bench.ScenarioSlowLink {
		return runSlowLink(cmd, o.slow, o.cfg, o.pairs, o.linkDown, o.linkUp, o.jsonFile)
	}
	// The origin API is used when it is configured or needed: a
	// bench against edges alone must not need origin credentials.
	if api := apiClient(); o.useOrigin || api.APIKey != "" || o.cfg.Scenario == bench.ScenarioStorm {
		o.cfg.Origin = api
	}
	if o.killCmd != "" {
		o.cfg.Kill = func(ctx context.Context) error {
			out, err := exec.CommandContext(ctx, "sh", "-c", o.killCmd).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s: %w: %s", o.killCmd, err, out)
			}
			return nil
		}
	}
	if o.cfg.Scenario != bench.ScenarioSteady && !cmd.Flags().Changed("recycle") {
		o.cfg.Recycle = o.cfg.Scenario == bench.ScenarioEdgeKill
	}
	if f, ok := cmd.ErrOrStderr().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		o.cfg.Progress = f
	}
	o.cfg.Logger = newLogger(cmd)
	b, err := bench.New(o.cfg)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	res, err := b.Run(ctx)
	if err != nil {
		return err
	}
	if o.jsonFile == "-" {
		return res.WriteJSON(cmd.OutOrStdout())
	}
	if err := res.WriteText(cmd.OutOrStdout()); err != nil {
		return err
	}
	if o.jsonFile != "" {
		if err := writeFileWith(o.jsonFile, res.WriteJSON); err != nil {
			return err
		}
	}
	if o.reportFile != "" {
		if err := writeFileWith(o.reportFile, res.WriteHTML); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "report: %s\n", o.reportFile)
	}
	return nil
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
