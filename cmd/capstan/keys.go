package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/capgo/capgokey"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
	"github.com/spf13/cobra"
)

// `capstan keys`: key pairs made on this machine (gen), key rotation
// statements (rotate) and the origin's API keys (create, list, revoke).

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Signing keys, encryption keys, key rotation and API keys"}
	cmd.AddCommand(newKeysGenCmd(), newKeysCreateCmd(), newKeysListCmd(), newKeysRevokeCmd(), newKeysRotateCmd())
	return cmd
}

// keysGenOptions are the flags of `capstan keys gen`.
type keysGenOptions struct {
	out                               string
	encryption, originRole, capgoPair bool
}

func newKeysGenCmd() *cobra.Command {
	var o keysGenOptions
	cmd := &cobra.Command{
		Use:   "gen",
		Short: "Make an ed25519 release-signing key pair: FILE (private) and FILE.pub",
		Example: `  capstan keys gen --out release.key   # keep release.key in CI secrets, ship release.key.pub in the app
  capstan keys gen --origin --out origin.key   # for capstan origin --store … --blobs … --origin-key origin.key
  capstan keys gen --capgo --out .capgo_key_v2   # FILE.pub goes into capacitor.config as CapacitorUpdater.publicKey`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	cmd.Flags().StringVar(&o.out, "out", "", "private key file to write (required)")
	cmd.MarkFlagRequired("out")
	cmd.Flags().BoolVar(&o.originRole, "origin", false, "make the channel-signing key of origins that share a store (capstan origin --origin-key)")
	cmd.Flags().BoolVar(&o.encryption, "encryption", false, "make an X25519 encryption key pair instead (the app ships FILE, the origin gets FILE.pub)")
	cmd.Flags().BoolVar(&o.capgoPair, "capgo", false, "make an RSA key pair for @capgo/capacitor-updater bundle encryption (FILE private, FILE.pub public, PKCS#1 PEM)")
	return cmd
}

func (o *keysGenOptions) run(cmd *cobra.Command, _ []string) error {
	if _, err := os.Stat(o.out); err == nil {
		return fmt.Errorf("%s exists: refusing to overwrite a key", o.out)
	}
	var priv, pub []byte
	var what string
	switch {
	case o.capgoPair:
		// An RSA-2048 pair in the plugin's PKCS#1 PEM formats.
		var err error
		if priv, pub, err = capgokey.GenerateKey(); err != nil {
			return err
		}
		what = fmt.Sprintf("private: keep it in CI secrets, pass it to capstan upload --capgo-key) and %s.pub (set it as plugins.CapacitorUpdater.publicKey in capacitor.config); key_id %s",
			o.out, capgo.KeyIDFromPEM(string(pub)))
	case o.encryption:
		k, err := release.GenerateBoxKey()
		if err != nil {
			return err
		}
		if priv, err = release.EncodeBoxPrivateKey(k); err != nil {
			return err
		}
		if pub, err = release.EncodeBoxPublicKey(k.PublicKey()); err != nil {
			return err
		}
		what = fmt.Sprintf("private: ship it inside the app, give it to `capstan device --decrypt-key`) and %s.pub (register it with `capstan app set --encrypt-key`)", o.out)
	default:
		role, use := release.RoleRelease, "private: keep it in CI secrets) and %s.pub (ship it with the app); key id %s"
		if o.originRole {
			role, use = release.RoleOrigin, "private: give it to every origin of a shared store, --origin-key) and %s.pub (devices and edges trust it); key id %s"
		}
		k, err := release.GenerateKey()
		if err != nil {
			return err
		}
		if priv, err = release.EncodePrivateKey(k); err != nil {
			return err
		}
		public := k.Public().(ed25519.PublicKey)
		if pub, err = release.EncodePublicKey(public, role); err != nil {
			return err
		}
		what = fmt.Sprintf(use, o.out, release.KeyID(public))
	}
	if err := writeKeyPair(o.out, priv, pub); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s\n", o.out, what)
	return nil
}

// writeKeyPair writes a private key to path, readable by its owner only,
// and its public half to path.pub.
func writeKeyPair(path string, priv, pub []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, priv, 0o600); err != nil {
		return err
	}
	return os.WriteFile(path+".pub", pub, 0o644)
}

// keysCreateOptions are the flags of `capstan keys create`.
type keysCreateOptions struct {
	role, name, expires string
	apps                []string
	json                bool
}

