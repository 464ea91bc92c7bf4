package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/release"
	"github.com/spf13/cobra"
)

// deviceOptions are the flags of `capstan device`.
type deviceOptions struct {
	edges, app, channel, dir, deviceID, nativeVersion, builtin, decryptKey string
	keyFiles                                                               []string
	check, confirm, json, noRank, insecure                                 bool
	timeout, confirmTimeout                                                time.Duration
}

func newDeviceCmd() *cobra.Command {
	var o deviceOptions
	cmd := &cobra.Command{
		Use:   "device",
		Short: "Run the reference device: check, download a patch, verify, install atomically",
		Example: `  capstan device --edge http://127.0.0.1:7080 --app com.example.app --channel production --dir ./phone
  capstan device --edge http://edge-1:7080,http://edge-2:7080 --app com.example.app --channel production --dir ./phone --public-key keys.pem --json`,
		Args: cobra.NoArgs,
		RunE: jsonErrors(&o.json, o.run),
	}
	f := cmd.Flags()
	f.StringVar(&o.edges, "edge", "http://127.0.0.1:7080", "edge URLs to try, in order, comma-separated")
	f.StringVar(&o.app, "app", "", "app ID (required)")
	f.StringVar(&o.channel, "channel", "", "channel to follow (default: the app's default channel); any other must allow device selection")
	f.StringVar(&o.dir, "dir", "", "device folder: the bundle is installed in DIR/current (required)")
	f.StringVar(&o.deviceID, "device-id", "", "device id (default: generated once and kept in DIR)")
	f.StringArrayVar(&o.keyFiles, "public-key", nil, "trusted public keys (PEM; release and origin keys; repeatable); pinned in DIR on the first run")
	f.BoolVar(&o.insecure, "insecure-no-verify", false, "install without checking any signature when no key is trusted (testing only; said in the output)")
	f.StringVar(&o.nativeVersion, "native-version", "", "version of the native app shell")
	f.BoolVar(&o.noRank, "no-rank", false, "try the --edge URLs in order; do not look for the nearest edge of the fleet")
	f.StringVar(&o.decryptKey, "decrypt-key", "", "`FILE` holding the app's X25519 private key (from capstan keys gen --encryption), for encrypted releases")
	f.BoolVar(&o.check, "check", false, "only ask whether an update is available; install nothing")
	f.BoolVar(&o.confirm, "confirm", false, "mark the installed release healthy (the app started well) and report it; check nothing")
	f.DurationVar(&o.confirmTimeout, "confirm-timeout", device.DefaultConfirmTimeout, "revert a new release not confirmed within this long after install, on the next run")
	f.StringVar(&o.builtin, "builtin", "", "the bundle shipped inside the app: DIR/current starts as a copy, and going back to builtin restores it (without it, builtin is an empty folder)")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up after this long")
	f.BoolVar(&o.json, "json", false, "print one JSON object")
	cmd.MarkFlagRequired("app")
	cmd.MarkFlagRequired("dir")
	return cmd
}

func (o *deviceOptions) run(cmd *cobra.Command, _ []string) error {
	cfg := device.Config{
		Dir: o.dir, Edges: splitList(o.edges), App: o.app, Channel: o.channel,
		DeviceID: o.deviceID, NativeVersion: o.nativeVersion,
		Ranking:    device.RankConfig{Off: o.noRank},
		BuiltinDir: o.builtin, ConfirmTimeout: o.confirmTimeout,
	}
	if err := readKeyFiles(&cfg.Keys, o.keyFiles); err != nil {
		return err
	}
	if o.decryptKey != "" {
		k, err := release.LoadBoxPrivateKey(o.decryptKey)
		if err != nil {
			return fmt.Errorf("--decrypt-key: %w", err)
		}
		cfg.DecryptKey = k
	}
	d, err := device.New(cfg)
	if errors.Is(err, device.ErrOtherApp) {
		// The wrong --dir: a usage mistake.
		return &exitError{code: 2, err: err}
	}
	if err != nil {
		return err
	}
	// A device that trusts no key installs whatever an edge sends: refuse,
	// unless asked for in so many words (issue 16, finding 6).
	unverified := len(d.TrustedKeys()) == 0
	if unverified && !o.insecure && !o.confirm {
		return usageError("no trusted keys: give --public-key with the release and origin public keys the app ships (they are pinned in --dir), or --insecure-no-verify to install without checking signatures (testing only)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	var res device.Result
	switch {
	case o.confirm:
		res = d.Confirm(ctx)
	case o.check:
		res = d.Check(ctx)
	default:
		res = d.Update(ctx)
	}
	res.InsecureNoVerify = unverified
	human := fmt.Sprintf("%s: %s → %s", res.Status, orBuiltin(res.From), orBuiltin(res.To))
	if unverified {
		human += " [--insecure-no-verify: no signature was checked]"
	}
	if res.Mode != "" {
		human += fmt.Sprintf(" (%s, %d bytes, %d ms)", res.Mode, res.Bytes, res.MS)
	}
	if res.Reason != "" {
		human += " — " + res.Reason
	}
	if res.Reverted != "" {
		human += fmt.Sprintf(" (reverted %s: not confirmed within %s; it will not be installed again)", res.Reverted, o.confirmTimeout)
	}
	if err := output(cmd, o.json, res, human); err != nil {
		return reported{err}
	}
	if res.Status == device.StatusFailed {
		return reported{fmt.Errorf("device update failed: %s", res.Error)}
	}
	return nil
}

func orBuiltin(v string) string {
	if v == "" {
		return "builtin"
	}
	return v
}

// readKeyFiles appends the public keys of each PEM file to keys.
func readKeyFiles(keys *[]release.PublicKey, files []string) error {
	for _, kf := range files {
		b, err := os.ReadFile(kf)
		if err != nil {
			return fmt.Errorf("--public-key: %w", err)
		}
		k, err := release.ParsePublicKeys(b)
		if err != nil {
			return fmt.Errorf("--public-key %s: %w", kf, err)
		}
		*keys = append(*keys, k...)
	}
	return nil
}
