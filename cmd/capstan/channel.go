package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
	"github.com/spf13/cobra"
)

// `capstan channel`: point a channel at a release (set), serve another
// channel's release (promote), list channels, and the Capgo settings of a
// channel (capgo).

func newChannelCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "channel", Short: "Manage channels"}
	cmd.AddCommand(newChannelSetCmd(), newChannelPromoteCmd(), newChannelListCmd(), newChannelCapgoCmd())
	return cmd
}

// channelSetOptions are the flags of `capstan channel set`.
type channelSetOptions struct {
	app, channel, version, rollout string
	pause, resume, json            bool
	flags                          channelFlags
}

func newChannelSetCmd() *cobra.Command {
	var o channelSetOptions
	cmd := &cobra.Command{
		Use:   "set",
		Short: "Point a channel at a release, with a progressive rollout",
		Example: `  capstan channel set --app com.example.app --channel production --version 1.4.2
  capstan channel set --app com.example.app --channel production --version 1.4.3 --rollout 30
  capstan channel set --app com.example.app --channel production --pause     # or --resume, --finish
  capstan channel set --app com.example.app --channel beta --device-select --block-major`,
		Args: cobra.NoArgs,
		RunE: jsonErrors(&o.json, o.run),
	}
	f := cmd.Flags()
	f.StringVar(&o.app, "app", "", "app ID (required)")
	f.StringVar(&o.channel, "channel", "", "channel name (required)")
	cmd.MarkFlagRequired("app")
	cmd.MarkFlagRequired("channel")
	f.StringVar(&o.version, "version", "", "release version to serve")
	f.StringVar(&o.rollout, "rollout", "", "percentage of devices offered the release")
	f.BoolVar(&o.pause, "pause", false, "pause the rollout: no new devices enter it")
	f.BoolVar(&o.resume, "resume", false, "resume a paused rollout")
	f.BoolVar(&o.json, "json", false, "print one JSON object")
	o.flags.register(cmd)
	return cmd
}

func (o *channelSetOptions) run(cmd *cobra.Command, _ []string) error {
	if o.version != "" {
		if _, err := release.ParseVersion(o.version); err != nil {
			return usageError("--version: %v", err)
		}
	}
	pct, err := parseRollout(o.rollout)
	if err != nil {
		return err
	}
	var paused *bool
	if o.pause && o.resume {
		return usageError("--pause and --resume contradict each other")
	}
	if o.pause || o.resume {
		p := o.pause
		paused = &p
	}
	ctx, cancel := apiContext()
	defer cancel()
	cv, err := o.flags.apply(ctx, cmd, o.app, o.channel, o.version, pct, paused)
	if err != nil {
		return err
	}
	human := describeChannel(&cv.Channel)
	if cv.Unchanged {
		human += "\nunchanged: the channel already says that; no new record was signed"
	}
	return output(cmd, o.json, cv, human)
}

// channelFlags are the `channel set` flags of release management.
type channelFlags struct {
	blockMajor, deviceSelect, isDefault, finish, newChannel bool
	autoPauseRate                                           string
	autoPauseMin                                            int
	autoPauseAddrs                                          int
}

func (f *channelFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.blockMajor, "block-major", false, "do not offer a release whose major version is above the device's native major version (--block-major=false lifts it)")
	cmd.Flags().BoolVar(&f.deviceSelect, "device-select", false, "let devices choose this channel themselves (--device-select=false stops it)")
	cmd.Flags().BoolVar(&f.isDefault, "default", false, "make this the app's default channel: the one devices follow when they name none")
	cmd.Flags().BoolVar(&f.finish, "finish", false, "finish the rollout: 100 % of devices, and resume it if paused")
	cmd.Flags().BoolVar(&f.newChannel, "new-channel", false, "--channel may be a channel the app does not have yet (a mistyped name is refused otherwise)")
	cmd.Flags().StringVar(&f.autoPauseRate, "auto-pause-failure-rate", "", "pause the rollout by itself when more than this share of devices (percent, e.g. 20) report a fail or revert; \"off\" disables it for this channel")
	cmd.Flags().IntVar(&f.autoPauseMin, "auto-pause-min-devices", 0, "only judge the failure rate once this many devices reported")
	cmd.Flags().IntVar(&f.autoPauseAddrs, "auto-pause-min-addresses", 0, "only pause when the failures come from at least this many network addresses (default 5)")
}

