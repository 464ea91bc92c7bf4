package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestHelpPlaceholders: --help shows each flag's value as one word (a
// backquoted phrase in a usage string becomes the placeholder: `device
// --help` showed "--decrypt-key capstan keys gen --encryption").
func TestHelpPlaceholders(t *testing.T) {
	root := newRoot(io.Discard, io.Discard)
	for _, c := range allCommands(root) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if name, _ := pflag.UnquoteUsage(f); strings.ContainsAny(name, " \t") {
				t.Errorf("%s --%s shows its value as %q", c.CommandPath(), f.Name, name)
			}
		})
	}
}

// runCapstan runs one command line in-process as main does and returns
// the exit code and what it printed on stdout and stderr.
func runCapstan(args ...string) (int, string) {
	var out bytes.Buffer
	code := run(args, &out, &out)
	return code, out.String()
}

// TestExitCodes: 0 done, 1 failed, 2 usage mistake, for every command
// (docs/ci.md). Usage mistakes — an unknown flag, a wrong number of
// arguments, a missing required flag, an unknown subcommand, a value that
// is not what the flag takes — used to exit 1 in most commands.
func TestExitCodes(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("CAPSTAN_SERVER", "http://127.0.0.1:1") // nothing listens: client commands fail with 1
	t.Setenv("CAPSTAN_API_KEY", "")
	t.Setenv("CAPSTAN_CONFIG", "")
	root := newRoot(io.Discard, io.Discard)
	leaves := 0
	for _, c := range allCommands(root) {
		if c.Annotations[groupAnnotation] != "" {
			continue
		}
		leaves++
		path := strings.Fields(c.CommandPath())[1:]
		t.Run(strings.Join(path, "_"), func(t *testing.T) {
			if code, out := runCapstan(append(path, "--no-such-flag")...); code != 2 {
				t.Errorf("unknown flag: exit %d, want 2: %s", code, out)
			}
			extra := append(append([]string{}, path...), "one", "two", "three")
			if code, out := runCapstan(extra...); code != 2 {
				t.Errorf("too many arguments: exit %d, want 2: %s", code, out)
			}
			required := false
			c.Flags().VisitAll(func(f *pflag.Flag) {
				if r := f.Annotations[cobra.BashCompOneRequiredFlag]; len(r) > 0 && r[0] == "true" {
					required = true
				}
			})
			if required {
				args := path
				if c.Use == "upload PATH" || c.Use == "revoke ID" {
					args = append(append([]string{}, path...), "x")
				}
				if code, out := runCapstan(args...); code != 2 || !strings.Contains(out, "is required") {
					t.Errorf("missing required flag: exit %d, want 2 saying what is required: %s", code, out)
				}
			}
		})
	}
	if leaves < 20 {
		t.Fatalf("only %d commands found", leaves)
	}

	os.WriteFile("package.json", []byte(`{"version":"1.0.0"}`), 0o644)
	os.MkdirAll("www", 0o755)
	os.WriteFile("www/index.html", []byte("x"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		env  string // CAPSTAN_SERVER, when not the unreachable default
		code int
		want string
	}{
		{"bad semver", []string{"upload", "--app", "com.x", "--version", "one", "www"}, "", 2, "--version"},
		{"bad min native", []string{"upload", "--app", "com.x", "--version", "1.0.0", "--min-native", "two", "www"}, "", 2, "--min-native"},
		{"bad rollout", []string{"upload", "--app", "com.x", "--rollout", "150", "www"}, "", 2, "--rollout"},
		{"bad app id", []string{"upload", "--app", "com x", "www"}, "", 2, "--app"},
		{"no such bundle", []string{"upload", "--app", "com.x", "dist"}, "", 2, "dist"},
		{"channel set bad version", []string{"channel", "set", "--app", "a", "--channel", "c", "--version", "one"}, "", 2, "--version"},
		{"channel set bad rollout", []string{"channel", "set", "--app", "a", "--channel", "c", "--rollout", "x"}, "", 2, "--rollout"},
		{"pause and resume", []string{"channel", "set", "--app", "a", "--channel", "c", "--pause", "--resume"}, "", 2, "contradict"},
		{"rollback to a bad version", []string{"rollback", "--app", "a", "--channel", "c", "--to", "old"}, "", 2, "--to"},
		{"promote bad rollout", []string{"channel", "promote", "--app", "a", "--from", "b", "--to", "c", "--rollout", "x"}, "", 2, "--rollout"},
		{"keys create bad role", []string{"keys", "create", "--role", "owner"}, "", 2, "--role"},
		{"keys create bad expiry", []string{"keys", "create", "--role", "reader", "--expires", "soon"}, "", 2, "--expires"},
		{"capgo bad mode", []string{"channel", "capgo", "--app", "a", "--channel", "c", "--disable-auto-update", "sometimes"}, "", 2, "--disable-auto-update"},
		{"unknown command", []string{"chanel"}, "", 2, `unknown command "chanel" for "capstan"; did you mean "channel"?`},
		{"unknown subcommand", []string{"channel", "sett"}, "", 2, `did you mean "set"?`},
		{"server without scheme", []string{"channel", "list", "--app", "a"}, "127.0.0.1:7070", 2, `CAPSTAN_SERVER "127.0.0.1:7070" is not an origin API URL`},
		{"server flag without scheme", []string{"stats", "--app", "a", "--server", "localhost:7070"}, "", 2, `--server "localhost:7070"`},
		{"cache size", []string{"edge", "--cache-size", "lots"}, "", 2, "--cache-size"},
		{"origin unreachable", []string{"channel", "list", "--app", "a"}, "", 1, "cannot reach the origin"},
		{"upload unreachable", []string{"upload", "--app", "com.x", "www"}, "", 1, "cannot reach the origin"},
		{"keys gen", []string{"keys", "gen", "--out", "k.key"}, "", 0, "wrote k.key"},
		{"keys gen again", []string{"keys", "gen", "--out", "k.key"}, "", 1, "refusing to overwrite"},
		{"help", []string{"upload", "--help"}, "", 0, "--api-key"},
		{"a group without a subcommand shows its help", []string{"channel"}, "", 0, "Available Commands"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("CAPSTAN_SERVER", tc.env)
			}
			code, out := runCapstan(tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("capstan %s: exit %d %q, want %d with %q", strings.Join(tc.args, " "), code, out, tc.code, tc.want)
			}
			if strings.Count(strings.TrimSpace(out), "\n") > 0 && tc.code == 2 {
				t.Errorf("a usage mistake takes one line: %q", out)
			}
		})
	}
}

