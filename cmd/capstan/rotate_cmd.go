package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/capstan-ota/capstan/edge"
	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
	"github.com/spf13/cobra"
)

// genBoxKey writes an X25519 key pair for release encryption.
func genBoxKey(cmd *cobra.Command, out string) error {
	k, err := release.GenerateBoxKey()
	if err != nil {
		return err
	}
	priv, err := release.EncodeBoxPrivateKey(k)
	if err != nil {
		return err
	}
	pub, err := release.EncodeBoxPublicKey(k.PublicKey())
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
	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (private: ship it inside the app, give it to `capstan device --decrypt-key`) and %s.pub (register it with `capstan app set --encrypt-key`)\n", out, out)
	return nil
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

func newKeysRotateCmd() *cobra.Command {
	var oldFile, newFile, app, out string
	var publish, originKey, asJSON bool
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
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := func() error {
				if originKey {
					// The origin makes the new key and signs the statement
					// with its old one (admin API).
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
					return output(cmd, asJSON, &env, fmt.Sprintf("origin key %s → %s; every channel record is re-signed, devices and edges follow /v1/keys/rotations", r.Old, release.KeyID(r.New)))
				}
				if oldFile == "" || newFile == "" {
					return usageError("--old (private key) and --new (public or private key) are required")
				}
				old, err := release.LoadSigningKey(oldFile)
				if err != nil {
					return fmt.Errorf("--old: %w", err)
				}
				newPub, err := readPublicOrPrivate(newFile)
				if err != nil {
					return fmt.Errorf("--new: %w", err)
				}
				env, err := release.NewRotation(release.RoleRelease, app, old, newPub, time.Now())
				if err != nil {
					return err
				}
				b, err := json.MarshalIndent(env, "", "  ")
				if err != nil {
					return err
				}
				if out != "" {
					if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
						return err
					}
				}
				human := fmt.Sprintf("release key %s → %s", release.KeyID(old.Public().(ed25519.PublicKey)), release.KeyID(newPub))
				if out != "" {
					human += ", statement written to " + out
				}
				if publish {
					if app == "" {
						return usageError("--publish needs --app")
					}
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					if err := apiClient().Do(ctx, "POST", "/v1/keys/rotations", env, nil); err != nil {
						return err
					}
					human += ", published to the origin"
				}
				if out == "" && !publish && !asJSON {
					human = string(b)
				}
				return output(cmd, asJSON, env, human)
			}()
			if err != nil {
				return fail(cmd, asJSON, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&oldFile, "old", "", "the current release private key (required)")
	cmd.Flags().StringVar(&newFile, "new", "", "the new release key: its .pub file or private key (required)")
	cmd.Flags().StringVar(&app, "app", "", "the app whose key rotates (needed for --publish)")
	cmd.Flags().StringVar(&out, "out", "", "write the statement to this file")
	cmd.Flags().BoolVar(&publish, "publish", false, "send the statement to the origin (CAPSTAN_SERVER, CAPSTAN_API_KEY)")
	cmd.Flags().BoolVar(&originKey, "origin", false, "rotate the origin's channel-signing key instead (admin API key)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the statement as one JSON object")
	return cmd
}

// rateLimitFlags are the edge's per-address rate limit flags.
type rateLimitFlags struct {
	perSecond float64
	burst     int
	clients   int
	loopback  bool
	perAddr   int
	maxConns  int
}

func (f *rateLimitFlags) flags(cmd *cobra.Command) {
	d := edge.DefaultRateLimit()
	cmd.Flags().Float64Var(&f.perSecond, "rate-limit", d.PerSecond, "device requests per second per client address (IPv4 address or IPv6 /64); negative turns limiting off")
	cmd.Flags().IntVar(&f.burst, "rate-burst", d.Burst, "requests a quiet address may make at once")
	cmd.Flags().IntVar(&f.clients, "rate-clients", d.Clients, "client addresses tracked at once (least recently seen forgotten first)")
	cmd.Flags().BoolVar(&f.loopback, "rate-limit-loopback", false, "also limit loopback clients (exempt by default for local load generators), rate and connections")
	cmd.Flags().IntVar(&f.perAddr, "conns-per-address", edge.DefaultConnsPerAddress, "open connections one client address may hold (IPv4, or IPv6 /64); more are answered 429 and closed; negative: no cap")
	cmd.Flags().IntVar(&f.maxConns, "max-conns", edge.DefaultMaxConns, "open connections in all (~6 KB each when idle); more are answered 503 and closed")
}

func (f *rateLimitFlags) apply(cfg *edge.Config) {
	cfg.RateLimit = edge.RateLimitConfig{PerSecond: f.perSecond, Burst: f.burst, Clients: f.clients, LimitLoopback: f.loopback}
	cfg.ConnsPerAddress = f.perAddr
	cfg.MaxConns = f.maxConns
}

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
