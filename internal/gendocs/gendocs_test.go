package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/krbops/krbops/commands"
	"github.com/krbops/krbops/internal/spawn"
)

// TestGenerated is make man-check: every command gets a man page that
// names it and every one of its flags and that groff renders without a
// warning, and the completions load in their shell.
func TestGenerated(t *testing.T) {
	out := t.TempDir()
	t.Setenv("SOURCE_DATE_EPOCH", "1767225600") // 2026-01-01
	if err := generate(out); err != nil {
		t.Fatal(err)
	}
	groff, err := exec.LookPath("groff")
	spawn.Require(t, "groff (apt-get install groff-base)", err, errors.Is(err, exec.ErrNotFound))

	root := commands.NewRootCmd(&commands.IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}, Getenv: func(string) string { return "" }}, commands.BuildInfo{})
	var walk func(c *cobra.Command)
	pages := 0
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		pages++
		name := strings.ReplaceAll(c.CommandPath(), " ", "-") + ".1"
		page, err := os.ReadFile(filepath.Join(out, "man", name))
		if err != nil {
			t.Errorf("%s: no man page: %v", c.CommandPath(), err)
			return
		}
		text := string(page)
		if !strings.Contains(text, `.TH "KRBOPS" "1" "Jan 2026"`) || !strings.Contains(text, strings.ReplaceAll(c.CommandPath(), " ", "-")+" - ") {
			t.Errorf("%s: page lacks its header or NAME line", name)
		}
		c.NonInheritedFlags().VisitAll(func(f *pflag.Flag) {
			if !strings.Contains(text, `\fB--`+f.Name+`\fP`) {
				t.Errorf("%s: flag --%s is not in the page", name, f.Name)
			}
		})
		// -k runs preconv as man(1) does: the help text is UTF-8.
		cmd := exec.Command(groff, "-k", "-man", "-Tutf8", "-ww", "-z", filepath.Join(out, "man", name))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("groff %s: %v\n%s", name, err, stderr.String())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	entries, _ := os.ReadDir(filepath.Join(out, "man"))
	if len(entries) != pages {
		t.Errorf("%d man pages for %d commands", len(entries), pages)
	}

	bash, err := exec.LookPath("bash")
	spawn.Require(t, "bash", err, errors.Is(err, exec.ErrNotFound))
	comp := filepath.Join(out, "completions")
	if b, err := exec.Command(bash, "-c", `source "$1" && declare -F __start_krbops`, "bash", filepath.Join(comp, "krbops.bash")).CombinedOutput(); err != nil {
		t.Errorf("bash completion does not load: %v\n%s", err, b)
	}
	// zsh and fish are not on every build machine: where they are, the
	// script must parse; everywhere, it must be the one for krbops.
	for _, c := range []struct{ file, shell, head string }{
		{"krbops.zsh", "zsh", "#compdef krbops"},
		{"krbops.fish", "fish", "complete -c krbops"},
	} {
		b, err := os.ReadFile(filepath.Join(comp, c.file))
		if err != nil || !strings.Contains(string(b), c.head) {
			t.Errorf("%s: %v, want %q in it", c.file, err, c.head)
		}
		if sh, err := exec.LookPath(c.shell); err == nil {
			if out, err := exec.Command(sh, "-n", filepath.Join(comp, c.file)).CombinedOutput(); err != nil {
				t.Errorf("%s -n %s: %v\n%s", c.shell, c.file, err, out)
			}
		}
	}
}
