package dynamo

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Backoff is exponential backoff with full jitter: the n-th retry waits a
// uniformly random time in [0, min(Cap, Base·2ⁿ)). Full jitter spreads the
// retries of many workers throttled at the same moment, so they do not
// come back in lockstep.
type Backoff struct {
	Base time.Duration
	Cap  time.Duration
	// Rand returns a number in [0, 1); nil means math/rand/v2.
	Rand func() float64
}

// DefaultBackoff is what a run uses: 100ms doubling up to 20s.
var DefaultBackoff = Backoff{Base: 100 * time.Millisecond, Cap: 20 * time.Second}

// Ceiling is the upper bound of the n-th retry's delay (n from 0).
func (b Backoff) Ceiling(n int) time.Duration {
	if n < 0 {
		n = 0
	}
	c := b.Base
	for i := 0; i < n && c < b.Cap; i++ {
		c *= 2
	}
	return min(c, b.Cap)
}

// Delay is the n-th retry's delay.
func (b Backoff) Delay(n int) time.Duration {
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	return time.Duration(r() * float64(b.Ceiling(n)))
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// RetryBudget bounds retries across all workers: each retry spends a
// token and each successful page earns one back, up to the budget. A few
// throttles an hour never end a long run, but a service that fails faster
// than it succeeds stops it after about Max retries.
type RetryBudget struct {
	mu     sync.Mutex
	Max    int
	tokens int
	spent  int
}

// NewRetryBudget returns a full budget of max tokens.
func NewRetryBudget(max int) *RetryBudget { return &RetryBudget{Max: max, tokens: max} }

// Spend takes one token; false when none is left (do not retry).
func (b *RetryBudget) Spend() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens <= 0 {
		return false
	}
	b.tokens--
	b.spent++
	return true
}

// Earn returns one token after a successful page.
func (b *RetryBudget) Earn() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < b.Max {
		b.tokens++
	}
}

// Spent is the number of retries taken so far.
func (b *RetryBudget) Spent() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.spent
}