// apply sends the channel change and the auto-pause overrides.
func (f *channelFlags) apply(ctx context.Context, cmd *cobra.Command, app, channel, version string, pct *float64, paused *bool) (*wire.ChannelView, error) {
	if f.finish {
		if pct != nil && *pct != 100 {
			return nil, usageError("--finish means --rollout 100; do not give both")
		}
		if paused != nil && *paused {
			return nil, usageError("--finish resumes the rollout; it cannot be combined with --pause")
		}
		hundred, resume := 100.0, false
		pct, paused = &hundred, &resume
	}
	ch := wire.SetChannelBody{Version: version, Rollout: pct, Paused: paused, NewChannel: f.newChannel}
	flag := func(name string, v bool) *bool {
		if !cmd.Flags().Changed(name) {
			return nil
		}
		return &v
	}
	ch.BlockMajor = flag("block-major", f.blockMajor)
	ch.DeviceSelect = flag("device-select", f.deviceSelect)
	ch.Default = flag("default", f.isDefault)
	if ch.Default != nil && !*ch.Default {
		return nil, usageError("--default=false is not a thing: make another channel the default instead")
	}
	var pol wire.ChannelPolicy
	if f.autoPauseRate != "" {
		r := -1.0
		if f.autoPauseRate != "off" {
			v, err := strconv.ParseFloat(strings.TrimSuffix(f.autoPauseRate, "%"), 64)
			if err != nil || v <= 0 || v > 100 {
				return nil, usageError("--auto-pause-failure-rate %q must be a percentage above 0 and at most 100, or \"off\"", f.autoPauseRate)
			}
			r = v / 100
		}
		pol.AutoPauseFailureRate = &r
	}
	if cmd.Flags().Changed("auto-pause-min-devices") {
		if f.autoPauseMin < 1 {
			return nil, usageError("--auto-pause-min-devices must be at least 1")
		}
		pol.AutoPauseMinDevices = &f.autoPauseMin
	}
	if cmd.Flags().Changed("auto-pause-min-addresses") {
		if f.autoPauseAddrs < 1 {
			return nil, usageError("--auto-pause-min-addresses must be at least 1")
		}
		pol.AutoPauseMinAddresses = &f.autoPauseAddrs
	}
	api := apiClient()
	cv, err := api.UpdateChannel(ctx, app, channel, ch)
	if err != nil {
		return nil, err
	}
	if pol.AutoPauseFailureRate != nil || pol.AutoPauseMinDevices != nil || pol.AutoPauseMinAddresses != nil {
		if _, err := api.SetChannelPolicy(ctx, app, channel, pol); err != nil {
			return nil, err
		}
	}
	return cv, nil
}

func describeFlags(c *release.Channel) string {
	var fl []string
	if c.Default {
		fl = append(fl, "default")
	}
	if c.DeviceSelect {
		fl = append(fl, "device-select")
	}
	if c.BlockMajor {
		fl = append(fl, "block-major")
	}
	if c.Rollback {
		fl = append(fl, "rollback")
	}
	if len(fl) == 0 {
		return ""
	}
	return " {" + strings.Join(fl, ", ") + "}"
}

// channelPromoteOptions are the flags of `capstan channel promote`.
type channelPromoteOptions struct {
	app, from, to, rollout string
	json, newChannel       bool
}

func newChannelPromoteCmd() *cobra.Command {
	var o channelPromoteOptions
	cmd := &cobra.Command{
		Use:     "promote",
		Short:   "Serve on one channel the release another channel serves (a new record of the target channel)",
		Example: `  capstan channel promote --app com.example.app --from beta --to production --rollout 10`,
		Args:    cobra.NoArgs,
		RunE:    jsonErrors(&o.json, o.run),
	}
	f := cmd.Flags()
	f.StringVar(&o.app, "app", "", "app ID (required)")
	f.StringVar(&o.from, "from", "", "channel whose release is promoted (required)")
	f.StringVar(&o.to, "to", "", "channel that will serve it (required)")
	for _, name := range []string{"app", "from", "to"} {
		cmd.MarkFlagRequired(name)
	}
	f.StringVar(&o.rollout, "rollout", "", "percentage of devices offered it on --to (default 100)")
	f.BoolVar(&o.newChannel, "new-channel", false, "--to may be a channel the app does not have yet (a mistyped name is refused otherwise)")
	f.BoolVar(&o.json, "json", false, "print one JSON object")
	return cmd
}

