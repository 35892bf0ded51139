package commands

import (
	"bytes"
	"testing"
	"time"

	"github.com/krbops/krbops/rotate"
)

func TestBatchProgressLine(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := rotate.BatchProgress{Total: 10, Started: start, Clusters: map[string]map[string]int{
		"eu1":      {rotate.OutcomeRotated: 3, rotate.OutcomeDeferred: 1},
		"c\x1b[2J": {rotate.OutcomeFailed: 1},
	}}
	var b bytes.Buffer
	writeBatchProgress(&b, p, start.Add(2*time.Second))
	want := "\rrotate: 5/10 | c[2J: 0 done, 0 deferred, 1 failed | eu1: 3 done, 1 deferred, 0 failed | 2.5/s, ETA 2s"
	if b.String() != want {
		t.Errorf("got  %q\nwant %q", b.String(), want)
	}
}

// Progress goes to a terminal's stderr only: not when piped, not with
// --quiet, not with machine-readable output; an interrupted batch's open
// line is ended before the report.
func TestBatchProgressOnlyOnATerminal(t *testing.T) {
	io, _, errOut := lintStreams(nil)
	o := &RotateOptions{Globals: &Globals{IO: io}}
	if up, _ := o.batchProgress(); up != nil {
		t.Error("progress on a stderr that is not a terminal")
	}
	io.ErrTTY = true
	o.Output = "json"
	if up, _ := o.batchProgress(); up != nil {
		t.Error("progress with -o json")
	}
	o.Output, o.Quiet = "plain", true
	if up, _ := o.batchProgress(); up != nil {
		t.Error("progress with --quiet")
	}
	o.Quiet = false
	up, end := o.batchProgress()
	if up == nil {
		t.Fatal("no progress on a terminal")
	}
	up(rotate.BatchProgress{Total: 2, Started: time.Now(), Clusters: map[string]map[string]int{"c1": {rotate.OutcomeRotated: 1}}})
	end()
	if got := errOut.String(); !bytes.HasPrefix([]byte(got), []byte("\rrotate: 1/2 | c1: 1 done")) || got[len(got)-1] != '\n' {
		t.Errorf("stderr %q: want the line, ended", got)
	}
}
