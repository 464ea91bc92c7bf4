// Command capstan is the one binary of Capstan: origin and edge servers,
// the CI client (upload, channel, rollback), key tools, the reference
// device and the benchmark. It only parses flags and wires packages.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/capstan-ota/capstan/origin/client"

	// cobra earns its place: subcommands with interspersed flags
	// (`capstan upload PATH --app X`), generated help with examples, and
	// shell completion, which the standard flag package does not give.
	"github.com/spf13/cobra"
)

// exitError carries a process exit code with its one-line reason.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	root := newRoot(os.Stdout, os.Stderr)
	if err := root.Execute(); err != nil {
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		var ae *client.Error
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			if src := apiKeySource(); src != "" {
				msg += " (the key sent came from " + src + ")"
			}
		}
		fmt.Fprintln(os.Stderr, "capstan: "+msg)
		os.Exit(code)
	}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "capstan",
		Short: "Live updates for Capacitor web bundles: origin, edges, CI client and reference device",
		Long: `Capstan ships web-bundle updates to mobile apps as tiny binary patches.

Servers:   capstan dev | origin | edge
CI:        capstan upload | channel set|promote|list | rollback | stats | keys gen|rotate
Admin:     capstan keys create|list|revoke | app set|show
Devices:   capstan device
Client commands read CAPSTAN_SERVER (default http://127.0.0.1:7070) and CAPSTAN_API_KEY.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	defer addReleaseFlags(root)
	cli = globals{}
	cli.bind(root)
	// Exit code 2 for a usage mistake, 1 for everything that failed.
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: 2, err: fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
	root.AddCommand(newDevCmd(), newOriginCmd(), newEdgeCmd(), newKeysCmd(), newUploadCmd(), newChannelCmd(), newRollbackCmd(), newDeviceCmd(), newStatsCmd(), newAppCmd(), newBenchCmd())
	return root
}

// output prints v as one JSON object with --json, or human text otherwise.
func output(cmd *cobra.Command, asJSON bool, v any, human string) error {
	if asJSON {
		enc := json.NewEncoder(cmd.OutOrStdout())
		return enc.Encode(v)
	}
	fmt.Fprintln(cmd.OutOrStdout(), human)
	return nil
}

// fail prints a JSON error object when --json is set, and returns err for
// the one-line reason on stderr and a non-zero exit.
func fail(cmd *cobra.Command, asJSON bool, err error) error {
	if asJSON {
		json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]string{"error": err.Error()})
	}
	return err
}
