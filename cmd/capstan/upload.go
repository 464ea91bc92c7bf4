package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/capgo/capgokey"
	"github.com/capstan-ota/capstan/internal/bundle"
	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// uploadOptions are the flags of `capstan upload`.
type uploadOptions struct {
	app, version, channel, rollout, signKey, minNative, packageJSON, capgoKey string
	json, versionExistsOK, newChannel                                         bool
}

func newUploadCmd() *cobra.Command {
	var o uploadOptions
	cmd := &cobra.Command{
		Use:   "upload PATH",
		Short: "Upload a web bundle (a zip or a folder) as a new release",
		Example: `  capstan upload --app com.example.app --version 1.4.2 --channel production dist/
  capstan upload --app com.example.app --version 1.4.3 --channel beta --rollout 10 --sign-key release.key www.zip`,
		Args: cobra.ExactArgs(1),
		RunE: jsonErrors(&o.json, o.run),
	}
	f := cmd.Flags()
	f.StringVar(&o.app, "app", "", "app ID, e.g. com.example.app (required)")
	cmd.MarkFlagRequired("app")
	f.StringVar(&o.version, "version", "", "semver version of this release, unique per app (default: \"version\" of --package-json)")
	f.StringVar(&o.packageJSON, "package-json", "package.json", "package.json to take the version from when --version is not given")
	f.BoolVar(&o.versionExistsOK, "version-exists-ok", false, "exit 0 (shipping nothing, and saying so) when the version already exists")
	f.StringVar(&o.channel, "channel", "", "point this channel at the new release")
	f.BoolVar(&o.newChannel, "new-channel", false, "--channel may be a channel the app does not have yet (an app's first upload needs no flag; a mistyped name is refused otherwise)")
	f.StringVar(&o.rollout, "rollout", "", "percentage of devices offered the release on --channel (default 100)")
	f.StringVar(&o.signKey, "sign-key", "", "ed25519 release key file (or CAPSTAN_SIGNING_KEY: a path or the PEM itself)")
	f.StringVar(&o.minNative, "min-native", "", "lowest native app version that can run this bundle")
	f.StringVar(&o.capgoKey, "capgo-key", "", "Capgo RSA private key (capstan keys gen --capgo, or .capgo_key_v2 from npx @capgo/cli key create; or CAPSTAN_CAPGO_KEY): also upload a copy encrypted for @capgo/capacitor-updater")
	f.BoolVar(&o.json, "json", false, "print one JSON object")
	return cmd
}

func (o *uploadOptions) run(cmd *cobra.Command, args []string) error {
	err := o.upload(cmd, args[0])
	if err != nil && o.versionExistsOK && client.IsConflict(err) {
		fmt.Fprintf(cmd.ErrOrStderr(), "capstan: WARNING: version %s of %s already exists: NOTHING WAS SHIPPED (--version-exists-ok)\n", o.version, o.app)
		return output(cmd, o.json, map[string]any{"app": o.app, "version": o.version, "shipped": false, "reason": "version exists"},
			"nothing shipped: version "+o.version+" already exists")
	}
	return err
}

// upload checks the flags, zips a folder, signs the release (the key
// never leaves this machine), encrypts a Capgo copy, and sends it all.
func (o *uploadOptions) upload(cmd *cobra.Command, path string) error {
	if o.version == "" {
		v, err := versionFromPackageJSON(o.packageJSON)
		if err != nil {
			return usageError("no --version given, and %w", err)
		}
		o.version = v
	}
	if err := release.ValidateApp(o.app); err != nil {
		return usageError("--app: %v", err)
	}
	if _, err := release.ParseVersion(o.version); err != nil {
		return usageError("--version: %v", err)
	}
	if o.minNative != "" {
		if _, err := release.ParseVersion(o.minNative); err != nil {
			return usageError("--min-native: %v", err)
		}
	}
	if _, err := parseRollout(o.rollout); err != nil {
		return err
	}
	if _, err := os.Stat(path); err != nil {
		return usageError("%v", err)
	}
	zipPath, cleanup, err := bundleZip(path)
	if err != nil {
		return err
	}
	defer cleanup()
	var env *release.Envelope
	signKey := o.signKey
	if signKey == "" {
		signKey = pick("", "CAPSTAN_SIGNING_KEY", cli.file.SigningKey, "")
	}
	if signKey != "" {
		env, err = signBundle(zipPath, signKey, o.app, o.version, o.minNative)
		if err != nil {
			return err
		}
	}
	capgoKey := o.capgoKey
	if capgoKey == "" {
		capgoKey = os.Getenv("CAPSTAN_CAPGO_KEY")
	}
	up := client.Upload{App: o.app, Version: o.version, MinNative: o.minNative, Channel: o.channel, Rollout: o.rollout, Envelope: env, NewChannel: o.newChannel}
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
	if !o.json && term.IsTerminal(int(os.Stderr.Fd())) {
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
	// The progress bar counts the zip sent; say both sizes so the summary
	// does not seem to contradict it.
	human := fmt.Sprintf("uploaded %s %s: %d files, %s unpacked (%s zip sent), release %s",
		rec.App, rec.Version, rec.Files, humanize.IBytes(uint64(rec.Size)), humanize.IBytes(uint64(fi.Size())), rec.ID)
	if o.channel != "" {
		human += fmt.Sprintf("\nchannel %s now serves %s", o.channel, rec.Version)
	}
	if env != nil {
		human += "\nsigned with key " + env.Signatures[0].KeyID
	}
	if up.Capgo != nil {
		human += "\nencrypted for Capgo devices with key_id " + up.Capgo.KeyID
	}
	return output(cmd, o.json, map[string]any{
		"app": rec.App, "version": rec.Version, "id": rec.ID, "files": rec.Files, "size": rec.Size, "sent": fi.Size(),
		"channel": o.channel, "signed": env != nil, "shipped": true, "warnings": warnings, "capgo_encrypted": up.Capgo != nil,
	}, human)
}

// parseRollout checks a --rollout percentage ("30", "12.5", "30%"); ""
// is nil: the command's default.
func parseRollout(v string) (*float64, error) {
	if v == "" {
		return nil, nil
	}
	pct, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if err != nil || pct < 0 || pct > 100 {
		return nil, usageError("--rollout %q must be a percentage between 0 and 100", v)
	}
	return &pct, nil
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

// signBundle signs the release document of the manifest a zip yields
// (bundle.Manifest, which the origin recomputes to check it), so the
// signing key never leaves the CI machine.
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
	m, err := bundle.Manifest(context.Background(), entries, app, version, minNative, nil)
	if err != nil {
		return nil, err
	}
	b, err := m.EncodeDoc()
	if err != nil {
		return nil, err
	}
	return release.Seal(b, key), nil
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
