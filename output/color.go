package output

import (
	"io"
	"os"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
	"golang.org/x/term"

	"github.com/krbops/krbops/runbook"
)

// ColorEnabled decides whether to emit ANSI colors. The rules, first match
// wins:
//
//  1. --no-color                                → off
//  2. NO_COLOR set and non-empty (no-color.org)  → off
//  3. CLICOLOR_FORCE set, non-empty and not "0"  → on, even when piped
//  4. TERM=dumb                                  → off
//  5. otherwise                                  → on only for a terminal
//
// The explicit flag beats the environment because it was typed for this
// run; CLICOLOR_FORCE beats the TTY check because forcing color into a
// pager or CI log is its whole point. getenv is injected for tests; nil
// means os.Getenv.
func ColorEnabled(isTTY bool, noColorFlag bool, getenv func(string) string) bool {
	if getenv == nil {
		getenv = os.Getenv
	}
	switch {
	case noColorFlag:
		return false
	case getenv("NO_COLOR") != "":
		return false
	case getenv("CLICOLOR_FORCE") != "" && getenv("CLICOLOR_FORCE") != "0":
		return true
	case getenv("TERM") == "dumb":
		return false
	default:
		return isTTY
	}
}

// IsTerminal reports whether w is a terminal: an *os.File (or anything
// else with a file descriptor) whose fd is a TTY. Buffers and pipes are not.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}

// DefaultFormat is the --output default: a table for a person at a
// terminal, stable tab-separated lines when piped into a script.
func DefaultFormat(isTTY bool) string {
	if isTTY {
		return "table"
	}
	return "plain"
}

// newStyler returns a lipgloss renderer bound to w with a fixed color
// profile. The profile must be set explicitly on the renderer as well as
// the termenv output: lipgloss v1 re-detects the profile from the
// environment (and from whether w is a TTY) unless SetColorProfile is
// called, which would ignore opts.Color. Nothing package-wide is changed.
func newStyler(w io.Writer, color bool) *lipgloss.Renderer {
	profile := termenv.Ascii
	if color {
		profile = termenv.ANSI256
	}
	r := lipgloss.NewRenderer(w, termenv.WithProfile(profile))
	r.SetColorProfile(profile)
	// A fixed answer keeps lipgloss from querying the terminal's
	// background (an OSC round-trip that can stall on a slow SSH link).
	r.SetHasDarkBackground(true)
	return r
}

// statusColors are ANSI palette indexes so they follow the user's terminal
// theme rather than fixed RGB values.
var statusColors = map[string]lipgloss.Color{
	string(runbook.Pass):  lipgloss.Color("2"), // green
	string(runbook.Warn):  lipgloss.Color("3"), // yellow
	string(runbook.Fail):  lipgloss.Color("1"), // red
	string(runbook.Error): lipgloss.Color("5"), // magenta
	string(runbook.Skip):  lipgloss.Color("8"), // grey
	"cancelled":           lipgloss.Color("5"),
}

// statusStyle styles a status word (step or overall). With an Ascii
// profile lipgloss drops every attribute, so the same code serves both
// color modes.
func statusStyle(r *lipgloss.Renderer, status string) lipgloss.Style {
	s := r.NewStyle()
	if c, ok := statusColors[status]; ok {
		s = s.Foreground(c)
	}
	if status != string(runbook.Pass) && status != string(runbook.Skip) {
		s = s.Bold(true)
	}
	return s
}
