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

	return Merge(command, opts, reports...)
}

// Merge combines reports of one command into one, in order: steps,
// findings and summaries add up, and the exit code is chosen by the same
// verdict as a single run. StartedAt is the first report's; Duration spans
// to the end of the last.
func Merge(command string, opts Options, reports ...*Report) *Report {
	rep := &Report{
		Schema:        Schema,
		Command:       command,
		CorrelationID: opts.CorrelationID,
		Strict:        opts.Strict,
	}
	var end time.Time
	for i, r := range reports {
		if i == 0 || r.StartedAt.Before(rep.StartedAt) {
			rep.StartedAt = r.StartedAt
		}
		if e := r.StartedAt.Add(r.Duration); e.After(end) {
			end = e
		}
		rep.Cancelled = rep.Cancelled || r.Cancelled
		rep.Steps = append(rep.Steps, r.Steps...)
		rep.Findings = append(rep.Findings, r.Findings...)
		rep.Metrics = append(rep.Metrics, r.Metrics...)
		for _, s := range r.Steps {
			rep.Summary.add(s.Status)
		}
	}
	rep.Duration = end.Sub(rep.StartedAt)
	rep.Status, rep.Class = verdict(rep)
	return rep
}
