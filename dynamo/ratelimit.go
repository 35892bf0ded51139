package dynamo

import (
	"context"
	"sync"
	"time"
)

// RateLimiter keeps a run's read capacity at or below a rate in capacity
// units per second, shared by all segments. It is fed by what DynamoDB
// reports as consumed (ConsumedCapacity), not by a guess: a request may
// start while the balance is positive, its cost is subtracted when the
// page arrives, and a negative balance makes every worker wait until the
// rate has paid it back. The balance never exceeds one second's worth,
// so an idle pause does not turn into a burst.
type RateLimiter struct {
	mu      sync.Mutex
	rate    float64 // units per second
	balance float64
	last    time.Time
	now     func() time.Time
	sleep   func(context.Context, time.Duration) error
}

// NewRateLimiter returns a limiter for rate units per second, or nil for
// no limit (rate ≤ 0); a nil *RateLimiter never waits.
func NewRateLimiter(rate float64) *RateLimiter {
	if rate <= 0 {
		return nil
	}
	return &RateLimiter{rate: rate, balance: rate, now: time.Now, sleep: sleep}
}

func (l *RateLimiter) refill() {
	t := l.now()
	if !l.last.IsZero() {
		l.balance = min(l.rate, l.balance+t.Sub(l.last).Seconds()*l.rate)
	}
	l.last = t
}

// Wait blocks until the balance is positive or ctx ends.
func (l *RateLimiter) Wait(ctx context.Context) error {
	if l == nil {
		return ctx.Err()
	}
	for {
		l.mu.Lock()
		l.refill()
		if l.balance > 0 {
			l.mu.Unlock()
			return ctx.Err()
		}
		// Time until the debt is paid back, plus a hair so the next
		// refill is strictly positive.
		wait := time.Duration((-l.balance/l.rate)*float64(time.Second)) + time.Millisecond
		l.mu.Unlock()
		if err := l.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// Consume subtracts what a page consumed.
func (l *RateLimiter) Consume(units float64) {
	if l == nil || units <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill()
	l.balance -= units
}
