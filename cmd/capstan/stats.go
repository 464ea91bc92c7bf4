package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/capstan-ota/capstan/wire"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
)

// statsOptions are the flags of `capstan stats`.
type statsOptions struct {
	app, channel string
	json         bool
}

func newStatsCmd() *cobra.Command {
	var o statsOptions
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Installs, failures, reverts and bytes per release, and auto-paused rollouts",
		Example: `  capstan stats --app com.example.app
  capstan stats --app com.example.app --channel production --json`,
		Args: cobra.NoArgs,
		RunE: jsonErrors(&o.json, o.run),
	}
	cmd.Flags().StringVar(&o.app, "app", "", "app ID (required)")
	cmd.MarkFlagRequired("app")
	cmd.Flags().StringVar(&o.channel, "channel", "", "only this channel")
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON object")
	return cmd
}

func (o *statsOptions) run(cmd *cobra.Command, _ []string) error {
	ctx, cancel := apiContext()
	defer cancel()
	rep, err := apiClient().Stats(ctx, o.app, o.channel)
	if err != nil {
		return err
	}
	return output(cmd, o.json, rep, describeStats(rep))
}

func describeStats(rep *wire.StatsReport) string {
	var b strings.Builder
	t := rep.Totals
	fmt.Fprintf(&b, "app %s: ~%d devices, %d installs, %d confirms, %d failures, %d reverts, %s downloaded\n",
		rep.App, t.Devices, t.Installs, t.Confirms, t.Failures, t.Reverts, humanize.IBytes(t.Bytes))
	for _, cs := range rep.Channels {
		state := fmt.Sprintf("serves %s to %.2f%% of devices", cs.Serving, float64(cs.RolloutBPS)/100)
		if cs.Paused {
			state += " [rollout paused]"
		}
		fmt.Fprintf(&b, "\nchannel %s %s\n", cs.Channel, state)
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  VERSION\tDEVICES\tINSTALLS\tCONFIRMS\tFAILURES\tREVERTS\tFAILED DEVICES\tBYTES")
		for _, r := range cs.Releases {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%d\t%d (%.1f%%)\t%s\n", r.Version, r.Devices, r.Installs, r.Confirms, r.Failures, r.Reverts, r.FailedDevices, r.FailureRate*100, humanize.IBytes(r.Bytes))
		}
		tw.Flush()
		for _, r := range cs.Releases {
			if ap := r.AutoPaused; ap != nil {
				fmt.Fprintf(&b, "  %s: rollout AUTO-PAUSED at %s: %.1f%% of ~%d devices failed (threshold %.1f%%); resume with: capstan channel set --app %s --channel %s --resume\n",
					r.Version, ap.At.Format(time.RFC3339), ap.FailureRate*100, ap.Devices, ap.Threshold*100, rep.App, cs.Channel)
			}
		}
	}
	return strings.TrimRight(b.String(), "\n")
}
