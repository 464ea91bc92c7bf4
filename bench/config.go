package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
	"github.com/valyala/fasthttp"
)

// Scenarios.
const (
	// ScenarioSteady keeps the fleet's mix of releases constant: a device
	// that updates is replaced by a fresh one on its starting release
	// (Config.Recycle), so checks and updates keep the same proportions for
	// the whole run.
	ScenarioSteady = "steady"
	// ScenarioStorm points the channel at Config.StormVersion after
	// Config.StormAfter, while the fleet keeps checking, and measures how
	// long it takes until 99 % of the devices run it and how many fetches
	// the edges sent to the origin.
	ScenarioStorm = "storm"
	// ScenarioEdgeKill is the steady scenario with Config.Kill called after
	// Config.KillAfter (the caller kills an edge); devices fail over to the
	// next edge in their list and the result counts failed updates.
	ScenarioEdgeKill = "edge-kill"
)

// Download modes.
const (
	// ModeAuto asks for one patch and falls back to per-file blobs when
	// the edge has no patch for the pair (404). The fallback is remembered
	// per release pair for the run, so a fleet does not pay a 404 per update.
	ModeAuto = "auto"
	// ModePatch only downloads patches; a missing patch fails the update.
	ModePatch = "patch"
	// ModeFiles downloads the files the installed release lacks, by hash,
	// the way device.populate does.
	ModeFiles = "files"
)

// Origin is the part of the origin API the bench uses: the release list
// (to put devices on older releases) and SetChannel (to start a storm).
// *client.Client implements it.
type Origin interface {
	Releases(ctx context.Context, app string) ([]release.Record, error)
	SetChannel(ctx context.Context, app, channel, version string, rollout *float64, paused *bool) (*wire.ChannelView, error)
}

var _ Origin = (*client.Client)(nil)

// Config configures a Bench. Zero values mean the documented defaults
// unless said otherwise.
type Config struct {
	// Edges are the base URLs of the edges; each device tries them in its
	// own rotation of this list (device i starts at edge i mod len), so load
	// spreads evenly and every device has the others to fail over to.
	// Required.
	Edges []string
	// App and Channel are what the devices run. Required.
	App, Channel string
	// Devices is the fleet size (default 100). Each device has a distinct
	// id, so rollout buckets spread like a real fleet's.
	Devices int
	// DevicePrefix starts every device id (default "bench-"); ids are
	// DevicePrefix plus a zero-padded index.
	DevicePrefix string
	// Duration is how long sessions keep starting (default 10 s); sessions
	// in flight at the end are finished and counted.
	Duration time.Duration
	// Rate selects the open loop: sessions started per second, whatever
	// the server does. Zero means the closed loop.
	Rate float64
	// Concurrency is the number of sessions in flight in the closed loop
	// (default 50), and the cap on sessions in flight in the open loop
	// (default 10000 there); a session waiting for a slot is measured from
	// its intended start, so the cap never hides latency.
	Concurrency int
	// Scenario is ScenarioSteady (default), ScenarioStorm or ScenarioEdgeKill.
	Scenario string
	// Fleet is how the devices spread over releases, as shares that are
	// normalised to 100: "prev" runs the release before the channel's
	// current one, "older" the releases before that (spread evenly),
	// "current" the channel's release, "none" the bundle inside the app
	// (it downloads everything). Default "prev=70,older=10,current=20".
	// A share whose release does not exist moves to the next newer class
	// that exists ("older" to "prev" to "none").
	Fleet string
	// Releases lists the app's releases the fleet may start on, as release
	// IDs (64 hex) or versions; versions need Origin. Empty means every
	// release Origin lists, or, without Origin, none (then "prev" and
	// "older" devices start on the app's builtin bundle).
	Releases []string
	// Origin is the origin API; optional except for the storm scenario
	// and for versions in Releases.
	Origin Origin
	// StormVersion is the release the storm scenario points the channel
	// at; StormAfter is when (default a quarter of Duration).
	StormVersion string
	StormAfter   time.Duration
	// Kill is called once, KillAfter into the run (default half of
	// Duration), in the edge-kill scenario; it stops an edge the caller
	// started (the bench itself starts and kills nothing).
	Kill      func(ctx context.Context) error
	KillAfter time.Duration
	// Recycle puts a device back on its starting release after it
	// updated, so the mix of checks and updates stays constant. The
	// steady and edge-kill scenarios use it when true; storm never does.
	Recycle bool
	// NativeVersion is sent as the device's native app version; empty
	// sends none.
	NativeVersion string
	// Keys, when set, are the trusted release and origin keys: every
	// channel record and manifest is verified the way a device does.
	// Empty skips signature checks (hashes are always checked).
	Keys []release.PublicKey
	// Mode is ModeAuto (default), ModePatch or ModeFiles.
	Mode string
	// Parallel is the number of concurrent blob downloads of one device in
	// files mode (default 4).
	Parallel int
	// Timeout bounds one request (default 10 s); a timed-out request
	// counts as an error and the device tries its next edge.
	Timeout time.Duration
	// Events makes devices POST install and failure events to
	// /v1/events. An edge that answers 404 or 405 is taken as not
	// supporting events, and they are turned off for the rest of the run.
	Events bool
	// Seed seeds the assignment of devices to releases (default 1), so two
	// runs with the same config build the same fleet.
	Seed int64
	// Window is the timeline resolution (default 1 s).
	Window time.Duration
	// Progress, when set, receives a live progress line every second
	// (carriage return, no newline); the command passes stderr when it is
	// a terminal.
	Progress io.Writer
	// Logger receives setup and scenario notes; nil discards them.
	Logger *slog.Logger
	// HTTP is the client used for every request; nil means a
	// fasthttp.Client with Concurrency × Parallel connections per edge, at
	// most 256.
	HTTP *fasthttp.Client
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Devices:      100,
		DevicePrefix: "bench-",
		Duration:     10 * time.Second,
		Concurrency:  50,
		Scenario:     ScenarioSteady,
		Fleet:        "prev=70,older=10,current=20",
		Mode:         ModeAuto,
		Parallel:     4,
		Timeout:      10 * time.Second,
		Events:       true,
		Recycle:      true,
		Seed:         1,
		Window:       time.Second,
	}
}

