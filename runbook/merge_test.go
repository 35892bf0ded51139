package runbook

import (
	"context"
	"fmt"
	"github.com/krbops/krbops/internal/fault"
	"sync"
	"sync/atomic"
	"testing"
)

// overlap is closed when two targets run at once: the first target to
// start waits for a second one, so a run that never overlapped would hang
// (and the test's -timeout would say so) instead of passing by luck.
type overlap struct {
	once sync.Once
	two  chan struct{}
}

func targetBook(name string, fail bool, inflight, peak *atomic.Int32, ov *overlap) Runbook {
	step := func(id string, res Result) Step {
		return Step{ID: id, Group: name, Run: func(context.Context, *State) Result {
			n := inflight.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			if n >= 2 {
				ov.once.Do(func() { close(ov.two) })
			}
			<-ov.two
			inflight.Add(-1)
			return res
		}}
	}
	as := Passf("ok")
	if fail {
		as = Failf("preauth failed")
	}
	return Runbook{Command: "verify", Steps: []Step{
		step("as", as),
		{ID: "tgs", Group: name, Needs: []string{"as"}, Run: func(context.Context, *State) Result { return Passf("ok") }},
	}}
}

func TestRunGroupsMergesInOrderAndBoundsConcurrency(t *testing.T) {
	var inflight, peak atomic.Int32
	ov := &overlap{two: make(chan struct{})}
	var books []Runbook
	for i := range 40 {
		books = append(books, targetBook(fmt.Sprintf("t%02d", i), i%10 == 3, &inflight, &peak, ov))
	}
	var calls atomic.Int32
	rep := RunGroups(context.Background(), "verify", books, 4, Options{CorrelationID: "c1"}, func(done, total int) {
		calls.Add(1)
		if total != 40 || done < 1 || done > 40 {
			t.Errorf("progress %d/%d", done, total)
		}
	})
	if got := peak.Load(); got > 4 || got < 2 {
		t.Errorf("peak concurrency %d, want 2..4", got)
	}
	if calls.Load() != 40 {
		t.Errorf("onDone called %d times, want 40", calls.Load())
	}
	if len(rep.Steps) != 80 || rep.Steps[0].Group != "t00" || rep.Steps[79].Group != "t39" {
		t.Fatalf("steps not merged in target order: %d steps, first %q last %q", len(rep.Steps), rep.Steps[0].Group, rep.Steps[len(rep.Steps)-1].Group)
	}
	// Four targets fail (3, 13, 23, 33); their tgs steps are skipped.
	if rep.Summary.Fail != 4 || rep.Summary.Skip != 4 || rep.Summary.Pass != 72 {
		t.Errorf("summary %+v", rep.Summary)
	}
	if rep.Class != fault.CheckFailed || rep.CorrelationID != "c1" || rep.Command != "verify" {
		t.Errorf("exit %d id %q command %q", rep.Class, rep.CorrelationID, rep.Command)
	}
}

func TestRunGroupsCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var inflight, peak atomic.Int32
	ov := &overlap{two: make(chan struct{})}
	close(ov.two) // nothing may run here anyway
	books := []Runbook{targetBook("a", false, &inflight, &peak, ov), targetBook("b", false, &inflight, &peak, ov)}
	rep := RunGroups(ctx, "verify", books, 1, Options{}, nil)
	if rep.Class != fault.Cancelled || len(rep.Steps) != 4 {
		t.Fatalf("exit %d with %d steps, want 130 with every step reported", rep.Class, len(rep.Steps))
	}
	for _, s := range rep.Steps {
		if s.Status != Skip {
			t.Errorf("%s/%s ran after cancel: %s", s.Group, s.ID, s.Status)
		}
	}
}
