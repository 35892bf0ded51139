// Command gendocs writes krbops' man pages (one per command, from the
// cobra tree) and its bash, zsh and fish completions, for the release
// packages and for make man-check:
//
//	go run ./internal/gendocs -out dist/docs
//
// writes dist/docs/man/krbops*.1 and dist/docs/completions/krbops.{bash,zsh,fish}.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/krbops/krbops/commands"
)

func main() {
	out := flag.String("out", "dist/docs", "directory to write man/ and completions/ into")
	flag.Parse()
	if err := generate(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

func generate(out string) error {
	root := commands.NewRootCmd(&commands.IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}, Getenv: func(string) string { return "" }}, commands.BuildInfo{})
	// The pages must not change with the day they are built: no
	// generator stamp, and the date from SOURCE_DATE_EPOCH (goreleaser
	// sets it to the commit's time) when it is set.
	root.DisableAutoGenTag = true
	man := filepath.Join(out, "man")
	comp := filepath.Join(out, "completions")
	for _, d := range []string{man, comp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	hdr := &doc.GenManHeader{Title: "KRBOPS", Section: "1", Source: "krbops", Manual: "krbops manual"}
	if epoch := os.Getenv("SOURCE_DATE_EPOCH"); epoch != "" {
		secs, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH %q: not a Unix time", epoch)
		}
		date := time.Unix(secs, 0).UTC()
		hdr.Date = &date
	}
	if err := doc.GenManTree(root, hdr, man); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	for name, gen := range map[string]func(*cobra.Command, string) error{
		"krbops.bash": func(c *cobra.Command, p string) error { return c.GenBashCompletionFileV2(p, true) },
		"krbops.zsh":  (*cobra.Command).GenZshCompletionFile,
		"krbops.fish": func(c *cobra.Command, p string) error { return c.GenFishCompletionFile(p, true) },
	} {
		if err := gen(root, filepath.Join(comp, name)); err != nil {
			return fmt.Errorf("completion %s: %w", name, err)
		}
	}
	return nil
}
