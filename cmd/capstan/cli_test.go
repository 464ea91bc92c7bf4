package main

import (
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// allCommands returns every command of the tree under root, root included.
func allCommands(root *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{root}
	for _, c := range root.Commands() {
		out = append(out, allCommands(c)...)
	}
	return out
}

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
