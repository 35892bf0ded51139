package rotate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/ledger"
	"github.com/krbops/krbops/runbook"
)

// StepTarget is the last step of every target of a batch: its verdict
// (rotated, already done, deferred, failed, skipped by the breaker). It
// decides the exit code for the target's steps.
const StepTarget = "batch.target"

// Target outcomes of a batch, as the batch.target step's evidence
// "outcome" and the progress counters name them.
const (
	OutcomeRotated  = "rotated"
	OutcomeDone     = "done" // rotated by an earlier run of the same batch
	OutcomeDeferred = "deferred"
	OutcomeFailed   = "failed"
	OutcomeSkipped  = "skipped" // its cluster's breaker is open
	OutcomeStopped  = "cancelled"
	OutcomeWaiting  = "waiting" // rotate finish: phase 2 not yet due
)

// BatchTarget is one line of a --targets file.
type BatchTarget struct {
	Principal string // as written in the file (the realm may be missing)
	Cluster   string
}

// Batch rotates many principals, each through the same runbook and
// journal as a single rotation ([Rotation.Runbook]).
type Batch struct {
	Targets []BatchTarget
	// ID names the batch in the ledger (every rotation's correlation id):
	// a target whose last ledger record carries it and ended is done, so
	// the same command run again skips it.
	ID          string
	Concurrency int
	// MaxFailures is the circuit breaker: once a cluster has that many
	// failed targets no further rotation starts in it. At most that many
	// of a cluster's rotations run at once, so no more can fail.
	MaxFailures int
	// Wait: a target whose (cluster, role) window is full waits until it
	// opens instead of being deferred.
	Wait       bool
	Ledger     ledger.Ledger
	JournalDir string
	// Rotation builds the rotation of target i; close releases what it
	// opened. Called from the target's goroutine.
	Rotation func(ctx context.Context, i int) (r *Rotation, close func(), err error)
	Now      func() time.Time
	// OnTarget, when set, is called after each target ends, with the
	// counters so far (progress lines).
	OnTarget func(BatchProgress)
}

// BatchProgress counts a batch's targets by outcome, per cluster.
type BatchProgress struct {
	Total   int
	Started time.Time
	// Clusters maps cluster → outcome → count.
	Clusters map[string]map[string]int
}

// Done is the number of targets that ended.
func (p BatchProgress) Done() int {
	n := 0
	for _, c := range p.Clusters {
		for _, v := range c {
			n += v
		}
	}
	return n
}

func (b *Batch) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// scheduler hands out targets in file order, keeping each cluster's
// running rotations plus failures at most MaxFailures, and defers without
// a round trip a target whose (cluster, role, limits) domain the ledger
// has just refused.
type scheduler struct {
	mu       sync.Mutex
	cond     *sync.Cond
	queue    []int
	running  map[string]int
	failures map[string]int
	max      int
}

// next returns the next target to start, or skipped ones (cluster
// stopped) through skip; -1 when none is left or ctx is done.
func (s *scheduler) next(ctx context.Context, cluster func(int) string, skip func(int, int)) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if ctx.Err() != nil || len(s.queue) == 0 {
			return -1
		}
		for k := 0; k < len(s.queue); k++ {
			i := s.queue[k]
			c := cluster(i)
			if s.failures[c] >= s.max {
				s.queue = append(s.queue[:k], s.queue[k+1:]...)
				k--
				skip(i, s.failures[c])
				continue
			}
			if s.running[c]+s.failures[c] < s.max {
				s.queue = append(s.queue[:k], s.queue[k+1:]...)
				s.running[c]++
				return i
			}
		}
		if len(s.queue) == 0 {
			return -1
		}
		s.cond.Wait()
	}
}

