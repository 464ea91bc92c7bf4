package main

import (
	"context"
	"fmt"
	"time"

	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/wire"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
)

// gcOptions are the flags of `capstan gc`.
type gcOptions struct {
	grace        time.Duration
	dryRun, json bool
}

func newGCCmd() *cobra.Command {
	var o gcOptions
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete what no release, channel, rollback or device needs: old patches, blobs of failed uploads, upload leftovers",
		Long: `Run one garbage collection pass on the origin now (admin). The origin also runs one every hour.

It keeps every release (rollbacks may name any version), the patches and Capgo downloads of the
releases channels serve or recently served (from bases a device could hold), and anything written
within --grace. It deletes other patches, blobs nothing refers to (uploads killed or refused) and
upload temp files. See docs/operations.md.`,
		Example: `  capstan gc --dry-run
  capstan gc --grace 0s --json`,
		Args: cobra.NoArgs,
		RunE: jsonErrors(&o.json, o.run),
	}
	cmd.Flags().DurationVar(&o.grace, "grace", origin.DefaultGCGrace, "keep anything written more recently than this")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "report what would be deleted; delete nothing")
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON object")
	return cmd
}

func (o *gcOptions) run(cmd *cobra.Command, _ []string) error {
	body := wire.GCBody{DryRun: o.dryRun}
	if cmd.Flags().Changed("grace") {
		body.Grace = o.grace.String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	rep, err := apiClient().GC(ctx, body)
	if err != nil {
		return err
	}
	verb := "deleted"
	if rep.DryRun {
		verb = "would delete"
	}
	human := fmt.Sprintf("gc %s %d blobs (%s), %d patches, %d Capgo downloads, %d upload leftovers; kept %d blobs (%s)",
		verb, rep.Blobs, humanize.IBytes(uint64(rep.Bytes)), rep.Patches, rep.Derived, rep.Leftovers, rep.Kept, rep.Took)
	if rep.Skipped != "" {
		human += "; blobs not swept: " + rep.Skipped
	}
	return output(cmd, o.json, rep, human)
}
