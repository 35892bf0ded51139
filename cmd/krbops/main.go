// Command krbops is the operator CLI for Kerberos runbooks and keytab
// rotation. This file only wires things together: the signal-cancelled
// context, the command tree, and the one table that maps an error to an
// exit code and the lines an operator reads.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/krbops/krbops/commands"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/safetext"
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

	app := commands.NewApp(streams, commands.BuildInfo{Version: version, Commit: commit, Date: date})
	err := app.Execute(ctx, args)
	code := exitCode(ctx, err)
	// The forensic log ends with the outcome on every path: success, a
	// failed check, a usage error, SIGINT. A log that cannot be completed
	// fails the run: an incident must not rely on a record that is not
	// there.
	if cerr := app.Close(err, code); cerr != nil {
		report(streams.ErrOut, err)
		err = fault.New(fault.Usage, cerr, "check the disk and the --log-file path; the run's outcome is not in the log")
		code = exitCode(ctx, err)
	}
	report(streams.ErrOut, err)
	return code
}

// exitCode is the one place a command's error becomes the process exit
// status: the error's class (internal/fault), through fault.ExitCode's
// table, or an exact fault.Status (krbops exec's child's). An error nobody classified that a signal left behind is a
// cancellation (130), not a usage error.
func exitCode(ctx context.Context, err error) int {
	if code, ok := fault.StatusOf(err); ok {
		return code
	}
	class := fault.ClassOf(err)
	if class == fault.Unclassified && ctx.Err() != nil {
		class = fault.Cancelled
	}
	return fault.ExitCode(class)
}

// report prints one lower-case error line and a hint line. A run whose
// report already said what happened has nothing to add.
func report(w io.Writer, err error) {
	if err == nil || fault.Silent(err) {
		return
	}
	hint := fault.HintOf(err)
	if hint == "" && strings.HasPrefix(err.Error(), "unknown command") {
		hint = `run "krbops --help" to see the commands`
	}
	// Error text can quote a server or a file: never pass its control
	// bytes to the terminal.
	fmt.Fprintf(w, "krbops: %s\n", safetext.Line(firstLine(err.Error())))
	if hint != "" {
		fmt.Fprintf(w, "hint: %s\n", safetext.Line(hint))
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