func (o *channelPromoteOptions) run(cmd *cobra.Command, _ []string) error {
	pct, err := parseRollout(o.rollout)
	if err != nil {
		return err
	}
	ctx, cancel := apiContext()
	defer cancel()
	cv, err := apiClient().Promote(ctx, o.app, o.from, o.to, pct, o.newChannel)
	if err != nil {
		return err
	}
	return output(cmd, o.json, cv, "promoted from "+o.from+": "+describeChannel(&cv.Channel))
}

// channelListOptions are the flags of `capstan channel list`.
type channelListOptions struct {
	app  string
	json bool
}

func newChannelListCmd() *cobra.Command {
	var o channelListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List an app's channels and what each serves",
		Example: `  capstan channel list --app com.example.app`,
		Args:    cobra.NoArgs,
		RunE:    jsonErrors(&o.json, o.run),
	}
	cmd.Flags().StringVar(&o.app, "app", "", "app ID (required)")
	cmd.MarkFlagRequired("app")
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON object")
	return cmd
}

func (o *channelListOptions) run(cmd *cobra.Command, _ []string) error {
	ctx, cancel := apiContext()
	defer cancel()
	chs, err := apiClient().Channels(ctx, o.app)
	if err != nil {
		return err
	}
	lines := make([]string, 0, len(chs))
	for i := range chs {
		lines = append(lines, describeChannel(&chs[i].Channel))
	}
	if len(lines) == 0 {
		lines = append(lines, "app "+o.app+" has no channels yet")
	}
	return output(cmd, o.json, map[string]any{"app": o.app, "channels": chs}, strings.Join(lines, "\n"))
}

func describeChannel(c *release.Channel) string {
	s := fmt.Sprintf("%s/%s serves %s", c.App, c.Channel, c.Release.Version)
	if c.Release.ID.IsZero() {
		s = fmt.Sprintf("%s/%s serves the bundle built into the app", c.App, c.Channel)
	}
	if c.RolloutBPS < release.FullRollout {
		s += fmt.Sprintf(" to %.2f%% of devices", float64(c.RolloutBPS)/100)
		if c.Stable != nil {
			s += fmt.Sprintf(" (others stay on %s)", c.Stable.Version)
		} else {
			s += " (others are offered nothing new)"
		}
	}
	if c.Paused {
		s += " [rollout paused]"
	}
	s += describeFlags(c)
	return s + fmt.Sprintf(" (record %d, expires %s)", c.Seq, c.Expires.Format(time.RFC3339))
}

// capgoToggle is one pair of allow/refuse flags of `capstan channel capgo`
// (--ios and --no-ios) and the setting it changes.
type capgoToggle struct {
	name, help string
	field      func(*capgo.ChannelFlags) *bool
	inverted   bool // the flag enables what the field disables
}

var capgoToggles = []capgoToggle{
	{"ios", "iOS devices", func(f *capgo.ChannelFlags) *bool { return &f.NoIOS }, true},
	{"android", "Android devices", func(f *capgo.ChannelFlags) *bool { return &f.NoAndroid }, true},
	{"electron", "Electron apps", func(f *capgo.ChannelFlags) *bool { return &f.NoElectron }, true},
	{"prod", "store builds (is_prod)", func(f *capgo.ChannelFlags) *bool { return &f.NoProd }, true},
	{"dev", "debug, TestFlight and ad-hoc builds", func(f *capgo.ChannelFlags) *bool { return &f.NoDev }, true},
	{"emulator", "emulators and simulators", func(f *capgo.ChannelFlags) *bool { return &f.NoEmulator }, true},
	{"device", "physical devices", func(f *capgo.ChannelFlags) *bool { return &f.NoDevice }, true},
	{"self-assign", "devices choosing this channel (setChannel)", func(f *capgo.ChannelFlags) *bool { return &f.SelfAssign }, false},
	{"downgrade", "releases older than the native app version", func(f *capgo.ChannelFlags) *bool { return &f.AllowUnderNative }, false},
}

// channelCapgoOptions are the flags of `capstan channel capgo` (the
// toggles are read from the command's flags).
type channelCapgoOptions struct {
	app, channel, disable string
	makeDefault, json     bool
}

