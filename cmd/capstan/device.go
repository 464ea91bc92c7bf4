package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/release"
	"github.com/spf13/cobra"
)

type ed25519PublicKey = ed25519.PublicKey

func newDeviceCmd() *cobra.Command {
	var edges, app, channel, dir, deviceID, nativeVersion, builtin, decryptKey string
	var keyFiles []string
	var check, confirm, asJSON, noRank bool
	var timeout, confirmTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "device",
		Short: "Run the reference device: check, download a patch, verify, install atomically",
		Example: `  capstan device --edge http://127.0.0.1:7080 --app com.example.app --channel production --dir ./phone
  capstan device --edge http://edge-1:7080,http://edge-2:7080 --app com.example.app --channel production --dir ./phone --public-key keys.pem --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := device.Config{
				Dir: dir, Edges: splitList(edges), App: app, Channel: channel,
				DeviceID: deviceID, NativeVersion: nativeVersion,
				Ranking:    device.RankConfig{Off: noRank},
				BuiltinDir: builtin, ConfirmTimeout: confirmTimeout,
			}
			for _, kf := range keyFiles {
				b, err := os.ReadFile(kf)
				if err != nil {
					return fail(cmd, asJSON, fmt.Errorf("--public-key: %w", err))
				}
				keys, err := release.ParsePublicKeys(b)
				if err != nil {
					return fail(cmd, asJSON, fmt.Errorf("--public-key %s: %w", kf, err))
				}
				cfg.Keys = append(cfg.Keys, keys...)
			}
			if decryptKey != "" {
				k, err := release.LoadBoxPrivateKey(decryptKey)
				if err != nil {
					return fail(cmd, asJSON, fmt.Errorf("--decrypt-key: %w", err))
				}
				cfg.DecryptKey = k
			}
			d, err := device.New(cfg)
			if errors.Is(err, device.ErrOtherApp) {
				// The wrong --dir: a usage mistake.
				return fail(cmd, asJSON, &exitError{code: 2, err: err})
			}
			if err != nil {
				return fail(cmd, asJSON, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			var res device.Result
			switch {
			case confirm:
				res = d.Confirm(ctx)
			case check:
				res = d.Check(ctx)
			default:
				res = d.Update(ctx)
			}
			human := fmt.Sprintf("%s: %s → %s", res.Status, orBuiltin(res.From), orBuiltin(res.To))
			if res.Mode != "" {
				human += fmt.Sprintf(" (%s, %d bytes, %d ms)", res.Mode, res.Bytes, res.MS)
			}
			if res.Reason != "" {
				human += " — " + res.Reason
			}
			if res.Reverted != "" {
				human += fmt.Sprintf(" (reverted %s: not confirmed within %s; it will not be installed again)", res.Reverted, confirmTimeout)
			}
			if err := output(cmd, asJSON, res, human); err != nil {
				return err
			}
			if res.Status == device.StatusFailed {
				return fmt.Errorf("device update failed: %s", res.Error)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&edges, "edge", "http://127.0.0.1:7080", "edge URLs to try, in order, comma-separated")
	cmd.Flags().StringVar(&app, "app", "", "app ID (required)")
	cmd.Flags().StringVar(&channel, "channel", "", "channel to follow (default: the app's default channel); any other must allow device selection")
	cmd.Flags().StringVar(&dir, "dir", "", "device folder: the bundle is installed in DIR/current (required)")
	cmd.Flags().StringVar(&deviceID, "device-id", "", "device id (default: generated once and kept in DIR)")
	cmd.Flags().StringArrayVar(&keyFiles, "public-key", nil, "trusted public keys (PEM; release and origin keys; repeatable)")
	cmd.Flags().StringVar(&nativeVersion, "native-version", "", "version of the native app shell")
	cmd.Flags().BoolVar(&noRank, "no-rank", false, "try the --edge URLs in order; do not look for the nearest edge of the fleet")
	cmd.Flags().StringVar(&decryptKey, "decrypt-key", "", "`FILE` holding the app's X25519 private key (from capstan keys gen --encryption), for encrypted releases")
	cmd.Flags().BoolVar(&check, "check", false, "only ask whether an update is available; install nothing")
	cmd.Flags().BoolVar(&confirm, "confirm", false, "mark the installed release healthy (the app started well) and report it; check nothing")
	cmd.Flags().DurationVar(&confirmTimeout, "confirm-timeout", device.DefaultConfirmTimeout, "revert a new release not confirmed within this long after install, on the next run")
	cmd.Flags().StringVar(&builtin, "builtin", "", "the bundle shipped inside the app: DIR/current starts as a copy, and going back to builtin restores it (without it, builtin is an empty folder)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.MarkFlagRequired("app")
	cmd.MarkFlagRequired("dir")
	return cmd
}

func orBuiltin(v string) string {
	if v == "" {
		return "builtin"
	}
	return v
}
