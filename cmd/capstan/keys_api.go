package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/capstan-ota/capstan/wire"
	"github.com/spf13/cobra"
)

// addKeyAPICmds adds the API key commands (create, list, revoke) and the
// rotation commands to `capstan keys`.
func addKeyAPICmds(keys *cobra.Command) {
	keys.AddCommand(newKeysCreateCmd(), newKeysListCmd(), newKeysRevokeCmd(), newKeysRotateCmd())
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

func newKeysCreateCmd() *cobra.Command {
	var role, name, expires string
	var apps []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an API key (admin): admin, publisher (upload and channels of its apps) or reader",
		Example: `  capstan keys create --role publisher --app com.example.app --name github-actions --expires 90d
  capstan keys create --role reader --app com.example.app`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := func() error {
				switch wire.Role(role) {
				case wire.RoleAdmin, wire.RolePublisher, wire.RoleReader:
				default:
					return usageError("--role %q: want admin, publisher or reader", role)
				}
				exp, err := parseExpiry(expires, time.Now())
				if err != nil {
					return err
				}
				var out struct {
					Key     string    `json:"key"`
					ID      string    `json:"id"`
					Role    string    `json:"role"`
					Apps    []string  `json:"apps"`
					Expires time.Time `json:"expires,omitzero"`
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				body := wire.CreateKeyBody{Name: name, Role: wire.Role(role), Apps: apps, Expires: exp}
				if err := apiClient().Do(ctx, "POST", "/v1/keys", body, &out); err != nil {
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
				return output(cmd, asJSON, out, human)
			}()
			if err != nil {
				return fail(cmd, asJSON, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "admin, publisher or reader (required)")
	cmd.Flags().StringArrayVar(&apps, "app", nil, "app the key may act on (repeatable; required for publisher)")
	cmd.Flags().StringVar(&name, "name", "", "a label, e.g. the CI pipeline using it")
	cmd.Flags().StringVar(&expires, "expires", "", "expiry: a duration (90d, 12h) or an RFC 3339 time; default never")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.MarkFlagRequired("role")
	return cmd
}

func newKeysListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List API keys (admin); secrets are never shown again",
		Example: "  capstan keys list\n  capstan keys list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Keys []wire.APIKey `json:"keys"`
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := apiClient().Do(ctx, "GET", "/v1/keys", nil, &out); err != nil {
				return fail(cmd, asJSON, err)
			}
			if asJSON {
				return output(cmd, true, out, "")
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLE\tAPPS\tNAME\tCREATED\tEXPIRES")
			for _, k := range out.Keys {
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
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newKeysRevokeCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke an API key (admin); it stops working at once",
		Example: `  capstan keys revoke 3f9c1a2b4d5e`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if looksLikeSecret(args[0]) {
				// Neither sent (it would travel in a URL and land in
				// logs) nor echoed.
				return fail(cmd, asJSON, usageError("that is an API key's secret, not its ID: revoke by ID (capstan keys list shows them)"))
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out map[string]any
			if err := apiClient().Do(ctx, "DELETE", "/v1/keys/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return fail(cmd, asJSON, err)
			}
			return output(cmd, asJSON, out, "revoked API key "+args[0])
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

// looksLikeSecret tells an API key's secret (generated "cap_…", or a
// CAPSTAN_ADMIN_KEY of 32 or more characters) from a key ID (12 hex
// digits, or "admin").
func looksLikeSecret(s string) bool {
	return strings.HasPrefix(s, "cap_") || len(s) >= 32
}

func newAppCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "app", Short: "App trust settings: release keys, required signing, encryption"}
	var app, encKey string
	var releaseKeys, removeKeys []string
	var require, noRequire, noEncrypt, asJSON bool
	set := &cobra.Command{
		Use:   "set",
		Short: "Register release keys, require signed uploads, turn on encryption (admin)",
		Example: `  capstan app set --app com.example.app --release-key release.key.pub --require-signing
  capstan app set --app com.example.app --encrypt-key app-box.key.pub`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := func() error {
				var in wire.AppSettings
				for _, f := range releaseKeys {
					b, err := os.ReadFile(f)
					if err != nil {
						return fmt.Errorf("--release-key: %w", err)
					}
					in.AddReleaseKeys = append(in.AddReleaseKeys, string(b))
				}
				in.RemoveReleaseKeys = removeKeys
				if require && noRequire {
					return usageError("--require-signing and --no-require-signing contradict each other")
				}
				if require || noRequire {
					v := require
					in.RequireSigning = &v
				}
				if encKey != "" {
					b, err := os.ReadFile(encKey)
					if err != nil {
						return fmt.Errorf("--encrypt-key: %w", err)
					}
					s := string(b)
					in.EncryptKey = &s
				}
				if noEncrypt {
					s := ""
					in.EncryptKey = &s
				}
				var out wire.AppView
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := apiClient().Do(ctx, "PUT", "/v1/apps/"+url.PathEscape(app), in, &out); err != nil {
					return err
				}
				return output(cmd, asJSON, out, describeApp(&out))
			}()
			if err != nil {
				return fail(cmd, asJSON, err)
			}
			return nil
		},
	}
	set.Flags().StringVar(&app, "app", "", "app ID (required)")
	set.MarkFlagRequired("app")
	set.Flags().StringArrayVar(&releaseKeys, "release-key", nil, "`FILE` holding a release public key (from capstan keys gen) to accept (repeatable)")
	set.Flags().StringArrayVar(&removeKeys, "remove-release-key", nil, "key ID to stop accepting (repeatable)")
	set.Flags().BoolVar(&require, "require-signing", false, "refuse uploads not signed by a registered release key (implied once a release key is registered)")
	set.Flags().BoolVar(&noRequire, "no-require-signing", false, "accept unsigned uploads although release keys are registered (devices that verify refuse them)")
	set.Flags().StringVar(&encKey, "encrypt-key", "", "`FILE` holding the app's X25519 public key (from capstan keys gen --encryption): encrypt new releases")
	set.Flags().BoolVar(&noEncrypt, "no-encrypt", false, "stop encrypting new releases")
	set.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")

	var showApp string
	var showJSON bool
	show := &cobra.Command{
		Use:     "show",
		Short:   "Show an app's trust settings",
		Example: "  capstan app show --app com.example.app",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out wire.AppView
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := apiClient().Do(ctx, "GET", "/v1/apps/"+url.PathEscape(showApp), nil, &out); err != nil {
				return fail(cmd, showJSON, err)
			}
			return output(cmd, showJSON, out, describeApp(&out))
		},
	}
	show.Flags().StringVar(&showApp, "app", "", "app ID (required)")
	show.Flags().BoolVar(&showJSON, "json", false, "print one JSON object")
	show.MarkFlagRequired("app")
	cmd.AddCommand(set, show)
	return cmd
}

func describeApp(a *wire.AppView) string {
	s := fmt.Sprintf("app %s: release keys [%s], signing required: %v, encrypted: %v", a.ID, strings.Join(a.ReleaseKeyIDs, ", "), a.SigningRequired, a.Encrypted)
	return s
}
