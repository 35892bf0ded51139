package runbook

import (
	"context"
	"sync"
	"time"
)

// RunGroups runs one runbook per target, up to concurrency at a time, and
// merges the results into one report with one group of steps per target,
// in the order of groups. Steps of a target run in order; targets run in
// parallel because a fleet check of thousands of principals is bound by
// round trips, not by CPU.
//
// Every runbook gets its own State, so steps may keep per-target clients
// there (gokrb5 clients and configs are not safe to share across
// goroutines). onDone, when set, is called after each target finishes,
// from that target's goroutine.
func RunGroups(ctx context.Context, command string, groups []Runbook, concurrency int, opts Options, onDone func(done, total int)) *Report {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	since := opts.Since
	if since == nil {
		since = time.Since
	}
	started := now()
	if concurrency < 1 {
		concurrency = 1
	}
	reports := make([]*Report, len(groups))
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for range min(concurrency, max(len(groups), 1)) {
		wg.Go(func() {
			for i := range jobs {
				sub := opts
				sub.OnStep = nil
				reports[i] = Run(ctx, groups[i], sub)
				if onDone != nil {
					mu.Lock()
					done++
					n := done
					mu.Unlock()
					onDone(n, len(groups))
				}
			}
		})
	}
feed:
	for i := range groups {
		select {
		case jobs <- i:
		case <-ctx.Done():
			// Targets never started are reported as cancelled, not lost.
			for j := i; j < len(groups); j++ {
				reports[j] = Run(ctx, groups[j], opts)
			}
			break feed
		}
	}
	close(jobs)
	wg.Wait()

	rep := &Report{
		Schema:        Schema,
		Command:       command,
		CorrelationID: opts.CorrelationID,
		StartedAt:     started,
		Strict:        opts.Strict,
	}
	for _, r := range reports {
		rep.Cancelled = rep.Cancelled || r.Cancelled
		rep.Steps = append(rep.Steps, r.Steps...)
		for _, s := range r.Steps {
			rep.Summary.add(s.Status)
		}
	}
	rep.Duration = since(started)
	rep.Status, rep.ExitCode = verdict(rep)
	return rep
}
