package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// capstanLines extracts every capstan command line from a CI file or doc,
// joining shell line continuations.
func capstanLines(text string) []string {
	text = strings.ReplaceAll(text, "\\\n", " ")
	// A command, as opposed to prose mentioning capstan, has a flag.
	re := regexp.MustCompile(`(?m)(?:^|[ \t'"(\x60])(capstan[ \t]+[a-z][^\n'"|;&)\x60]*)`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		line := strings.TrimSpace(m[1])
		if !strings.Contains(line, " --") {
			continue
		}
		out = append(out, line)
	}
	return out
}

// checkCommandLine walks the command tree for line and checks that every
// subcommand and --flag exists.
func checkCommandLine(t *testing.T, root *cobra.Command, where, line string) {
	t.Helper()
	words := strings.Fields(line)[1:]
	cmd := root
	i := 0
	for ; i < len(words); i++ {
		w := words[i]
		if strings.HasPrefix(w, "-") || strings.ContainsAny(w, "$\"'/.") {
			break
		}
		var next *cobra.Command
		for _, c := range cmd.Commands() {
			if c.Name() == w || c.HasAlias(w) {
				next = c
			}
		}
		if next == nil {
			if cmd == root {
				t.Errorf("%s: %q: no command %q", where, line, w)
				return
			}
			break // a positional argument
		}
		cmd = next
	}
	if cmd == root {
		t.Errorf("%s: %q names no command", where, line)
		return
	}
	for _, w := range words[i:] {
		if !strings.HasPrefix(w, "--") {
			continue
		}
		name := strings.TrimPrefix(strings.SplitN(w, "=", 2)[0], "--")
		var f *pflag.Flag
		if f = cmd.Flags().Lookup(name); f == nil {
			f = cmd.InheritedFlags().Lookup(name)
		}
		if f == nil && name != "help" {
			t.Errorf("%s: %q: `%s` has no flag --%s", where, line, cmd.CommandPath(), name)
		}
	}
}

// TestCIExamplesUseRealCommands parses the action, every example pipeline
// and the docs, and checks each capstan command and flag in them exists.
func TestCIExamplesUseRealCommands(t *testing.T) {
	root := newRoot(io.Discard, io.Discard)
	files := []string{"../../action.yml", "../../README.md"}
	for _, glob := range []string{"../../examples/ci/*", "../../docs/*.md"} {
		m, _ := filepath.Glob(glob)
		files = append(files, m...)
	}
	total := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := capstanLines(string(b))
		for _, l := range lines {
			checkCommandLine(t, root, filepath.Base(f), l)
		}
		total += len(lines)
	}
	if total < 20 {
		t.Fatalf("found only %d capstan commands in the examples and docs", total)
	}
	// A typo must be caught: the checker is not vacuous.
	ft := &testing.T{}
	checkCommandLine(ft, root, "self-test", "capstan upload --app x --no-such-flag dist")
	if !ft.Failed() {
		t.Fatal("the checker accepted an unknown flag")
	}
}
