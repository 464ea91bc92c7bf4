package main

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
	"github.com/spf13/cobra"
)

// channelFlags are the `channel set` flags of release management.
type channelFlags struct {
	blockMajor, deviceSelect, isDefault, finish, newChannel bool
	autoPauseRate                                           string
	autoPauseMin                                            int
}

func (f *channelFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.blockMajor, "block-major", false, "do not offer a release whose major version is above the device's native major version (--block-major=false lifts it)")
	cmd.Flags().BoolVar(&f.deviceSelect, "device-select", false, "let devices choose this channel themselves (--device-select=false stops it)")
	cmd.Flags().BoolVar(&f.isDefault, "default", false, "make this the app's default channel: the one devices follow when they name none")
	cmd.Flags().BoolVar(&f.finish, "finish", false, "finish the rollout: 100 % of devices, and resume it if paused")
	cmd.Flags().BoolVar(&f.newChannel, "new-channel", false, "--channel may be a channel the app does not have yet (a mistyped name is refused otherwise)")
	cmd.Flags().StringVar(&f.autoPauseRate, "auto-pause-failure-rate", "", "pause the rollout by itself when more than this share of devices (percent, e.g. 20) report a fail or revert; \"off\" disables it for this channel")
	cmd.Flags().IntVar(&f.autoPauseMin, "auto-pause-min-devices", 0, "only judge the failure rate once this many devices reported")
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
	api := apiClient()
	cv, err := api.UpdateChannel(ctx, app, channel, ch)
	if err != nil {
		return nil, err
	}
	if pol.AutoPauseFailureRate != nil || pol.AutoPauseMinDevices != nil {
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

func newChannelPromoteCmd() *cobra.Command {
	var app, from, to, rollout string
	var asJSON, newChannel bool
	cmd := &cobra.Command{
		Use:     "promote",
		Short:   "Serve on one channel the release another channel serves (a new record of the target channel)",
		Example: `  capstan channel promote --app com.example.app --from beta --to production --rollout 10`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := func() error {
				var pct *float64
				if rollout != "" {
					v, err := strconv.ParseFloat(strings.TrimSuffix(rollout, "%"), 64)
					if err != nil || v < 0 || v > 100 {
						return usageError("--rollout %q must be a percentage between 0 and 100", rollout)
					}
					pct = &v
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				cv, err := apiClient().Promote(ctx, app, from, to, pct, newChannel)
				if err != nil {
					return err
				}
				return output(cmd, asJSON, cv, "promoted from "+from+": "+describeChannel(&cv.Channel))
			}()
			if err != nil {
				return fail(cmd, asJSON, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app", "", "app ID (required)")
	cmd.Flags().StringVar(&from, "from", "", "channel whose release is promoted (required)")
	cmd.Flags().StringVar(&to, "to", "", "channel that will serve it (required)")
	for _, f := range []string{"app", "from", "to"} {
		cmd.MarkFlagRequired(f)
	}
	cmd.Flags().StringVar(&rollout, "rollout", "", "percentage of devices offered it on --to (default 100)")
	cmd.Flags().BoolVar(&newChannel, "new-channel", false, "--to may be a channel the app does not have yet (a mistyped name is refused otherwise)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newChannelListCmd() *cobra.Command {
	var app string
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List an app's channels and what each serves",
		Example: `  capstan channel list --app com.example.app`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := func() error {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				chs, err := apiClient().Channels(ctx, app)
				if err != nil {
					return err
				}
				lines := make([]string, 0, len(chs))
				for i := range chs {
					lines = append(lines, describeChannel(&chs[i].Channel))
				}
				if len(lines) == 0 {
					lines = append(lines, "app "+app+" has no channels yet")
				}
				return output(cmd, asJSON, map[string]any{"app": app, "channels": chs}, strings.Join(lines, "\n"))
			}()
			if err != nil {
				return fail(cmd, asJSON, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app", "", "app ID (required)")
	cmd.MarkFlagRequired("app")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}
