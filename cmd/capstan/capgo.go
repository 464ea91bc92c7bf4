package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/capgo/capgokey"
	"github.com/capstan-ota/capstan/edge"
	"github.com/spf13/cobra"
)

// capgoEdgeFlags are the edge's flags for @capgo/capacitor-updater devices.
type capgoEdgeFlags struct {
	publicURL, defaultChannel string
	rate                      int
	disabled                  bool
}

func (f *capgoEdgeFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.publicURL, "capgo-public-url", "", "base URL Capgo devices reach this edge at, for the URLs in answers (default: from the request's Host and X-Forwarded-*)")
	cmd.Flags().StringVar(&f.defaultChannel, "capgo-default-channel", "production", "channel Capgo devices follow when the app's Capgo settings name none")
	cmd.Flags().IntVar(&f.rate, "capgo-rate", 50, "Capgo requests per second per client address before 429 (negative: no limit)")
	cmd.Flags().BoolVar(&f.disabled, "no-capgo", false, "turn off the Capgo endpoints (/updates, /stats, /channel_self)")
}

// apply sets the edge's Capgo configuration from the flags.
func (f *capgoEdgeFlags) apply(cfg *edge.Config) {
	cfg.Capgo.PublicURL = f.publicURL
	cfg.Capgo.DefaultChannel = f.defaultChannel
	cfg.Capgo.RequestsPerSecond = f.rate
	cfg.Capgo.Disabled = f.disabled
}

