package main

import (
	"context"
	"fmt"
	"time"

	"github.com/capstan-ota/capstan/origin"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
)

func newGCCmd() *cobra.Command {
	var grace time.Duration
	var dryRun, asJSON bool
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
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := origin.GCBody{DryRun: dryRun}
			if cmd.Flags().Changed("grace") {
				body.Grace = grace.String()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			var rep origin.GCReport
			if err := apiClient().Do(ctx, "POST", "/v1/gc", body, &rep); err != nil {
				return fail(cmd, asJSON, err)
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
			return output(cmd, asJSON, rep, human)
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", origin.DefaultGCGrace, "keep anything written more recently than this")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be deleted; delete nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}
