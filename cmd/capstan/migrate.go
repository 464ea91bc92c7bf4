package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/origin/store/badgerstore"
	"github.com/capstan-ota/capstan/origin/store/fileblobs"
	"github.com/capstan-ota/capstan/origin/store/migrate"
	"github.com/spf13/cobra"
)

// `capstan origin migrate`: an embedded origin's data to a shared store.

// migrateOptions are the flags of `capstan origin migrate`.
type migrateOptions struct {
	from string
	sf   sharedFlags
}

func newMigrateCmd() *cobra.Command {
	var opt migrateOptions
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Copy an embedded origin's data folder to PostgreSQL and an S3-compatible bucket",
		Long: `Copy every blob, then every record, of a stopped origin's data folder to a shared store,
checking each blob against its SHA-256 and all records against a digest of both sides.
Run it again after any failure: it resumes, skipping blobs already copied. The destination
database must be empty (or hold an earlier run of the same copy). Afterwards start every
origin with --store, --blobs and --origin-key FROM/origin.key: devices keep trusting the key
that signed the channel records they have.`,
		Example: `  CAPSTAN_STORE=postgres://capstan@db/capstan AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
    capstan origin migrate --from /var/lib/capstan --blobs 's3://capstan-blobs?endpoint=minio:9000'`,
		Args: cobra.NoArgs,
		RunE: opt.run,
	}
	cmd.Flags().StringVar(&opt.from, "from", "", "data folder of the (stopped) origin to copy (required)")
	cmd.Flags().StringVar(&opt.sf.store, "store", "", "destination PostgreSQL URL (default $CAPSTAN_STORE)")
	cmd.Flags().StringVar(&opt.sf.blobs, "blobs", "", "destination bucket, s3://BUCKET?endpoint=HOST:PORT (default $CAPSTAN_BLOBS)")
	return cmd
}

func (opt *migrateOptions) run(cmd *cobra.Command, _ []string) error {
	if opt.from == "" {
		return usageError("%s", "--from DIR (the data folder of the origin to copy) is required")
	}
	abs, err := filepath.Abs(opt.from)
	if err != nil {
		return err
	}
	keyFile := filepath.Join(abs, "origin.key")
	if _, err := os.Stat(filepath.Join(abs, "db")); err != nil {
		return fmt.Errorf("%s is not an origin data folder (no db/ in it): %w", abs, err)
	}
	opt.sf.originKey = keyFile
	ctx, stop := signalContext()
	defer stop()
	tmp := filepath.Join(abs, "tmp")
	dst := origin.Config{DataDir: abs}
	closeDst, err := opt.sf.open(ctx, &dst)
	if err != nil {
		return err
	}
	defer closeDst()
	if dst.Records == nil {
		return usageError("%s", "migrate needs --store and --blobs (or CAPSTAN_STORE and CAPSTAN_BLOBS)")
	}
	srcRecs, err := badgerstore.Open(filepath.Join(abs, "db"), nil)
	if err != nil {
		return fmt.Errorf("open %s (stop its origin first): %w", abs, err)
	}
	defer srcRecs.Close()
	srcBlobs, err := fileblobs.New(filepath.Join(abs, "blobs"), tmp)
	if err != nil {
		return err
	}
	progress := func(line string) { fmt.Fprintln(cmd.ErrOrStderr(), "capstan: migrate: "+line) }
	rep, err := migrate.Run(ctx, migrate.Source{Name: abs, Records: srcRecs, Blobs: srcBlobs},
		migrate.Dest{Records: dst.Records, Blobs: dst.Blobs}, progress)
	if err != nil {
		return fmt.Errorf("%w (run the same command again to resume)", err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "migrated %s: %d blobs copied (%d bytes), %d already there; %d records, digest %s on both sides\n"+
		"start every origin with --store, --blobs and --origin-key %s\n",
		abs, rep.BlobsCopied, rep.BytesCopied, rep.BlobsSkipped, rep.Records, rep.Digest, keyFile)
	return nil
}
