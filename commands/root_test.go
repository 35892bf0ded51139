package commands

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/krbops/krbops/internal/safetext"
)

// -v writes the forensic log to the terminal's stderr with slog's text
// handler. It quotes every value that is not plain printable text
// (strconv.Quote escapes control characters, C1 controls and direction
// overrides), so a principal or a KDC's error text from the network
// reaches the terminal escaped, never as raw control bytes. This pins
// that behaviour: were a Go release to change it, -v would need its own
// sanitizing handler.
func TestVerboseLogEscapesControlCharacters(t *testing.T) {
	var errOut bytes.Buffer
	g := &Globals{IO: &IOStreams{Out: &bytes.Buffer{}, ErrOut: &errOut, Getenv: func(string) string { return "" }}, Verbose: true, Timeout: 1}
	if err := g.setup(); err != nil {
		t.Fatal(err)
	}
	hostile := "svc/a\x1b[31mred\x1b]0;title\x07\u202egnp.\u009b2J\x00@R"
	g.Log.Warn("kdc reply "+hostile, "principal", hostile, "error", errors.New(hostile), hostile, 1)
	got := errOut.String()
	if got == "" {
		t.Fatal("nothing logged")
	}
	if line := strings.TrimSuffix(got, "\n"); safetext.Line(line) != line {
		t.Errorf("-v log line holds control characters: %q", got)
	}
	if !strings.Contains(got, `\x1b[31mred`) {
		t.Errorf("-v log line does not show the escapes: %q", got)
	}
}