func newKeysCreateCmd() *cobra.Command {
	var o keysCreateOptions
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an API key (admin): admin, publisher (upload and channels of its apps) or reader",
		Example: `  capstan keys create --role publisher --app com.example.app --name github-actions --expires 90d
  capstan keys create --role reader --app com.example.app`,
		Args: cobra.NoArgs,
		RunE: jsonErrors(&o.json, o.run),
	}
	cmd.Flags().StringVar(&o.role, "role", "", "admin, publisher or reader (required)")
	cmd.Flags().StringArrayVar(&o.apps, "app", nil, "app the key may act on (repeatable; required for publisher)")
	cmd.Flags().StringVar(&o.name, "name", "", "a label, e.g. the CI pipeline using it")
	cmd.Flags().StringVar(&o.expires, "expires", "", "expiry: a duration (90d, 12h) or an RFC 3339 time; default never")
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON object")
	cmd.MarkFlagRequired("role")
	return cmd
}

func (o *keysCreateOptions) run(cmd *cobra.Command, _ []string) error {
	switch wire.Role(o.role) {
	case wire.RoleAdmin, wire.RolePublisher, wire.RoleReader:
	default:
		return usageError("--role %q: want admin, publisher or reader", o.role)
	}
	exp, err := parseExpiry(o.expires, time.Now())
	if err != nil {
		return err
	}
	ctx, cancel := apiContext()
	defer cancel()
	out, err := apiClient().CreateKey(ctx, wire.CreateKeyBody{Name: o.name, Role: wire.Role(o.role), Apps: o.apps, Expires: exp})
	if err != nil {
		return err
	}
	human := fmt.Sprintf("created %s key %s", out.Role, out.ID)
	if len(out.Apps) > 0 {
		human += " for " + strings.Join(out.Apps, ", ")
	}
	if !out.Expires.IsZero() {
		human += ", expires " + out.Expires.Format(time.RFC3339)
	}
	human += "\nThe secret is shown only once; keep it in your CI's secret store:\n\n    CAPSTAN_API_KEY=" + out.Key
	return output(cmd, o.json, out, human)
}

// parseExpiry turns "30d", "12h" or an RFC 3339 time into an absolute time.
func parseExpiry(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 {
			return time.Time{}, usageError("--expires %q: want e.g. 30d, 12h or 2027-01-01T00:00:00Z", v)
		}
		return now.Add(time.Duration(n) * 24 * time.Hour), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return time.Time{}, usageError("--expires %q: want e.g. 30d, 12h or 2027-01-01T00:00:00Z", v)
	}
	return now.Add(d), nil
}

// jsonOption is the one flag of commands that take no other: --json.
type jsonOption struct{ json bool }

func (o *jsonOption) bind(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON object")
}

func newKeysListCmd() *cobra.Command {
	var o jsonOption
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List API keys (admin); secrets are never shown again",
		Example: "  capstan keys list\n  capstan keys list --json",
		Args:    cobra.NoArgs,
		RunE:    jsonErrors(&o.json, func(cmd *cobra.Command, _ []string) error { return runKeysList(cmd, o.json) }),
	}
	o.bind(cmd)
	return cmd
}

func runKeysList(cmd *cobra.Command, asJSON bool) error {
	ctx, cancel := apiContext()
	defer cancel()
	keys, err := apiClient().Keys(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		return output(cmd, true, map[string][]wire.APIKey{"keys": keys}, "")
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tAPPS\tNAME\tCREATED\tEXPIRES")
	for _, k := range keys {
		apps, exp := strings.Join(k.Apps, ","), "never"
		if apps == "" {
			apps = "*"
		}
		if !k.Expires.IsZero() {
			exp = k.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Role, apps, k.Name, k.Created.Format(time.RFC3339), exp)
	}
	return tw.Flush()
}

func newKeysRevokeCmd() *cobra.Command {
	var o jsonOption
	cmd := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke an API key (admin); it stops working at once",
		Example: `  capstan keys revoke 3f9c1a2b4d5e`,
		Args:    cobra.ExactArgs(1),
		RunE:    jsonErrors(&o.json, func(cmd *cobra.Command, args []string) error { return runKeysRevoke(cmd, args[0], o.json) }),
	}
	o.bind(cmd)
	return cmd
}

func runKeysRevoke(cmd *cobra.Command, id string, asJSON bool) error {
	if looksLikeSecret(id) {
		// Neither sent (it would travel in a URL and land in logs) nor
		// echoed.
		return usageError("that is an API key's secret, not its ID: revoke by ID (capstan keys list shows them)")
	}
	ctx, cancel := apiContext()
	defer cancel()
	if err := apiClient().RevokeKey(ctx, id); err != nil {
		return err
	}
	return output(cmd, asJSON, map[string]string{"revoked": id}, "revoked API key "+id)
}

