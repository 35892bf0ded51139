package commands

import (
	"io"
	"os"

	"golang.org/x/term"

	"github.com/krbops/krbops/output"
)

// IOStreams is every stream a command may use. Results go to Out;
// progress, hints and warnings go to ErrOut. Nothing in krbops writes to
// os.Stdout directly, so tests can capture everything.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	OutTTY bool
	ErrTTY bool
	// OutWidth is the terminal width of Out, 0 when Out is not a terminal
	// (then the table is not wrapped).
	OutWidth int
	Getenv   func(string) string
}

// System returns the process's streams.
func System() *IOStreams {
	s := &IOStreams{
		In:     os.Stdin,
		Out:    os.Stdout,
		ErrOut: os.Stderr,
		OutTTY: output.IsTerminal(os.Stdout),
		ErrTTY: output.IsTerminal(os.Stderr),
		Getenv: os.Getenv,
	}
	if s.OutTTY {
		if w, _, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
			s.OutWidth = w
		}
	}
	return s
}
