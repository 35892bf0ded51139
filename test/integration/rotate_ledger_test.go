package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/krbops/krbops/internal/dynalab"
	"github.com/krbops/krbops/ledger"
	"github.com/krbops/krbops/rotate"
)

// Issue 12: operators with their own local state (journal directories)
// share one dynamodb:// ledger. Three real krbops processes race to rotate
// three principals of one (cluster, role) whose window admits two: exactly
// two rotate, the third is refused with nothing changed, and the shared
// ledger holds the two and their audit.
func TestRotateSharedDynamoLedger(t *testing.T) {
	l := newRotLab(t)
	srv := dynalab.ForTest(t)
	if _, err := ledger.Init(context.Background(), srv.Client, "rotate-ledger"); err != nil {
		t.Fatal(err)
	}
	setDynaliteEnv(t, srv.Endpoint)
	spec := "dynamodb://rotate-ledger?region=" + dynalab.Region
	const n, limit = 3, 2
	names, kts := make([]string, n), make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("shared%d", i)
		kts[i] = l.principal(t, names[i])
	}
	codes, outs := make([]int, n), make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		a := l.args(names[i], kts[i], "client", rotate.BackendKpasswd)
		a = replaceFlag(a, "--ledger", spec)
		a = replaceFlag(a, "--max-per-window", fmt.Sprint(limit))
		a = replaceFlag(a, "--journal-dir", filepath.Join(l.dir, fmt.Sprintf("journal-op%d", i)))
		wg.Go(func() { codes[i], _, outs[i] = l.runBinary(t, "", a...) })
	}
	wg.Wait()
	rotated := 0
	for i := range n {
		switch codes[i] {
		case 0:
			rotated++
		case 1:
			if !strings.Contains(outs[i], "window full until") && !strings.Contains(outs[i], "the window's limit of 2 is reached") {
				t.Errorf("%s: exit 1 for another reason than the window:\n%s", names[i], outs[i])
			}
			if got := fmt.Sprint(kvnosOfFile(t, kts[i])); got != "[2]" {
				t.Errorf("%s was refused but its keytab holds kvnos %s", names[i], got)
			}
		default:
			t.Errorf("%s: exit %d\n%s", names[i], codes[i], outs[i])
		}
		if !l.kinit(t, names[i], kts[i]) {
			t.Errorf("%s: the keytab does not log in after the race (exit %d)", names[i], codes[i])
		}
	}
	if rotated != limit {
		t.Fatalf("%d of %d operators rotated in a window of %d: %v", rotated, n, limit, codes)
	}
	led, err := ledger.Open(context.Background(), spec, ledger.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	recs, err := led.List(context.Background(), ledger.Filter{Cluster: "c1", Role: "client"})
	if err != nil || len(recs) != limit {
		t.Fatalf("shared ledger: %d records (%v), want %d", len(recs), err, limit)
	}
	for _, r := range recs {
		if r.Outcome != ledger.Succeeded {
			t.Errorf("record %s of %s: %s", r.ID, r.Principal, r.Outcome)
		}
	}
	changes, err := led.(*ledger.Dynamo).Changes(context.Background(), "")
	admits := 0
	for _, c := range changes {
		if c.Action == "admit" {
			admits++
		}
	}
	if err != nil || admits != limit {
		t.Errorf("change log: %d admissions (%v), want %d", admits, err, limit)
	}
}