// looksLikeSecret tells an API key's secret (generated "cap_…", or a
// CAPSTAN_ADMIN_KEY of 32 or more characters) from a key ID (12 hex
// digits, or "admin").
func looksLikeSecret(s string) bool {
	return strings.HasPrefix(s, "cap_") || len(s) >= 32
}

// keysRotateOptions are the flags of `capstan keys rotate`.
type keysRotateOptions struct {
	oldFile, newFile, app, out string
	publish, originKey, json   bool
}

func newKeysRotateCmd() *cobra.Command {
	var o keysRotateOptions
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Replace a release key (or, with --origin, the origin key): a statement signed by the old key that devices follow",
		Long: `Writes a capstan.rotation/v1 statement, signed by the old release key, that
introduces the new one. With --publish it is sent to the origin, which then
accepts the new key for --app and hands the statement to every edge, so that
devices holding only the old key learn the new one.`,
		Example: `  capstan keys gen --out release-2027.key
  capstan keys rotate --old release.key --new release-2027.key.pub --app com.example.app --publish
  capstan keys rotate --origin      # the origin replaces its online key (admin)`,
		Args: cobra.NoArgs,
		RunE: jsonErrors(&o.json, o.run),
	}
	cmd.Flags().StringVar(&o.oldFile, "old", "", "the current release private key (required)")
	cmd.Flags().StringVar(&o.newFile, "new", "", "the new release key: its .pub file or private key (required)")
	cmd.Flags().StringVar(&o.app, "app", "", "the app whose key rotates (needed for --publish)")
	cmd.Flags().StringVar(&o.out, "out", "", "write the statement to this file")
	cmd.Flags().BoolVar(&o.publish, "publish", false, "send the statement to the origin (CAPSTAN_SERVER, CAPSTAN_API_KEY)")
	cmd.Flags().BoolVar(&o.originKey, "origin", false, "rotate the origin's channel-signing key instead (admin API key)")
	cmd.Flags().BoolVar(&o.json, "json", false, "print the statement as one JSON object")
	return cmd
}

func (o *keysRotateOptions) run(cmd *cobra.Command, _ []string) error {
	if o.originKey {
		// The origin makes the new key and signs the statement with its
		// old one (admin API).
		var env release.Envelope
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := apiClient().Do(ctx, "POST", "/v1/keys/origin/rotate", nil, &env); err != nil {
			return err
		}
		r, err := env.Rotation()
		if err != nil {
			return err
		}
		return output(cmd, o.json, &env, fmt.Sprintf("origin key %s → %s; every channel record is re-signed, devices and edges follow /v1/keys/rotations", r.Old, release.KeyID(r.New)))
	}
	if o.oldFile == "" || o.newFile == "" {
		return usageError("--old (private key) and --new (public or private key) are required")
	}
	old, err := release.LoadSigningKey(o.oldFile)
	if err != nil {
		return fmt.Errorf("--old: %w", err)
	}
	newPub, err := readPublicOrPrivate(o.newFile)
	if err != nil {
		return fmt.Errorf("--new: %w", err)
	}
	env, err := release.NewRotation(release.RoleRelease, o.app, old, newPub, time.Now())
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return err
	}
	if o.out != "" {
		if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	human := fmt.Sprintf("release key %s → %s", release.KeyID(old.Public().(ed25519.PublicKey)), release.KeyID(newPub))
	if o.out != "" {
		human += ", statement written to " + o.out
	}
	if o.publish {
		if o.app == "" {
			return usageError("--publish needs --app")
		}
		ctx, cancel := apiContext()
		defer cancel()
		if err := apiClient().Do(ctx, "POST", "/v1/keys/rotations", env, nil); err != nil {
			return err
		}
		human += ", published to the origin"
	}
	if o.out == "" && !o.publish && !o.json {
		human = string(b)
	}
	return output(cmd, o.json, env, human)
}

// readPublicOrPrivate reads an ed25519 public key from a .pub PEM file, or
// derives it from a private key file.
func readPublicOrPrivate(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if keys, err := release.ParsePublicKeys(b); err == nil {
		return keys[0].Key, nil
	}
	k, err := release.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: neither a public nor a private ed25519 key", path)
	}
	return k.Public().(ed25519.PublicKey), nil
}
