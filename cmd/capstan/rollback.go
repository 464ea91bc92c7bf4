package main

import (
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
	"github.com/spf13/cobra"
)

// rollbackOptions are the flags of `capstan rollback`.
type rollbackOptions struct {
	app, channel, to string
	json             bool
}

func newRollbackCmd() *cobra.Command {
	var o rollbackOptions
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Put the previous (or named) release back on a channel",
		Example: `  capstan rollback --app com.example.app --channel production
  capstan rollback --app com.example.app --channel production --to 1.4.1
  capstan rollback --app com.example.app --channel production --to builtin`,
		Args: cobra.NoArgs,
		RunE: jsonErrors(&o.json, o.run),
	}
	cmd.Flags().StringVar(&o.app, "app", "", "app ID (required)")
	cmd.Flags().StringVar(&o.channel, "channel", "", "channel name (required)")
	cmd.Flags().StringVar(&o.to, "to", "", "version to put back, or \"builtin\" (default: the release served before)")
	cmd.MarkFlagRequired("app")
	cmd.MarkFlagRequired("channel")
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON object")
	return cmd
}

func (o *rollbackOptions) run(cmd *cobra.Command, _ []string) error {
	if o.to != "" && o.to != wire.Builtin {
		if _, err := release.ParseVersion(o.to); err != nil {
			return usageError("--to: %v (or \"builtin\")", err)
		}
	}
	ctx, cancel := apiContext()
	defer cancel()
	cv, err := apiClient().Rollback(ctx, o.app, o.channel, o.to)
	if err != nil {
		return err
	}
	return output(cmd, o.json, cv, "rolled back: "+describeChannel(&cv.Channel))
}
