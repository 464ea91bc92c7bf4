package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/capstan-ota/capstan/wire"
	"github.com/spf13/cobra"
)

// `capstan app`: an app's trust settings (release keys, required signing,
// encryption).

func newAppCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "app", Short: "App trust settings: release keys, required signing, encryption"}
	cmd.AddCommand(newAppSetCmd(), newAppShowCmd())
	return cmd
}

// appSetOptions are the flags of `capstan app set`.
type appSetOptions struct {
	app, encKey                         string
	releaseKeys, removeKeys             []string
	require, noRequire, noEncrypt, json bool
}

func newAppSetCmd() *cobra.Command {
	var o appSetOptions
	cmd := &cobra.Command{
		Use:   "set",
		Short: "Register release keys, require signed uploads, turn on encryption (admin)",
		Example: `  capstan app set --app com.example.app --release-key release.key.pub --require-signing
  capstan app set --app com.example.app --encrypt-key app-box.key.pub`,
		Args: cobra.NoArgs,
		RunE: jsonErrors(&o.json, o.run),
	}
	f := cmd.Flags()
	f.StringVar(&o.app, "app", "", "app ID (required)")
	cmd.MarkFlagRequired("app")
	f.StringArrayVar(&o.releaseKeys, "release-key", nil, "`FILE` holding a release public key (from capstan keys gen) to accept (repeatable)")
	f.StringArrayVar(&o.removeKeys, "remove-release-key", nil, "key ID to stop accepting (repeatable)")
	f.BoolVar(&o.require, "require-signing", false, "refuse uploads not signed by a registered release key (implied once a release key is registered)")
	f.BoolVar(&o.noRequire, "no-require-signing", false, "accept unsigned uploads although release keys are registered (devices that verify refuse them)")
	f.StringVar(&o.encKey, "encrypt-key", "", "`FILE` holding the app's X25519 public key (from capstan keys gen --encryption): encrypt new releases")
	f.BoolVar(&o.noEncrypt, "no-encrypt", false, "stop encrypting new releases")
	f.BoolVar(&o.json, "json", false, "print one JSON object")
	return cmd
}

func (o *appSetOptions) run(cmd *cobra.Command, _ []string) error {
	var in wire.AppSettings
	for _, f := range o.releaseKeys {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("--release-key: %w", err)
		}
		in.AddReleaseKeys = append(in.AddReleaseKeys, string(b))
	}
	in.RemoveReleaseKeys = o.removeKeys
	if o.require && o.noRequire {
		return usageError("--require-signing and --no-require-signing contradict each other")
	}
	if o.require || o.noRequire {
		v := o.require
		in.RequireSigning = &v
	}
	if o.encKey != "" {
		b, err := os.ReadFile(o.encKey)
		if err != nil {
			return fmt.Errorf("--encrypt-key: %w", err)
		}
		s := string(b)
		in.EncryptKey = &s
	}
	if o.noEncrypt {
		s := ""
		in.EncryptKey = &s
	}
	ctx, cancel := apiContext()
	defer cancel()
	out, err := apiClient().SetApp(ctx, o.app, in)
	if err != nil {
		return err
	}
	return output(cmd, o.json, out, describeApp(out))
}

// appShowOptions are the flags of `capstan app show`.
type appShowOptions struct {
	app  string
	json bool
}

func newAppShowCmd() *cobra.Command {
	var o appShowOptions
	cmd := &cobra.Command{
		Use:     "show",
		Short:   "Show an app's trust settings",
		Example: "  capstan app show --app com.example.app",
		Args:    cobra.NoArgs,
		RunE:    jsonErrors(&o.json, o.run),
	}
	cmd.Flags().StringVar(&o.app, "app", "", "app ID (required)")
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON object")
	cmd.MarkFlagRequired("app")
	return cmd
}

func (o *appShowOptions) run(cmd *cobra.Command, _ []string) error {
	ctx, cancel := apiContext()
	defer cancel()
	out, err := apiClient().App(ctx, o.app)
	if err != nil {
		return err
	}
	return output(cmd, o.json, out, describeApp(out))
}

func describeApp(a *wire.AppView) string {
	return fmt.Sprintf("app %s: release keys [%s], signing required: %v, encrypted: %v", a.ID, strings.Join(a.ReleaseKeyIDs, ", "), a.SigningRequired, a.Encrypted)
}
