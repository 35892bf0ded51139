package rotate

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/krbops/krbops/ledger"
)

// The breaker's scheduler: at most max rotations of a cluster run at once,
// fewer as failures accumulate, and once a cluster has max failures its
// remaining targets are skipped while other clusters go on.
func TestSchedulerBreaker(t *testing.T) {
	clusters := []string{"a", "a", "a", "a", "b", "a"}
	s := &scheduler{running: map[string]int{}, failures: map[string]int{}, max: 2}
	s.cond = sync.NewCond(&s.mu)
	for i := range clusters {
		s.queue = append(s.queue, i)
	}
	cluster := func(i int) string { return clusters[i] }
	var skipped []int
	skip := func(i, failures int) {
		if failures != 2 {
			t.Errorf("skip %d after %d failures", i, failures)
		}
		skipped = append(skipped, i)
	}
	ctx := context.Background()
	if i, j := s.next(ctx, cluster, skip), s.next(ctx, cluster, skip); i != 0 || j != 1 {
		t.Fatalf("first two: %d %d, want 0 1", i, j)
	}
	// Cluster a is at its cap: the next startable target is b's.
	if k := s.next(ctx, cluster, skip); k != 4 {
		t.Fatalf("third: %d, want 4 (cluster a full)", k)
	}
	s.done("a", true)  // target 0 failed: running + failures of a is still 2
	s.done("a", false) // target 1 rotated: one more of a may start
	if k := s.next(ctx, cluster, skip); k != 2 {
		t.Fatalf("after a failure and a success: %d, want 2", k)
	}
	s.done("a", true) // two failures: a is stopped
	s.done("b", false)
	if k := s.next(ctx, cluster, skip); k != -1 || len(skipped) != 2 || skipped[0] != 3 || skipped[1] != 5 {
		t.Fatalf("after two failures: next %d, skipped %v; want -1 and [3 5]", k, skipped)
	}
}

// listFails is a ledger whose reads fail (a throttled or unreachable
// DynamoDB table).
type listFails struct{ ledger.Ledger }

func (listFails) List(context.Context, ledger.Filter) ([]ledger.Rotation, error) {
	return nil, errors.New("ledger: throttled")
}

// A ledger that cannot be read is not "not done yet": the batch must not
// start a target it may already have rotated.
func TestDoneEarlierLedgerErrorIsNotNotDone(t *testing.T) {
	b := &Batch{Ledger: listFails{ledger.Empty()}, ID: "b1"}
	if _, done, err := b.doneEarlier(context.Background(), "alice@R"); err == nil || done {
		t.Fatalf("doneEarlier with an unreadable ledger: done %v, err %v; want an error", done, err)
	}
	b.Ledger = ledger.Empty()
	if _, done, err := b.doneEarlier(context.Background(), "alice@R"); err != nil || done {
		t.Fatalf("doneEarlier with an empty ledger: done %v, err %v; want not done, no error", done, err)
	}
}