// Fleet classes.
const (
	classCurrent = "current"
	classPrev    = "prev"
	classOlder   = "older"
	classNone    = "none"
)

// share is one class of the fleet spec.
type share struct {
	class string
	pct   float64
}

// parseFleet parses "prev=70,older=10,current=20".
func parseFleet(s string) ([]share, error) {
	var out []share
	total := 0.0
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("bench: fleet %q: want class=share", part)
		}
		k = strings.TrimSpace(k)
		switch k {
		case classCurrent, classPrev, classOlder, classNone:
		default:
			return nil, fmt.Errorf("bench: fleet class %q: want current, prev, older or none", k)
		}
		f, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), "%"), 64)
		if err != nil || f < 0 {
			return nil, fmt.Errorf("bench: fleet share %q: want a non-negative number", v)
		}
		out = append(out, share{k, f})
		total += f
	}
	if total <= 0 {
		return nil, fmt.Errorf("bench: fleet %q has no devices", s)
	}
	for i := range out {
		out[i].pct = out[i].pct * 100 / total
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].class < out[j].class })
	return out, nil
}

// validate fills defaults into a copy of cfg and checks it.
func (cfg Config) validate() (Config, []share, error) {
	d := DefaultConfig()
	if len(cfg.Edges) == 0 {
		return cfg, nil, errors.New("bench: at least one edge URL is required")
	}
	cfg.Edges = append([]string(nil), cfg.Edges...)
	for i, e := range cfg.Edges {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return cfg, nil, fmt.Errorf("bench: edge %q: want an http(s) URL", e)
		}
		cfg.Edges[i] = strings.TrimRight(e, "/")
	}
	if err := release.ValidateApp(cfg.App); err != nil {
		return cfg, nil, fmt.Errorf("bench: %w", err)
	}
	if err := release.ValidateChannel(cfg.Channel); err != nil {
		return cfg, nil, fmt.Errorf("bench: %w", err)
	}
	if cfg.Devices <= 0 {
		cfg.Devices = d.Devices
	}
	if cfg.DevicePrefix == "" {
		cfg.DevicePrefix = d.DevicePrefix
	}
	if cfg.Duration <= 0 {
		cfg.Duration = d.Duration
	}
	if cfg.Rate < 0 {
		return cfg, nil, errors.New("bench: rate must not be negative")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = d.Concurrency
		if cfg.Rate > 0 {
			cfg.Concurrency = 10000
		}
	}
	switch cfg.Scenario {
	case "":
		cfg.Scenario = d.Scenario
	case ScenarioSteady:
	case ScenarioStorm:
		if cfg.StormVersion == "" || cfg.Origin == nil {
			return cfg, nil, errors.New("bench: the storm scenario needs a storm version and the origin API (CAPSTAN_SERVER, CAPSTAN_API_KEY)")
		}
		if cfg.StormAfter <= 0 {
			cfg.StormAfter = cfg.Duration / 4
		}
	case ScenarioEdgeKill:
		if cfg.Kill == nil {
			return cfg, nil, errors.New("bench: the edge-kill scenario needs a kill command")
		}
		if cfg.KillAfter <= 0 {
			cfg.KillAfter = cfg.Duration / 2
		}
	default:
		return cfg, nil, fmt.Errorf("bench: scenario %q: want steady, storm or edge-kill", cfg.Scenario)
	}
	if cfg.Fleet == "" {
		cfg.Fleet = d.Fleet
	}
	shares, err := parseFleet(cfg.Fleet)
	if err != nil {
		return cfg, nil, err
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = d.Mode
	case ModeAuto, ModePatch, ModeFiles:
	default:
		return cfg, nil, fmt.Errorf("bench: mode %q: want auto, patch or files", cfg.Mode)
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = d.Parallel
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.Seed == 0 {
		cfg.Seed = d.Seed
	}
	if cfg.Window <= 0 {
		cfg.Window = d.Window
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, shares, nil
}
