package commands

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

var update = flag.Bool("update", false, "rewrite docs/cli.md from the commands' help")

// TestCLIReference keeps docs/cli.md equal to what --help prints, so every
// flag, step id and exit code documented in help is in docs/ too.
// Regenerate with: go test ./commands -run TestCLIReference -update
func TestCLIReference(t *testing.T) {
	var doc bytes.Buffer
	doc.WriteString("# krbops CLI reference\n\n")
	doc.WriteString("Generated from `--help` by `go test ./commands -run TestCLIReference -update`; do not edit by hand.\n")
	doc.WriteString("Runbooks per command are in this directory; exit codes in [exit-codes.md](exit-codes.md).\n")

	root := NewRootCmd(&IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}, Getenv: func(string) string { return "" }}, BuildInfo{})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || strings.HasPrefix(c.CommandPath(), "krbops completion ") {
			return
		}
		var help bytes.Buffer
		c.SetOut(&help)
		if err := c.Help(); err != nil {
			t.Fatalf("%s --help: %v", c.CommandPath(), err)
		}
		fmt.Fprintf(&doc, "\n## %s\n\n```text\n%s```\n", c.CommandPath(), strings.TrimLeft(help.String(), "\n"))
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)

	const path = "../docs/cli.md"
	if *update {
		if err := os.WriteFile(path, doc.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run: go test ./commands -run TestCLIReference -update)", err)
	}
	if !bytes.Equal(got, doc.Bytes()) {
		t.Fatalf("docs/cli.md is out of date with --help: run go test ./commands -run TestCLIReference -update")
	}
}
