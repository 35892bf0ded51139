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
