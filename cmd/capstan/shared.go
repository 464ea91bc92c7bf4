package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/origin/store/pgstore"
	"github.com/capstan-ota/capstan/origin/store/s3blobs"
	"github.com/capstan-ota/capstan/release"
	"github.com/spf13/cobra"
)

// sharedFlags are the settings of an origin on a shared store: several
// origins run with the same three.
type sharedFlags struct {
	store, blobs, originKey, prevKey string
}

func (f *sharedFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.store, "store", "", "records database shared by several origins, postgres://USER@HOST/DB (default $CAPSTAN_STORE, then the config file's \"store\"; none: Badger under --data)")
	cmd.Flags().StringVar(&f.blobs, "blobs", "", "blob bucket shared by several origins, s3://BUCKET[/PREFIX]?endpoint=HOST:PORT[&secure=false] (default $CAPSTAN_BLOBS, then \"blobs\"; credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
	cmd.Flags().StringVar(&f.prevKey, "previous-origin-key", "", "with --origin-key: the key it replaces; the origin publishes the rotation statement the old key signs and re-signs the channel records (restart every origin with both; default $CAPSTAN_PREVIOUS_ORIGIN_KEY)")
	cmd.Flags().StringVar(&f.originKey, "origin-key", "", "the channel-signing key every origin of a shared store holds, a PEM file from capstan keys gen --origin (default $CAPSTAN_ORIGIN_KEY: a file name or the PEM itself, then \"origin_key\")")
}

// resolve fills the settings from flags, environment and config file.
func (f sharedFlags) resolve() sharedFlags {
	return sharedFlags{
		store:     pick(f.store, "CAPSTAN_STORE", cli.file.Store, ""),
		blobs:     pick(f.blobs, "CAPSTAN_BLOBS", cli.file.Blobs, ""),
		originKey: pick(f.originKey, "CAPSTAN_ORIGIN_KEY", cli.file.OriginKey, ""),
		prevKey:   pick(f.prevKey, "CAPSTAN_PREVIOUS_ORIGIN_KEY", "", ""),
	}
}

// sharedStores opens the shared records and blobs into cfg when they are
// configured, and returns what closes them.
func (f sharedFlags) open(ctx context.Context, cfg *origin.Config) (func(), error) {
	f = f.resolve()
	if f.prevKey != "" {
		if f.originKey == "" {
			return nil, usageError("--previous-origin-key needs --origin-key (the new key)")
		}
		k, err := loadOriginKey(f.prevKey)
		if err != nil {
			return nil, fmt.Errorf("previous %w", err)
		}
		cfg.PreviousSigningKey = k
	}
	if f.store == "" && f.blobs == "" {
		if f.originKey != "" {
			k, err := loadOriginKey(f.originKey)
			if err != nil {
				return nil, err
			}
			cfg.SigningKey = k
		}
		return func() {}, nil
	}
	if f.store == "" || f.blobs == "" || f.originKey == "" {
		return nil, usageError("%s", "a shared store needs all three of --store (PostgreSQL), --blobs (S3) and --origin-key (the same key file for every origin; make one with capstan keys gen --origin --out origin.key)")
	}
	key, err := loadOriginKey(f.originKey)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(f.store, "postgres://") && !strings.HasPrefix(f.store, "postgresql://") {
		return nil, usageError("--store %q: want postgres://USER@HOST/DB", redact(f.store))
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	recs, err := pgstore.Open(ctx, pgstore.Config{URL: f.store})
	if err != nil {
		return nil, fmt.Errorf("--store %s: %w", redact(f.store), err)
	}
	bcfg, err := s3blobs.ParseURL(f.blobs)
	if err != nil {
		recs.Close()
		return nil, fmt.Errorf("--blobs: %w", err)
	}
	bcfg.TmpDir = filepath.Join(cfg.DataDir, "tmp")
	blobs, err := s3blobs.New(ctx, bcfg)
	if err != nil {
		recs.Close()
		return nil, fmt.Errorf("--blobs %s: %w", f.blobs, err)
	}
	cfg.Records, cfg.Blobs, cfg.SigningKey = recs, blobs, key
	return recs.Close, nil
}

// loadOriginKey reads the origin's private key from a file, or from the
// PEM itself (an environment secret).
func loadOriginKey(v string) (ed25519.PrivateKey, error) {
	b := []byte(v)
	if !strings.HasPrefix(strings.TrimSpace(v), "-----BEGIN") {
		var err error
		if b, err = os.ReadFile(v); err != nil {
			return nil, fmt.Errorf("origin key: %w", err)
		}
	}
	k, err := release.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("origin key: %w", err)
	}
	return k, nil
}

// redact hides a password in a connection URL before it is printed.
func redact(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return u
	}
	userinfo := u[scheme+3 : at]
	if user, _, ok := strings.Cut(userinfo, ":"); ok {
		return u[:scheme+3] + user + ":xxxxx" + u[at:]
	}
	return u
}
