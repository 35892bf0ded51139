// Command krbops is the operator CLI for Kerberos runbooks and keytab
// rotation. This file only wires things together: the signal-cancelled
// context, the command tree, and the one table that maps an error to an
// exit code and the lines an operator reads.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/krbops/krbops/commands"
	"github.com/krbops/krbops/runbook"
)

// Set by the release build: -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
var (
	version = "dev"
	commit  = ""
	date    = ""
)

func main() {
	os.Exit(run(os.Args[1:], commands.System()))
}

func run(args []string, streams *commands.IOStreams) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// After the first signal, restore the default handlers so a second ^C
	// kills a run that is slow to unwind.
	context.AfterFunc(ctx, stop)

	root := commands.NewRootCmd(streams, commands.BuildInfo{Version: version, Commit: commit, Date: date})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	code := exitCode(ctx, err)
	report(streams.ErrOut, err)
	return code
}

// exitCode is the single mapping from a command's error to the process
// exit status (documented in every command's help).
func exitCode(ctx context.Context, err error) int {
	var ee *runbook.ExitError
	switch {
	case err == nil:
		return runbook.ExitOK
	case errors.As(err, &ee):
		return ee.Code
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return runbook.ExitCancelled
	default:
		// Errors cobra raises itself (unknown command, bad flag syntax)
		// are usage errors.
		return runbook.ExitUsage
	}
}

// report prints one lower-case error line and a hint line. A report that
// already carries its own exit code has nothing to add.
func report(w io.Writer, err error) {
	if err == nil {
		return
	}
	var ee *runbook.ExitError
	hint := ""
	if errors.As(err, &ee) {
		if ee.Err == nil {
			return
		}
		hint = ee.Hint
	} else if strings.HasPrefix(err.Error(), "unknown command") {
		hint = `run "krbops --help" to see the commands`
	}
	fmt.Fprintf(w, "krbops: %s\n", firstLine(err.Error()))
	if hint != "" {
		fmt.Fprintf(w, "hint: %s\n", hint)
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