// TestClientFlagsOnlyOnClientCommands: servers and devices do not take
// --server or --api-key (origin --help listed them).
func TestClientFlagsOnlyOnClientCommands(t *testing.T) {
	root := newRoot(io.Discard, io.Discard)
	for _, c := range allCommands(root) {
		has := c.Flags().Lookup("server") != nil || c.Flags().Lookup("api-key") != nil
		if has != clientCommands[c.CommandPath()] {
			t.Errorf("%s: --server/--api-key %v, want %v", c.CommandPath(), has, clientCommands[c.CommandPath()])
		}
	}
	for _, args := range [][]string{{"origin", "--help"}, {"edge", "--help"}, {"dev", "--help"}, {"device", "--help"}} {
		if _, out := runCapstan(args...); strings.Contains(out, "--api-key") || strings.Contains(out, "--server") {
			t.Errorf("capstan %s lists client flags:\n%s", strings.Join(args, " "), out)
		}
	}
}

// TestRevokeNeverEchoesASecret: `keys revoke <secret>` printed the secret
// back (and sent it in a URL). It is refused before anything is sent.
func TestRevokeNeverEchoesASecret(t *testing.T) {
	const secret = "cap_9f1c0a9d2b7e4c3a8d5f0e1b2c3d4e5f6a7b"
	code, out := runCapstan("keys", "revoke", secret)
	if code != 2 || strings.Contains(out, secret) || strings.Contains(out, secret[4:12]) || !strings.Contains(out, "keys list") {
		t.Fatalf("exit %d: %q", code, out)
	}
}