func (s *scheduler) done(cluster string, failed bool) {
	s.mu.Lock()
	s.running[cluster]--
	if failed {
		s.failures[cluster]++
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// targetRun is what one target's run left: its report and outcome.
type targetRun struct {
	rep     *runbook.Report
	outcome string
	verdict runbook.Result
}

// Run rotates every target, at most Concurrency at once, and returns one
// report with a group of steps per target, in the file's order. It never
// returns an error: a target's problem is its group's result. On a
// cancelled ctx no further target starts; running ones stop at a safe
// point as a single rotation does.
func (b *Batch) Run(ctx context.Context, opts runbook.Options) *runbook.Report {
	dom := &domains{until: map[string]time.Time{}, clocks: newClockCache(b.now)}
	return b.each(ctx, opts, "rotate --targets", func(i int) targetRun { return b.runTarget(ctx, i, opts, dom) })
}

// Finish runs phase 2 (rotate finish) for every server target whose wait
// has passed; the others are reported waiting until then, clients as
// having no phase 2.
func (b *Batch) Finish(ctx context.Context, opts runbook.Options, force bool) *runbook.Report {
	return b.each(ctx, opts, "rotate finish --targets", func(i int) targetRun { return b.finishTarget(ctx, i, opts, force) })
}

// each runs one target at a time per worker under the breaker and merges
// the targets' groups in file order.
func (b *Batch) each(ctx context.Context, opts runbook.Options, command string, run func(i int) targetRun) *runbook.Report {
	n := len(b.Targets)
	runs := make([]targetRun, n)
	s := &scheduler{running: map[string]int{}, failures: map[string]int{}, max: max(b.MaxFailures, 1)}
	s.cond = sync.NewCond(&s.mu)
	for i := range n {
		s.queue = append(s.queue, i)
	}
	stopWake := context.AfterFunc(ctx, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer stopWake()

	prog := BatchProgress{Total: n, Started: b.now(), Clusters: map[string]map[string]int{}}
	var pmu sync.Mutex
	ended := func(i int, tr targetRun) {
		runs[i] = tr
		pmu.Lock()
		defer pmu.Unlock()
		c := b.Targets[i].Cluster
		if prog.Clusters[c] == nil {
			prog.Clusters[c] = map[string]int{}
		}
		prog.Clusters[c][tr.outcome]++
		if b.OnTarget != nil {
			cp := prog
			cp.Clusters = map[string]map[string]int{}
			for k, v := range prog.Clusters {
				cp.Clusters[k] = map[string]int{}
				for o, m := range v {
					cp.Clusters[k][o] = m
				}
			}
			b.OnTarget(cp)
		}
	}
	skip := func(i, failures int) {
		c := b.Targets[i].Cluster
		res := runbook.Result{Status: runbook.Skip, Message: fmt.Sprintf("skipped: cluster %s stopped after %d failures", c, failures)}.
			WithHint("fix what failed in cluster %s, then run the same command again: finished targets are skipped", c).
			With(runbook.Evidence{"outcome": OutcomeSkipped, "cluster": c})
		ended(i, targetRun{outcome: OutcomeSkipped, verdict: res}) // under the scheduler's lock; ended never takes it
	}

	var wg sync.WaitGroup
	for range min(max(b.Concurrency, 1), max(n, 1)) {
		wg.Go(func() {
			for {
				i := s.next(ctx, func(i int) string { return b.Targets[i].Cluster }, skip)
				if i < 0 {
					return
				}
				tr := run(i)
				s.done(b.Targets[i].Cluster, tr.outcome == OutcomeFailed)
				ended(i, tr)
			}
		})
	}
	wg.Wait()

	var reps []*runbook.Report
	for i, tr := range runs {
		if tr.outcome == "" {
			// Never started: SIGINT came first.
			tr = targetRun{outcome: OutcomeStopped, verdict: runbook.Result{Status: runbook.Skip, Message: "not started: cancelled"}.
				WithHint("run the same command again: finished targets are skipped, interrupted ones resume")}
		}
		reps = append(reps, b.targetReport(i, tr, opts))
	}
	rep := runbook.Merge(command, opts, reps...)
	if ctx.Err() != nil {
		rep.Cancelled = true
		rep.Status, rep.Class = "cancelled", fault.Cancelled
	}
	return rep
}

// targetReport is target i's group: its rotation's steps, each decided by
// the batch.target verdict that ends the group.
func (b *Batch) targetReport(i int, tr targetRun, opts runbook.Options) *runbook.Report {
	group := b.Targets[i].Principal
	rep := tr.rep
	if rep == nil {
		rep = &runbook.Report{StartedAt: b.now()}
	}
	out := *rep
	out.Steps = nil
	for _, sr := range rep.Steps {
		sr.Group, sr.DecidedBy = group, StepTarget
		out.Steps = append(out.Steps, sr)
	}
	v := tr.verdict
	v = v.With(runbook.Evidence{"outcome": tr.outcome, "cluster": b.Targets[i].Cluster})
	out.Steps = append(out.Steps, runbook.StepResult{ID: StepTarget, Title: "target " + tr.outcome, Group: group, Result: v})
	return &out
}

// domains remembers, per admission domain, until when the ledger refused
// it: the refusal's time only moves later as rotations are admitted, so a
// later target of the domain is deferred at least as long.
type domains struct {
	mu    sync.Mutex
	until map[string]time.Time
	// clocks holds the batch's KDC clock samples (preflight.clock).
	clocks *clockCache
}

func domainKey(r *Rotation) string {
	return fmt.Sprintf("%s\x00%s\x00%d\x00%s\x00%s", r.Cluster, r.Role, r.MaxPerWindow, r.Window, r.MinGap)
}

func (d *domains) closed(key string, now time.Time) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u, ok := d.until[key]
	return u, ok && now.Before(u)
}

func (d *domains) refuse(key string, until time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if until.After(d.until[key]) {
		d.until[key] = until
	}
}

// runTarget runs target i: skipped when this batch already rotated it,
// resumed from its journal when one is left, else a new rotation; with
// Wait, a deferral waits for its window and tries again.
func (b *Batch) runTarget(ctx context.Context, i int, opts runbook.Options, dom *domains) targetRun {
	for {
		tr, until := b.tryTarget(ctx, i, opts, dom)
		if tr.outcome != OutcomeDeferred || !b.Wait {
			return tr
		}
		t := time.NewTimer(until.Sub(b.now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return tr
		case <-t.C:
		}
	}
}

func (b *Batch) tryTarget(ctx context.Context, i int, opts runbook.Options, dom *domains) (targetRun, time.Time) {
	failed := func(res runbook.Result) targetRun {
		return targetRun{outcome: OutcomeFailed, verdict: res}
	}
	r, closeFn, err := b.Rotation(ctx, i)
	if err != nil {
		return failed(runbook.Failf("%s", err).WithHint("%s", fault.HintOf(err))), time.Time{}
	}
	defer closeFn()
	if r.ClockProbe == nil {
		r.ClockProbe = dom.clocks.probe(r.Realm, r.quickClockProbe)
	}
	sub := opts
	sub.OnStep = nil
	j, err := LoadJournal(b.JournalDir, r.Principal)
	switch {
	case errors.Is(err, ErrNoJournal):
		rot, ok, err := b.doneEarlier(ctx, r.Principal)
		if err != nil {
			return failed(ledgerResult(err, "could not read the ledger to learn whether this batch rotated %s already: %s", r.Principal, err).
				WithHint("run the batch again once the ledger answers; targets it finished are skipped then")), time.Time{}
		}
		if ok {
			return targetRun{outcome: OutcomeDone, verdict: runbook.Passf("already rotated by this batch: rotation %s, kvno %d to %d (%s)", rot.ID, rot.OldKVNO, rot.NewKVNO, rot.Outcome).
				With(runbook.Evidence{"ledger_id": rot.ID, "old_kvno": rot.OldKVNO, "new_kvno": rot.NewKVNO})}, time.Time{}
		}
		key := domainKey(r)
		if until, closed := dom.closed(key, b.now()); closed {
			return deferred(nil, until), until
		}
		rep := runbook.Run(ctx, r.Runbook(false, nil), sub)
		if until, ok := Deferral(rep); ok {
			dom.refuse(key, until)
			return deferred(rep, until), until
		}
		return finished(rep, "rotated kvno"), time.Time{}
	case err != nil:
		return failed(runbook.Usagef("journal: %s", err).WithHint("inspect the journal in --journal-dir; krbops rotate status lists the open rotations")), time.Time{}
	}
	// An interrupted rotation: the journal, not the file, says what it is.
	r.Role, r.Backend, r.Cluster, r.Tier, r.Keytab, r.Secret = j.Role, j.Backend, j.Cluster, j.Tier, j.Keytab, j.Secret
	rep := runbook.Run(ctx, r.Runbook(true, j), sub)
	tr := finished(rep, "resumed from its journal: kvno")
	tr.verdict = tr.verdict.With(runbook.Evidence{"resumed": true})
	return tr, time.Time{}
}

func deferred(rep *runbook.Report, until time.Time) targetRun {
	u := until.UTC().Format(time.RFC3339)
	return targetRun{rep: rep, outcome: OutcomeDeferred, verdict: runbook.Warnf("deferred until %s: the (cluster, role) window is full", u).
		With(runbook.Evidence{"until": u}).WithHint("run the same command again after %s (or pass --wait); nothing was changed", u)}
}

// finished is the verdict of a rotation that ran: rotated, cancelled, or
// failed with its run's class.
func finished(rep *runbook.Report, what string) targetRun {
	switch {
	case rep.Cancelled:
		return targetRun{rep: rep, outcome: OutcomeStopped, verdict: runbook.Result{Status: runbook.Skip, Message: "cancelled at a safe point"}.
			WithHint("run the same command again: the rotation resumes from its journal")}
	case rep.Class == fault.OK:
		msg := "rotated"
		if sr, ok := stepOf(rep, StepLock); ok && sr.Evidence["new_kvno"] != nil {
			msg = fmt.Sprintf("%s %v to %v", what, sr.Evidence["old_kvno"], sr.Evidence["new_kvno"])
		}
		return targetRun{rep: rep, outcome: OutcomeRotated, verdict: runbook.Passf("%s", msg)}
	}
	id, msg := "", rep.Status
	for _, sr := range rep.Steps {
		if sr.Status == runbook.Fail || sr.Status == runbook.Error {
			id, msg = sr.ID, sr.Message
			break
		}
	}
	return targetRun{rep: rep, outcome: OutcomeFailed, verdict: runbook.Failf("failed at %s: %s", id, msg).
		With(runbook.Evidence{"failed_step": id, "class": rep.Class.String()})}
}

func stepOf(rep *runbook.Report, id string) (runbook.StepResult, bool) {
	for _, sr := range rep.Steps {
		if sr.ID == id {
			return sr, true
		}
	}
	return runbook.StepResult{}, false
}

// Deferral reports whether a rotation stopped only because the ledger's
// admission refused it at preflight.lock, and until when.
func Deferral(rep *runbook.Report) (time.Time, bool) {
	sr, ok := stepOf(rep, StepLock)
	if !ok || sr.Status != runbook.Fail {
		return time.Time{}, false
	}
	s, _ := sr.Evidence["until"].(string)
	t, err := time.Parse(time.RFC3339, s)
	return t, err == nil
}

// doneEarlier is the principal's last ledger record when this batch made
// it and it ended (phase 1 included): the target needs nothing more.
func (b *Batch) doneEarlier(ctx context.Context, principal string) (ledger.Rotation, bool, error) {
	last, err := b.Ledger.List(ctx, ledger.Filter{Principal: principal, Limit: 1})
	if err != nil {
		// Not knowing is not "not done": starting again could rotate a
		// principal this batch already rotated.
		return ledger.Rotation{}, false, err
	}
	if len(last) == 0 {
		return ledger.Rotation{}, false, nil
	}
	rot := last[0]
	ok := rot.CorrelationID == b.ID && (rot.Outcome == ledger.Succeeded || rot.Outcome == ledger.AwaitingPhase2)
	return rot, ok, nil
}

// finishTarget is phase 2 of target i when it serves: waiting (not a
// failure) until the ticket lifetime has passed.
func (b *Batch) finishTarget(ctx context.Context, i int, opts runbook.Options, force bool) targetRun {
	r, closeFn, err := b.Rotation(ctx, i)
	if err != nil {
		return targetRun{outcome: OutcomeFailed, verdict: runbook.Failf("%s", err).WithHint("%s", fault.HintOf(err))}
	}
	defer closeFn()
	if !r.Role.Serves() {
		return targetRun{outcome: OutcomeDone, verdict: runbook.Passf("role %s: no phase 2", r.Role)}
	}
	r.Role = Server
	sub := opts
	sub.OnStep = nil
	rep := runbook.Run(ctx, r.Finish(force), sub)
	if sr, ok := stepOf(rep, StepPhase2Wait); ok && sr.Status == runbook.Fail {
		if at, _ := sr.Evidence["ready_at"].(string); at != "" {
			return targetRun{rep: rep, outcome: OutcomeWaiting, verdict: runbook.Warnf("waiting until %s: tickets under the old kvno may still be in use", at).
				With(runbook.Evidence{"until": at}).WithHint("run rotate finish --targets again after %s", at)}
		}
		if done, err := b.Ledger.List(ctx, ledger.Filter{Principal: r.Principal, Limit: 1}); err == nil && len(done) == 1 && done[0].Outcome == ledger.Succeeded {
			return targetRun{rep: rep, outcome: OutcomeDone, verdict: runbook.Passf("phase 2 already done: rotation %s", done[0].ID)}
		}
	}
	return finished(rep, "phase 2 published: kvno")
}