// newChannelCapgoCmd is `capstan channel capgo`: the Capgo settings of a
// channel (which devices it accepts, which version jumps it blocks,
// whether devices may choose it) and the app's default channel.
func newChannelCapgoCmd() *cobra.Command {
	var o channelCapgoOptions
	cmd := &cobra.Command{
		Use:   "capgo",
		Short: "Capgo settings of a channel, for @capgo/capacitor-updater devices",
		Long: `Set which Capgo devices a channel accepts and which updates it refuses, as Capgo's
"channel set" does. Flags left out keep their value; with only --app, print the settings.
Edges pick changes up within 30 seconds.`,
		Example: `  capstan channel capgo --app com.example.app --channel production --default --no-emulator --disable-auto-update major
  capstan channel capgo --app com.example.app --channel beta --self-assign --no-prod
  capstan channel capgo --app com.example.app`,
		Args: cobra.NoArgs,
		RunE: jsonErrors(&o.json, o.run),
	}
	cmd.Flags().StringVar(&o.app, "app", "", "app ID (required)")
	cmd.MarkFlagRequired("app")
	cmd.Flags().StringVar(&o.channel, "channel", "", "channel name")
	cmd.Flags().BoolVar(&o.makeDefault, "default", false, "make this the channel Capgo devices follow by default")
	cmd.Flags().StringVar(&o.disable, "disable-auto-update", "", "refuse version jumps against the native version: major (default), minor, patch, metadata (min native version) or none")
	for _, tg := range capgoToggles {
		cmd.Flags().Bool(tg.name, false, "allow "+tg.help)
		cmd.Flags().Bool("no-"+tg.name, false, "refuse "+tg.help)
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON object")
	return cmd
}

func (o *channelCapgoOptions) run(cmd *cobra.Command, _ []string) error {
	if o.disable != "" {
		if err := (&capgo.ChannelFlags{DisableAutoUpdate: o.disable}).Validate(); err != nil {
			return usageError("--disable-auto-update %q: want major, minor, patch, metadata or none", o.disable)
		}
	}
	ctx, cancel := apiContext()
	defer cancel()
	c := apiClient()
	cfg, err := c.CapgoConfig(ctx, o.app)
	if err != nil {
		return err
	}
	changed := false
	if o.channel != "" {
		f := cfg.Flags(o.channel)
		for _, tg := range capgoToggles {
			for _, neg := range []bool{false, true} {
				name := tg.name
				if neg {
					name = "no-" + name
				}
				if cmd.Flags().Changed(name) {
					on, _ := cmd.Flags().GetBool(name)
					*tg.field(&f) = on != neg != tg.inverted
					changed = true
				}
			}
		}
		if cmd.Flags().Changed("disable-auto-update") {
			f.DisableAutoUpdate = o.disable
			changed = true
		}
		if cfg.Channels == nil {
			cfg.Channels = map[string]capgo.ChannelFlags{}
		}
		if f == (capgo.ChannelFlags{}) {
			delete(cfg.Channels, o.channel)
		} else {
			cfg.Channels[o.channel] = f
		}
		if o.makeDefault {
			cfg.DefaultChannel, changed = o.channel, true
		}
	}
	if changed {
		if cfg, err = c.SetCapgoConfig(ctx, o.app, cfg); err != nil {
			return err
		}
	}
	return output(cmd, o.json, cfg, describeCapgo(o.app, cfg))
}

func describeCapgo(app string, cfg *capgo.AppConfig) string {
	var sb strings.Builder
	def := cfg.DefaultChannel
	if def == "" {
		def = "(the edge's default, production unless --capgo-default-channel says otherwise)"
	}
	fmt.Fprintf(&sb, "%s: Capgo devices follow %s by default", app, def)
	for name, f := range cfg.Channels {
		var parts []string
		for _, p := range []struct {
			on   bool
			text string
		}{{f.NoIOS, "no iOS"}, {f.NoAndroid, "no Android"}, {f.NoElectron, "no Electron"}, {f.NoProd, "no prod builds"}, {f.NoDev, "no dev builds"},
			{f.NoEmulator, "no emulators"}, {f.NoDevice, "no physical devices"}, {f.SelfAssign, "devices may choose it"}, {f.AllowUnderNative, "downgrades under native allowed"}} {
			if p.on {
				parts = append(parts, p.text)
			}
		}
		mode := f.DisableAutoUpdate
		if mode == "" {
			mode = capgo.AutoUpdateMajor
		}
		if mode == capgo.AutoUpdateNone {
			parts = append(parts, "allows every version jump")
		} else {
			parts = append(parts, "blocks "+mode+" jumps")
		}
		fmt.Fprintf(&sb, "\n  %s: %s", name, strings.Join(parts, ", "))
	}
	return sb.String()
}
