package dynamo

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestBackoffFullJitterBounds(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Cap: 2 * time.Second}
	wantCeil := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000}
	for n, w := range wantCeil {
		if got := b.Ceiling(n); got != w*time.Millisecond {
			t.Errorf("Ceiling(%d) = %v, want %v", n, got, w*time.Millisecond)
		}
	}
	if b.Ceiling(1000) != 2*time.Second {
		t.Error("a huge attempt number overflowed the ceiling")
	}
	b.Rand = func() float64 { return 0 }
	if d := b.Delay(3); d != 0 {
		t.Errorf("full jitter with r=0 waits %v, want 0", d)
	}
	b.Rand = func() float64 { return 0.999999 }
	if d := b.Delay(3); d >= 800*time.Millisecond || d < 799*time.Millisecond {
		t.Errorf("full jitter with r→1 waits %v, want just under 800ms", d)
	}
	b.Rand = nil
	for n := range 8 {
		for range 200 {
			if d := b.Delay(n); d < 0 || d >= b.Ceiling(n) {
				t.Fatalf("Delay(%d) = %v outside [0, %v)", n, d, b.Ceiling(n))
			}
		}
	}
}

func TestRetryBudgetIsSharedAndEarnedBack(t *testing.T) {
	b := NewRetryBudget(10)
	var wg sync.WaitGroup
	granted := make(chan bool, 40)
	for range 40 {
		wg.Go(func() { granted <- b.Spend() })
	}
	wg.Wait()
	close(granted)
	n := 0
	for g := range granted {
		if g {
			n++
		}
	}
	if n != 10 || b.Spent() != 10 {
		t.Fatalf("40 concurrent spends of a budget of 10 granted %d", n)
	}
	b.Earn()
	if !b.Spend() || b.Spend() {
		t.Error("one earned token should allow exactly one more retry")
	}
	for range 100 {
		b.Earn()
	}
	spent := 0
	for b.Spend() {
		spent++
	}
	if spent != 10 {
		t.Errorf("earning never exceeds the budget: spent %d after a refill, want 10", spent)
	}
}

// fakeClock drives a RateLimiter without sleeping.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	slept time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.slept += d
	return nil
}

func TestRateLimiterFedByConsumedCapacity(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	l := NewRateLimiter(10)
	l.now, l.sleep = clk.Now, clk.Sleep
	ctx := context.Background()

	// The first request goes at once (a second's worth of balance).
	if err := l.Wait(ctx); err != nil || clk.slept != 0 {
		t.Fatalf("first wait slept %v", clk.slept)
	}
	// A page that consumed 25 units leaves a debt of 15: 1.5s to repay.
	l.Consume(25)
	l.Wait(ctx)
	if clk.slept < 1500*time.Millisecond || clk.slept > 1510*time.Millisecond {
		t.Errorf("after 25 units at 10/s the next request waited %v, want about 1.5s", clk.slept)
	}
	// An idle minute does not bank more than one second's worth.
	clk.now = clk.now.Add(time.Minute)
	clk.slept = 0
	l.Consume(10)
	l.Consume(5)
	l.Wait(ctx)
	if clk.slept < 500*time.Millisecond || clk.slept > 510*time.Millisecond {
		t.Errorf("after a pause and 15 units the wait was %v, want about 0.5s (the balance is capped)", clk.slept)
	}

	// Over a long run, the sustained rate is the limit.
	clk.slept = 0
	start := clk.Now()
	for range 100 {
		l.Wait(ctx)
		l.Consume(4)
	}
	rate := 400 / clk.Now().Sub(start).Seconds()
	if rate > 10.5 || rate < 9 {
		t.Errorf("sustained %.2f units/s, want about 10", rate)
	}

	var none *RateLimiter
	if NewRateLimiter(0) != nil || none.Wait(ctx) != nil {
		t.Error("no limit must never wait")
	}
	none.Consume(5)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	l2 := NewRateLimiter(1)
	l2.Consume(100)
	if err := l2.Wait(cctx); err == nil {
		t.Error("Wait ignored a cancelled context")
	}
}
