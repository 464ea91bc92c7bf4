package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/internal/bundle"
	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// cli holds the settings shared by the client commands of this run.
var cli globals

func apiClient() *client.Client {
	return &client.Client{
		Server: pick(cli.server, "CAPSTAN_SERVER", cli.file.Server, "http://127.0.0.1:7070"),
		APIKey: pick(cli.apiKey, "CAPSTAN_API_KEY", cli.file.APIKey, ""),
	}
}

// apiKeySource says where the API key of this run came from, for error
// messages: "" when no key was given.
func apiKeySource() string {
	switch {
	case cli.apiKey != "":
		return "--api-key"
	case os.Getenv("CAPSTAN_API_KEY") != "":
		return "$CAPSTAN_API_KEY"
	case cli.file.APIKey != "":
		return "the config file"
	}
	return ""
}

func newUploadCmd() *cobra.Command {
	var app, version, channel, rollout, signKey, minNative, packageJSON, capgoKey string
	var asJSON, versionExistsOK, newChannel bool
	cmd := &cobra.Command{
		Use:   "upload PATH",
		Short: "Upload a web bundle (a zip or a folder) as a new release",
		Example: `  capstan upload --app com.example.app --version 1.4.2 --channel production dist/
  capstan upload --app com.example.app --version 1.4.3 --channel beta --rollout 10 --sign-key release.key www.zip`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := func() error {
				if version == "" {
					v, err := versionFromPackageJSON(packageJSON)
					if err != nil {
						return usageError("no --version given, and %w", err)
					}
					version = v
				}
				if err := release.ValidateApp(app); err != nil {
					return usageError("--app: %v", err)
				}
				if _, err := release.ParseVersion(version); err != nil {
					return usageError("--version: %v", err)
				}
				if minNative != "" {
					if _, err := release.ParseVersion(minNative); err != nil {
						return usageError("--min-native: %v", err)
					}
				}
				if rollout != "" {
					if v, err := strconv.ParseFloat(strings.TrimSuffix(rollout, "%"), 64); err != nil || v < 0 || v > 100 {
						return usageError("--rollout %q must be a percentage between 0 and 100", rollout)
					}
				}
				if _, err := os.Stat(args[0]); err != nil {
					return usageError("%v", err)
				}
				zipPath, cleanup, err := bundleZip(args[0])
				if err != nil {
					return err
				}
				defer cleanup()
				var env *release.Envelope
				if signKey == "" {
					signKey = pick("", "CAPSTAN_SIGNING_KEY", cli.file.SigningKey, "")
				}
				if signKey != "" {
					env, err = signBundle(zipPath, signKey, app, version, minNative)
					if err != nil {
						return err
					}
				}
				if capgoKey == "" {
					capgoKey = os.Getenv("CAPSTAN_CAPGO_KEY")
				}
				up := client.Upload{App: app, Version: version, MinNative: minNative, Channel: channel, Rollout: rollout, Envelope: env, NewChannel: newChannel}
				if capgoKey != "" {
					enc, encZip, err := capgoEncrypt(zipPath, capgoKey)
					if err != nil {
						return err
					}
					defer os.Remove(encZip.Name())
					defer encZip.Close()
					up.Capgo, up.CapgoZip = enc, encZip
				}
				f, err := os.Open(zipPath)
				if err != nil {
					return err
				}
				defer f.Close()
				fi, _ := f.Stat()
				var body io.Reader = f
				if !asJSON && term.IsTerminal(int(os.Stderr.Fd())) {
					bar := progressbar.DefaultBytes(fi.Size(), "uploading")
					bar.ChangeMax64(fi.Size())
					body = &progressFile{File: f, bar: bar}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
				defer cancel()
				warnings := []string{} // "warnings":[] in --json, never null
				up.Bundle, up.Warnings = body, &warnings
				rec, err := apiClient().UploadRelease(ctx, up)
				if err != nil {
					return err
				}
				for _, w := range warnings {
					fmt.Fprintln(cmd.ErrOrStderr(), "capstan: warning: "+w)
				}
				// The progress bar counts the zip sent; say both sizes so the
				// summary does not seem to contradict it.
				human := fmt.Sprintf("uploaded %s %s: %d files, %s unpacked (%s zip sent), release %s",
					rec.App, rec.Version, rec.Files, humanize.IBytes(uint64(rec.Size)), humanize.IBytes(uint64(fi.Size())), rec.ID)
				if channel != "" {
					human += fmt.Sprintf("\nchannel %s now serves %s", channel, rec.Version)
				}
				if env != nil {
					human += "\nsigned with key " + env.Signatures[0].KeyID
				}
				if up.Capgo != nil {
					human += "\nencrypted for Capgo devices with key_id " + up.Capgo.KeyID
				}
				return output(cmd, asJSON, map[string]any{
					"app": rec.App, "version": rec.Version, "id": rec.ID, "files": rec.Files, "size": rec.Size, "sent": fi.Size(),
					"channel": channel, "signed": env != nil, "shipped": true, "warnings": warnings, "capgo_encrypted": up.Capgo != nil,
				}, human)
			}()
			if err != nil && versionExistsOK && client.IsConflict(err) {
				fmt.Fprintf(cmd.ErrOrStderr(), "capstan: WARNING: version %s of %s already exists: NOTHING WAS SHIPPED (--version-exists-ok)\n", version, app)
				return output(cmd, asJSON, map[string]any{"app": app, "version": version, "shipped": false, "reason": "version exists"},
					"nothing shipped: version "+version+" already exists")
			}
			if err != nil {
				return fail(cmd, asJSON, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app", "", "app ID, e.g. com.example.app (required)")
	cmd.MarkFlagRequired("app")
	cmd.Flags().StringVar(&version, "version", "", "semver version of this release, unique per app (default: \"version\" of --package-json)")
	cmd.Flags().StringVar(&packageJSON, "package-json", "package.json", "package.json to take the version from when --version is not given")
	cmd.Flags().BoolVar(&versionExistsOK, "version-exists-ok", false, "exit 0 (shipping nothing, and saying so) when the version already exists")
	cmd.Flags().StringVar(&channel, "channel", "", "point this channel at the new release")
	cmd.Flags().BoolVar(&newChannel, "new-channel", false, "--channel may be a channel the app does not have yet (an app's first upload needs no flag; a mistyped name is refused otherwise)")
	cmd.Flags().StringVar(&rollout, "rollout", "", "percentage of devices offered the release on --channel (default 100)")
	cmd.Flags().StringVar(&signKey, "sign-key", "", "ed25519 release key file (or CAPSTAN_SIGNING_KEY: a path or the PEM itself)")
	cmd.Flags().StringVar(&minNative, "min-native", "", "lowest native app version that can run this bundle")
	cmd.Flags().StringVar(&capgoKey, "capgo-key", "", "Capgo RSA private key (capstan keys gen --capgo, or .capgo_key_v2 from npx @capgo/cli key create; or CAPSTAN_CAPGO_KEY): also upload a copy encrypted for @capgo/capacitor-updater")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

// versionFromPackageJSON reads the "version" field of a package.json, the
// usual home of a web app's version.
func versionFromPackageJSON(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %s for the version: %w", path, err)
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		return "", fmt.Errorf("%s is not valid JSON: %w", path, err)
	}
	if pkg.Version == "" {
		return "", fmt.Errorf("%s has no \"version\"", path)
	}
	return pkg.Version, nil
}

// bundleZip returns a zip path for PATH: the zip itself, or a
// deterministic zip of a folder in a temp file.
func bundleZip(path string) (string, func(), error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", nil, err
	}
	if !fi.IsDir() {
		return path, func() {}, nil
	}
	f, err := os.CreateTemp("", "capstan-bundle-*.zip")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.Remove(f.Name()) }
	if err := bundle.ZipDir(path, f); err != nil {
		f.Close()
		cleanup()
		return "", nil, err
	}
	if err := f.Close(); err != nil {
		cleanup()
		return "", nil, err
	}
	return f.Name(), cleanup, nil
}

// signBundle computes the release document of a zip locally (app,
// version, minimum native version and the hash of the bundle's file list)
// and signs it, so the signing key never leaves the CI machine.
func signBundle(zipPath, keyValue, app, version, minNative string) (*release.Envelope, error) {
	key, err := release.LoadSigningKey(keyValue)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(zipPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	entries, err := bundle.Read(f, fi.Size(), bundle.Limits{})
	if err != nil {
		return nil, err
	}
	files, err := bundle.Describe(entries)
	if err != nil {
		return nil, err
	}
	m := &release.Manifest{Type: release.TypeRelease, App: app, Version: version, MinNative: minNative, Files: files}
	b, err := m.EncodeDoc()
	if err != nil {
		return nil, err
	}
	return release.Seal(b, key), nil
}

func newChannelCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "channel", Short: "Manage channels"}
	var app, channel, version, rollout string
	var pause, resume, asJSON bool
	var fl channelFlags
	set := &cobra.Command{
		Use:   "set",
		Short: "Point a channel at a release, with a progressive rollout",
		Example: `  capstan channel set --app com.example.app --channel production --version 1.4.2
  capstan channel set --app com.example.app --channel production --version 1.4.3 --rollout 30
  capstan channel set --app com.example.app --channel production --pause     # or --resume, --finish
  capstan channel set --app com.example.app --channel beta --device-select --block-major`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := func() error {
				if version != "" {
					if _, err := release.ParseVersion(version); err != nil {
						return usageError("--version: %v", err)
					}
				}
				var pct *float64
				if rollout != "" {
					v, err := strconv.ParseFloat(rollout, 64)
					if err != nil || v < 0 || v > 100 {
						return usageError("--rollout %q must be a percentage between 0 and 100", rollout)
					}
					pct = &v
				}
				var paused *bool
				if pause && resume {
					return usageError("--pause and --resume contradict each other")
				}
				if pause || resume {
					p := pause
					paused = &p
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				cv, err := fl.apply(ctx, cmd, app, channel, version, pct, paused)
				if err != nil {
					return err
				}
				human := describeChannel(&cv.Channel)
				if cv.Unchanged {
					human += "\nunchanged: the channel already says that; no new record was signed"
				}
				return output(cmd, asJSON, cv, human)
			}()
			if err != nil {
				return fail(cmd, asJSON, err)
			}
			return nil
		},
	}
	set.Flags().StringVar(&app, "app", "", "app ID (required)")
	set.Flags().StringVar(&channel, "channel", "", "channel name (required)")
	set.MarkFlagRequired("app")
	set.MarkFlagRequired("channel")
	set.Flags().StringVar(&version, "version", "", "release version to serve")
	set.Flags().StringVar(&rollout, "rollout", "", "percentage of devices offered the release")
	set.Flags().BoolVar(&pause, "pause", false, "pause the rollout: no new devices enter it")
	set.Flags().BoolVar(&resume, "resume", false, "resume a paused rollout")
	set.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	fl.register(set)
	cmd.AddCommand(set, newChannelPromoteCmd(), newChannelListCmd(), newChannelCapgoCmd())
	return cmd
}

func describeChannel(c *release.Channel) string {
	s := fmt.Sprintf("%s/%s serves %s", c.App, c.Channel, c.Release.Version)
	if c.Release.ID.IsZero() {
		s = fmt.Sprintf("%s/%s serves the bundle built into the app", c.App, c.Channel)
	}
	if c.RolloutBPS < release.FullRollout {
		s += fmt.Sprintf(" to %.2f%% of devices", float64(c.RolloutBPS)/100)
		if c.Stable != nil {
			s += fmt.Sprintf(" (others stay on %s)", c.Stable.Version)
		} else {
			s += " (others are offered nothing new)"
		}
	}
	if c.Paused {
		s += " [rollout paused]"
	}
	s += describeFlags(c)
	return s + fmt.Sprintf(" (record %d, expires %s)", c.Seq, c.Expires.Format(time.RFC3339))
}

func newRollbackCmd() *cobra.Command {
	var app, channel, to string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Put the previous (or named) release back on a channel",
		Example: `  capstan rollback --app com.example.app --channel production
  capstan rollback --app com.example.app --channel production --to 1.4.1
  capstan rollback --app com.example.app --channel production --to builtin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := func() error {
				if to != "" && to != wire.Builtin {
					if _, err := release.ParseVersion(to); err != nil {
						return usageError("--to: %v (or \"builtin\")", err)
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				cv, err := apiClient().Rollback(ctx, app, channel, to)
				if err != nil {
					return err
				}
				return output(cmd, asJSON, cv, "rolled back: "+describeChannel(&cv.Channel))
			}()
			if err != nil {
				return fail(cmd, asJSON, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app", "", "app ID (required)")
	cmd.Flags().StringVar(&channel, "channel", "", "channel name (required)")
	cmd.Flags().StringVar(&to, "to", "", "version to put back, or \"builtin\" (default: the release served before)")
	cmd.MarkFlagRequired("app")
	cmd.MarkFlagRequired("channel")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Signing keys, encryption keys, key rotation and API keys"}
	var out string
	var encryption, originRole bool
	gen := &cobra.Command{
		Use:   "gen",
		Short: "Make an ed25519 release-signing key pair: FILE (private) and FILE.pub",
		Example: `  capstan keys gen --out release.key   # keep release.key in CI secrets, ship release.key.pub in the app
  capstan keys gen --origin --out origin.key   # for capstan origin --store … --blobs … --origin-key origin.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := os.Stat(out); err == nil {
				return fmt.Errorf("%s exists: refusing to overwrite a key", out)
			}
			if encryption {
				return genBoxKey(cmd, out)
			}
			role, what := release.RoleRelease, "private: keep it in CI secrets) and %s.pub (ship it with the app)"
			if originRole {
				role, what = release.RoleOrigin, "private: give it to every origin of a shared store, --origin-key) and %s.pub (devices and edges trust it)"
			}
			k, err := release.GenerateKey()
			if err != nil {
				return err
			}
			priv, err := release.EncodePrivateKey(k)
			if err != nil {
				return err
			}
			pub, err := release.EncodePublicKey(k.Public().(ed25519PublicKey), role)
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
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s ("+what+"); key id %s\n", out, out, release.KeyID(k.Public().(ed25519PublicKey)))
			return nil
		},
	}
	gen.Flags().StringVar(&out, "out", "", "private key file to write (required)")
	gen.MarkFlagRequired("out")
	gen.Flags().BoolVar(&originRole, "origin", false, "make the channel-signing key of origins that share a store (capstan origin --origin-key)")
	gen.Flags().BoolVar(&encryption, "encryption", false, "make an X25519 encryption key pair instead (the app ships FILE, the origin gets FILE.pub)")
	withCapgoKeyGen(gen)
	cmd.AddCommand(gen)
	addKeyAPICmds(cmd)
	return cmd
}

// progressFile shows an upload's progress and stays seekable, so an upload
// retried on another origin can start again.
type progressFile struct {
	*os.File
	bar *progressbar.ProgressBar
}

func (p *progressFile) Read(b []byte) (int, error) {
	n, err := p.File.Read(b)
	p.bar.Add(n)
	return n, err
}

func (p *progressFile) Seek(off int64, whence int) (int64, error) {
	p.bar.Reset()
	return p.File.Seek(off, whence)
}