// withCapgoKeyGen adds --capgo to `capstan keys gen`: an RSA-2048 pair in
// the plugin's PKCS#1 PEM formats instead of an ed25519 release key.
func withCapgoKeyGen(gen *cobra.Command) {
	var enabled bool
	gen.Flags().BoolVar(&enabled, "capgo", false, "make an RSA key pair for @capgo/capacitor-updater bundle encryption (FILE private, FILE.pub public, PKCS#1 PEM)")
	next := gen.RunE
	gen.Example += "\n  capstan keys gen --capgo --out .capgo_key_v2   # FILE.pub goes into capacitor.config as CapacitorUpdater.publicKey"
	gen.RunE = func(cmd *cobra.Command, args []string) error {
		if !enabled {
			return next(cmd, args)
		}
		out, _ := cmd.Flags().GetString("out")
		if _, err := os.Stat(out); err == nil {
			return fmt.Errorf("%s exists: refusing to overwrite a key", out)
		}
		priv, pub, err := capgokey.GenerateKey()
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(out, priv, 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(out+".pub", pub, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (private: keep it in CI secrets, pass it to capstan upload --capgo-key) and %s.pub (set it as plugins.CapacitorUpdater.publicKey in capacitor.config); key_id %s\n",
			out, out, capgo.KeyIDFromPEM(string(pub)))
		return nil
	}
}

// capgoEncrypt encrypts a bundle zip with a Capgo private key (a file, or
// the PEM itself), writing the ciphertext to a temp file. The caller
// removes the returned file.
func capgoEncrypt(zipPath, keyValue string) (*capgo.Encrypted, *os.File, error) {
	pemBytes := []byte(keyValue)
	if !strings.Contains(keyValue, "-----BEGIN") {
		b, err := os.ReadFile(keyValue)
		if err != nil {
			return nil, nil, fmt.Errorf("capgo key: %w", err)
		}
		pemBytes = b
	}
	priv, err := capgokey.ParsePrivateKey(pemBytes)
	if err != nil {
		return nil, nil, err
	}
	in, err := os.Open(zipPath)
	if err != nil {
		return nil, nil, err
	}
	defer in.Close()
	out, err := os.CreateTemp("", "capstan-capgo-*.zip.enc")
	if err != nil {
		return nil, nil, err
	}
	enc, err := capgokey.EncryptBundle(priv, in, out)
	if err == nil {
		_, err = out.Seek(0, 0)
	}
	if err != nil {
		out.Close()
		os.Remove(out.Name())
		return nil, nil, err
	}
	return enc, out, nil
}

// newChannelCapgoCmd is `capstan channel capgo`: the Capgo settings of a
// channel (which devices it accepts, which version jumps it blocks,
// whether devices may choose it) and the app's default channel.
func newChannelCapgoCmd() *cobra.Command {
	var app, channel, disable string
	var makeDefault, asJSON bool
	toggles := []struct {
		name, help string
		field      func(*capgo.ChannelFlags) *bool
		inverted   bool // the flag enables what the field disables
	}{
		{"ios", "iOS devices", func(f *capgo.ChannelFlags) *bool { return &f.NoIOS }, true},
		{"android", "Android devices", func(f *capgo.ChannelFlags) *bool { return &f.NoAndroid }, true},
		{"electron", "Electron apps", func(f *capgo.ChannelFlags) *bool { return &f.NoElectron }, true},
		{"prod", "store builds (is_prod)", func(f *capgo.ChannelFlags) *bool { return &f.NoProd }, true},
		{"dev", "debug, TestFlight and ad-hoc builds", func(f *capgo.ChannelFlags) *bool { return &f.NoDev }, true},
		{"emulator", "emulators and simulators", func(f *capgo.ChannelFlags) *bool { return &f.NoEmulator }, true},
		{"device", "physical devices", func(f *capgo.ChannelFlags) *bool { return &f.NoDevice }, true},
		{"self-assign", "devices choosing this channel (setChannel)", func(f *capgo.ChannelFlags) *bool { return &f.SelfAssign }, false},
		{"downgrade", "releases older than the native app version", func(f *capgo.ChannelFlags) *bool { return &f.AllowUnderNative }, false},
	}
	cmd := &cobra.Command{
		Use:   "capgo",
		Short: "Capgo settings of a channel, for @capgo/capacitor-updater devices",
		Long: `Set which Capgo devices a channel accepts and which updates it refuses, as Capgo's
"channel set" does. Flags left out keep their value; with only --app, print the settings.
Edges pick changes up within 30 seconds.`,
		Example: `  capstan channel capgo --app com.example.app --channel production --default --no-emulator --disable-auto-update major
  capstan channel capgo --app com.example.app --channel beta --self-assign --no-prod
  capstan channel capgo --app com.example.app`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := func() error {
				if disable != "" {
					if err := (&capgo.ChannelFlags{DisableAutoUpdate: disable}).Validate(); err != nil {
						return usageError("--disable-auto-update %q: want major, minor, patch, metadata or none", disable)
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				c := apiClient()
				cfg, err := c.CapgoConfig(ctx, app)
				if err != nil {
					return err
				}
				changed := false
				if channel != "" {
					f := cfg.Flags(channel)
					for _, tg := range toggles {
						for _, neg := range []bool{false, true} {
							name := tg.name
							if neg {
								name = "no-" + name
							}
							if cmd.Flags().Changed(name) {
								on, _ := cmd.Flags().GetBool(name)
								*tg.field(&f) = on != neg != tg.inverted
								changed = true
							}
						}
					}
					if cmd.Flags().Changed("disable-auto-update") {
						f.DisableAutoUpdate = disable
						changed = true
					}
					if cfg.Channels == nil {
						cfg.Channels = map[string]capgo.ChannelFlags{}
					}
					if f == (capgo.ChannelFlags{}) {
						delete(cfg.Channels, channel)
					} else {
						cfg.Channels[channel] = f
					}
					if makeDefault {
						cfg.DefaultChannel, changed = channel, true
					}
				}
				if changed {
					if cfg, err = c.SetCapgoConfig(ctx, app, cfg); err != nil {
						return err
					}
				}
				return output(cmd, asJSON, cfg, describeCapgo(app, cfg))
			}()
			if err != nil {
				return fail(cmd, asJSON, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app", "", "app ID (required)")
	cmd.MarkFlagRequired("app")
	cmd.Flags().StringVar(&channel, "channel", "", "channel name")
	cmd.Flags().BoolVar(&makeDefault, "default", false, "make this the channel Capgo devices follow by default")
	cmd.Flags().StringVar(&disable, "disable-auto-update", "", "refuse version jumps against the native version: major (default), minor, patch, metadata (min native version) or none")
	for _, tg := range toggles {
		cmd.Flags().Bool(tg.name, false, "allow "+tg.help)
		cmd.Flags().Bool("no-"+tg.name, false, "refuse "+tg.help)
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func describeCapgo(app string, cfg *capgo.AppConfig) string {
	var sb strings.Builder
	def := cfg.DefaultChannel
	if def == "" {
		def = "(the edge's default, production unless --capgo-default-channel says otherwise)"
	}
	fmt.Fprintf(&sb, "%s: Capgo devices follow %s by default", app, def)
	for name, f := range cfg.Channels {
		var parts []string
		for _, p := range []struct {
			on   bool
			text string
		}{{f.NoIOS, "no iOS"}, {f.NoAndroid, "no Android"}, {f.NoElectron, "no Electron"}, {f.NoProd, "no prod builds"}, {f.NoDev, "no dev builds"},
			{f.NoEmulator, "no emulators"}, {f.NoDevice, "no physical devices"}, {f.SelfAssign, "devices may choose it"}, {f.AllowUnderNative, "downgrades under native allowed"}} {
			if p.on {
				parts = append(parts, p.text)
			}
		}
		mode := f.DisableAutoUpdate
		if mode == "" {
			mode = capgo.AutoUpdateMajor
		}
		if mode == capgo.AutoUpdateNone {
			parts = append(parts, "allows every version jump")
		} else {
			parts = append(parts, "blocks "+mode+" jumps")
		}
		fmt.Fprintf(&sb, "\n  %s: %s", name, strings.Join(parts, ", "))
	}
	return sb.String()
}
