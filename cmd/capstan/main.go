// Command capstan is the one binary of Capstan: origin and edge servers,
// the CI client (upload, channel, rollback), key tools, the reference
// device and the benchmark. It only parses flags and wires packages.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/wire"

	// cobra earns its place: subcommands with interspersed flags
	// (`capstan upload PATH --app X`), generated help with examples, and
	// shell completion, which the standard flag package does not give.
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// exitError carries a process exit code with its one-line reason.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError is a usage mistake: exit code 2 (docs/ci.md).
func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run runs one command line and returns the process exit code: 0 done,
// 1 failed, 2 usage mistake (docs/ci.md). The reason of a failure is one
// line on stderr.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	var ae *client.Error
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		if src := apiKeySource(); src != "" {
			msg += " (the key sent came from " + src + ")"
		}
	}
	if code == 2 && cmd != nil && !strings.Contains(msg, "--help") {
		msg += " (see " + cmd.CommandPath() + " --help)"
	}
	fmt.Fprintln(stderr, "capstan: "+msg)
	return code
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
	root.AddCommand(newDevCmd(), newOriginCmd(), newEdgeCmd(), newKeysCmd(), newUploadCmd(), newChannelCmd(), newRollbackCmd(), newDeviceCmd(), newStatsCmd(), newAppCmd(), newBenchCmd(), newGCCmd())
	for _, c := range allCommands(root) {
		usageChecks(c)
		if clientCommands[c.CommandPath()] {
			cli.bindClient(c)
		}
	}
	return root
}

// clientCommands are the commands that call the origin API: only they take
// --server and --api-key (servers and devices do not).
var clientCommands = map[string]bool{
	"capstan upload": true, "capstan rollback": true, "capstan stats": true, "capstan bench": true,
	"capstan channel set": true, "capstan channel promote": true, "capstan channel list": true, "capstan channel capgo": true,
	"capstan keys create": true, "capstan keys list": true, "capstan keys revoke": true, "capstan keys rotate": true,
	"capstan app set": true, "capstan app show": true,
}

// allCommands returns every command of the tree under root, root included.
func allCommands(root *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{root}
	for _, c := range root.Commands() {
		out = append(out, allCommands(c)...)
	}
	return out
}

// groupAnnotation marks a command that only groups subcommands.
const groupAnnotation = "capstan-group"

// usageChecks makes every usage mistake exit 2 (docs/ci.md): a wrong
// number of arguments, a missing required flag, an unknown subcommand
// (with the suggestion on the same line). Cobra would return plain errors
// for these, which exit 1.
func usageChecks(c *cobra.Command) {
	if c.HasSubCommands() && !c.Runnable() {
		// A group: its help without arguments, an unknown subcommand
		// otherwise (cobra would print the help and exit 0).
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[groupAnnotation] = "true"
		c.SuggestionsMinimumDistance = 2
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf("; did you mean %q?", s[0])
			}
			return usageError("%s", msg)
		}
		return
	}
	args := c.Args
	c.Args = func(cmd *cobra.Command, a []string) error {
		if args != nil {
			if err := args(cmd, a); err != nil {
				return usageError("%v", err)
			}
		}
		var missing []string
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if req := f.Annotations[cobra.BashCompOneRequiredFlag]; len(req) > 0 && req[0] == "true" && !f.Changed {
				missing = append(missing, "--"+f.Name)
			}
		})
		if len(missing) > 0 {
			return usageError("%s is required", strings.Join(missing, ", "))
		}
		return nil
	}
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
		json.NewEncoder(cmd.OutOrStdout()).Encode(wire.Error{Error: err.Error()})
	}
	return err
}

// jsonErrors makes a command's RunE from its run function: when the
// command's --json flag (*asJSON) is set, a failure is also printed on
// stdout as one JSON object, {"error": "…"}, so a script reads JSON
// whatever happened.
func jsonErrors(asJSON *bool, run func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := run(cmd, args)
		if _, shown := err.(reported); err != nil && !shown {
			return fail(cmd, *asJSON, err)
		}
		return err
	}
}

// reported is a failure that the command's output already describes (a
// device's result names its status and error): jsonErrors prints no
// second JSON object for it, and the exit code is still 1.
type reported struct{ error }

// apiContext bounds one call of a client command to the origin API.
func apiContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}
