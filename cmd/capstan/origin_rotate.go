package main

import (
	"context"
	"crypto/ed25519"
	"fmt"

	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
	"github.com/spf13/cobra"
)

// rotateOriginKey rotates a running origin's key, co-signed by a release
// key when one is given.
func rotateOriginKey(ctx context.Context, cmd *cobra.Command, o *origin.Server, cosignFile string) error {
	var co []ed25519.PrivateKey
	if cosignFile != "" {
		k, err := release.LoadSigningKey(cosignFile)
		if err != nil {
			return fmt.Errorf("--rotate-cosign: %w", err)
		}
		co = append(co, k)
	}
	env, err := o.RotateKey(ctx, co...)
	if err != nil {
		return err
	}
	r, _ := env.Rotation()
	fmt.Fprintf(cmd.ErrOrStderr(), "origin key rotated: %s → %s; devices follow the statement served at /v1/keys/rotations\n", r.Old, release.KeyID(r.New))
	return nil
}
