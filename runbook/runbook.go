// Package runbook is krbops' checklist engine. Start with [Run]: it executes
// a [Runbook]'s steps in their fixed order (adjacent steps of one
// [Step.Parallel] group together), skips a step whose needs did not pass,
// and returns a [Report] whose verdict ([Report.Class]) is decided here
// and nowhere else.
//
// The engine knows no Kerberos, AWS or secret store: each concrete
// runbook lives in its own package (runbook/clock, runbook/verify,
// runbook/klistlint, runbook/resumequery; rotate's in rotate/), and the
// output package, which renders reports, depends on this package alone.
//
// Steps never print. They return a [Result]; the output package renders the
// report for people and machines.
package runbook

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/krbops/krbops/internal/fault"
)

// Schema is the version of the machine-readable report. Bump it only for an
// incompatible change; adding fields keeps "krbops/v1".
const Schema = "krbops/v1"

// Status is the outcome of one step.
type Status string

const (
	Pass  Status = "pass"
	Warn  Status = "warn"
	Fail  Status = "fail"
	Skip  Status = "skip"
	Error Status = "error" // the check could not be made (dependency unreachable, bad reply)
)

// Statuses lists every status in display order.
var Statuses = []Status{Pass, Warn, Fail, Skip, Error}

// Evidence holds the typed facts behind a result: offsets in seconds,
// kvnos, expiry times. Values are numbers, strings, bools, times or slices of
// those, so every renderer can show them without knowing the step.
type Evidence map[string]any

// Keys returns the evidence keys in a stable (sorted) order for renderers.
func (e Evidence) Keys() []string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Result is what a step function returns.
type Result struct {
	Status   Status
	Message  string // one line, lower-case start is fine; says what was found
	Hint     string // what the on-call should do next; empty when nothing to do
	Evidence Evidence
	// Findings and Metrics are what a lint step found and measured; Run
	// moves them to the Report (see findings.go).
	Findings []Finding
	Metrics  []Metric
	// Class overrides what the status says about the run's outcome: a step
	// that could not check because local input is wrong (a missing
	// allowlist, an untrusted journal) is an error whose class is
	// fault.Usage, so the run exits 2 rather than 3. Zero: decided by the
	// status.
	Class fault.Class
}

// Passf, Warnf, Failf and Errorf build results with a formatted message.
func Passf(format string, a ...any) Result {
	return Result{Status: Pass, Message: fmt.Sprintf(format, a...)}
}
func Warnf(format string, a ...any) Result {
	return Result{Status: Warn, Message: fmt.Sprintf(format, a...)}
}
func Failf(format string, a ...any) Result {
	return Result{Status: Fail, Message: fmt.Sprintf(format, a...)}
}
func Errorf(format string, a ...any) Result {
	return Result{Status: Error, Message: fmt.Sprintf(format, a...)}
}

// Usagef is an error result caused by local input (a flag, a file that
// steers the run): the run's class is fault.Usage.
func Usagef(format string, a ...any) Result {
	return Result{Status: Error, Message: fmt.Sprintf(format, a...), Class: fault.Usage}
}

// WithHint returns r with its hint set.
func (r Result) WithHint(format string, a ...any) Result {
	r.Hint = fmt.Sprintf(format, a...)
	return r
}

// With returns r with evidence added (later keys win).
func (r Result) With(ev Evidence) Result {
	// Copy, so a result used as a template is never changed through the
	// map its copies share.
	merged := make(Evidence, len(r.Evidence)+len(ev))
	for k, v := range r.Evidence {
		merged[k] = v
	}
	r.Evidence = merged
	for k, v := range ev {
		r.Evidence[k] = v
	}
	return r
}

// Step is one checklist item.
type Step struct {
	ID    string   // stable, dotted, e.g. "clock.kdc-offset"; scripts match on it
	Title string   // short human title
	Group string   // optional: the target a step belongs to when a runbook checks many
	Needs []string // ids of steps that must pass (or warn) first
	// DecidedBy names a later step that aggregates this one (for example the
	// clock verdict over several KDC probes). When that step ran, this
	// step's own outcome does not choose the exit code: one KDC being down
	// is an error on its line, but the run is only incomplete if none
	// answered.
	DecidedBy string
	// Parallel groups adjacent steps that run at the same time: steps next
	// to each other with the same non-empty Parallel key start together
	// (probes of several KDCs, workers of several segments), and each
	// reports its own duration. Their results enter the report in the
	// runbook's order. A step of a group may need steps before the group,
	// never one inside it.
	Parallel string
	Run      func(ctx context.Context, st *State) Result
}

// Runbook is an ordered list of steps for one command.
type Runbook struct {
	Command string
	Steps   []Step
}

// State is what the engine knows during a run: the results of the steps
// that finished and the findings so far. Data a runbook's steps pass to
// each other lives in a struct the runbook owns, captured by its step
// closures, not here. A step may read State; only the engine writes it,
// between steps, so steps of a parallel group see the results from
// before the group.
type State struct {
	results  map[string]StepResult
	findings []Finding
}

func newState() *State { return &State{results: map[string]StepResult{}} }

// ResultOf returns the result of a step that already ran.
func (s *State) ResultOf(id string) (StepResult, bool) {
	r, ok := s.results[id]
	return r, ok
}

// StepResult is a step's result with its identity and timing.
type StepResult struct {
	ID        string
	Title     string
	Group     string
	DecidedBy string
	Result
	Duration time.Duration
	// Cancelled: the step was skipped or cut short by SIGINT/SIGTERM.
	Cancelled bool
}

// Summary counts steps by status.
type Summary struct {
	Pass, Warn, Fail, Skip, Error int
}

func (s *Summary) add(st Status) {
	switch st {
	case Pass:
		s.Pass++
	case Warn:
		s.Warn++
	case Fail:
		s.Fail++
	case Skip:
		s.Skip++
	case Error:
		s.Error++
	}
}

// Report is the outcome of one run.
type Report struct {
	Schema        string
	Command       string
	CorrelationID string
	StartedAt     time.Time
	Duration      time.Duration
	Strict        bool
	Cancelled     bool
	Steps         []StepResult
	Summary       Summary
	// Findings are the lint findings of every step, in step order; Metrics
	// the samples for the prometheus output. Both are empty for commands
	// that do not lint.
	Findings []Finding
	Metrics  []Metric
	// Status is the overall verdict: pass, warn, fail, error or cancelled;
	// Class is the same verdict in the error model's terms. ExitCode is
	// filled in by the command from Class (cmd/krbops holds the table) so
	// every renderer can show it.
	Status   string
	Class    fault.Class
	ExitCode int
}

// Options are the per-run settings that do not belong to any one step.
type Options struct {
	CorrelationID string
	Strict        bool // warnings count as failures
	// Now and Since replace the clock in tests so durations are stable.
	Now   func() time.Time
	Since func(time.Time) time.Duration
	// OnStep, when set, is called after each step (progress lines).
	OnStep func(StepResult)
}

// Run executes rb's steps in order, a parallel group at a time. It never
// returns an error: every problem is a step result, and a cancelled
// context turns the remaining steps into skips and the report into
// "cancelled".
func Run(ctx context.Context, rb Runbook, opts Options) *Report {
	now, since := opts.Now, opts.Since
	if now == nil {
		now = time.Now
	}
	if since == nil {
		since = time.Since
	}
	st := newState()
	rep := &Report{
		Schema:        Schema,
		Command:       rb.Command,
		CorrelationID: opts.CorrelationID,
		StartedAt:     now(),
		Strict:        opts.Strict,
	}
	var mu sync.Mutex // serialises OnStep across a parallel group
	for _, batch := range batches(rb.Steps) {
		results := make([]StepResult, len(batch))
		var wg sync.WaitGroup
		for i, step := range batch {
			exec := func() {
				sr := runOne(ctx, step, st, batch, now, since)
				results[i] = sr
				if opts.OnStep != nil {
					mu.Lock()
					opts.OnStep(sr)
					mu.Unlock()
				}
			}
			if len(batch) == 1 {
				exec()
			} else {
				wg.Go(exec)
			}
		}
		wg.Wait()
		for _, sr := range results {
			if sr.Cancelled {
				rep.Cancelled = true
			}
			// Findings and metrics live in the report only, so a run over
			// many files holds one copy of each.
			st.findings = append(st.findings, sr.Findings...)
			rep.Metrics = append(rep.Metrics, sr.Metrics...)
			sr.Findings, sr.Metrics = nil, nil
			st.results[sr.ID] = sr
			rep.Steps = append(rep.Steps, sr)
			rep.Summary.add(sr.Status)
		}
	}
	rep.Findings = st.findings
	rep.Duration = since(rep.StartedAt)
	rep.Status, rep.Class = verdict(rep)
	return rep
}

// batches cuts steps into runs of one step, or of adjacent steps sharing a
// Parallel key.
func batches(steps []Step) [][]Step {
	var out [][]Step
	for i := 0; i < len(steps); {
		j := i + 1
		if key := steps[i].Parallel; key != "" {
			for j < len(steps) && steps[j].Parallel == key {
				j++
			}
		}
		out = append(out, steps[i:j])
		i = j
	}
	return out
}

func runOne(ctx context.Context, step Step, st *State, batch []Step, now func() time.Time, since func(time.Time) time.Duration) StepResult {
	sr := StepResult{ID: step.ID, Title: step.Title, Group: step.Group, DecidedBy: step.DecidedBy}
	begin := now()
	switch {
	case ctx.Err() != nil:
		sr.Cancelled = true
		sr.Result = Result{Status: Skip, Message: "skipped: run was cancelled"}
	default:
		if reason := unmetNeeds(st, step, batch); reason != "" {
			sr.Result = Result{Status: Skip, Message: reason}
		} else {
			sr.Result = runStep(ctx, step, st)
			sr.Cancelled = ctx.Err() != nil && sr.Status == Error
		}
	}
	sr.Duration = since(begin)
	if sr.Status == "" {
		sr.Status = Error
		sr.Message = "step returned no status (bug in krbops)"
	}
	return sr
}

// runStep runs one step, turning a panic into an error result so one bad
// step cannot take down a fleet run.
func runStep(ctx context.Context, step Step, st *State) (res Result) {
	defer func() {
		if p := recover(); p != nil {
			res = Errorf("internal error in step %s: %v", step.ID, p).
				WithHint("this is a krbops bug: re-run with --log-file and report it")
		}
	}()
	return step.Run(ctx, st)
}

func unmetNeeds(st *State, step Step, batch []Step) string {
	var failed []string
	for _, need := range step.Needs {
		r, ok := st.results[need]
		switch {
		case len(batch) > 1 && slices.ContainsFunc(batch, func(s Step) bool { return s.ID == need }):
			failed = append(failed, need+" (runs in parallel with it: a bug in krbops)")
		case !ok:
			failed = append(failed, need+" (did not run)")
		case r.Status != Pass && r.Status != Warn:
			failed = append(failed, need+" ("+string(r.Status)+")")
		}
	}
	if len(failed) == 0 {
		return ""
	}
	return "skipped: needs " + strings.Join(failed, ", ")
}

// counts reports whether a step's own status chooses the exit code: a step
// aggregated by a verdict step that ran does not.
func counts(rep *Report, sr StepResult) bool {
	if sr.DecidedBy == "" {
		return true
	}
	for _, other := range rep.Steps {
		if other.ID == sr.DecidedBy && other.Group == sr.Group {
			return other.Status == Skip
		}
	}
	return true
}

// verdict is the one place a run's outcome is chosen from step results.
// Precedence: cancelled > a failed check > a usage or local-input error >
// could not complete > ok. A definite failure outranks "could not check"
// because it is what the on-call must act on first; a local-input error
// outranks an unreachable dependency because fixing the input is what
// makes the next run worth trying. A fail finding counts as a failed
// check and a warn finding as a warning, whatever its step's status.
func verdict(rep *Report) (string, fault.Class) {
	if rep.Cancelled {
		return "cancelled", fault.Cancelled
	}
	var fail, usage, errs, warn bool
	for _, sr := range rep.Steps {
		if !counts(rep, sr) {
			continue
		}
		switch {
		case sr.Class == fault.Usage:
			usage = true
		case sr.Class == fault.Unreachable:
			errs = true
		case sr.Class == fault.CheckFailed || sr.Status == Fail:
			fail = true
		case sr.Status == Error:
			errs = true
		case sr.Status == Warn:
			warn = true
		}
	}
	fc := CountFindings(rep.Findings)
	fail = fail || fc.Fail > 0
	warn = warn || fc.Warn > 0
	switch {
	case fail, warn && rep.Strict:
		return "fail", fault.CheckFailed
	case usage:
		return "error", fault.Usage
	case errs:
		return "error", fault.Unreachable
	case warn:
		return "warn", fault.OK
	default:
		return "pass", fault.OK
	}
}

// Seconds is a duration as evidence: seconds rounded to microseconds. A
// KDC's clock has that resolution, and more digits would only be noise in
// golden files and dashboards.
func Seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1e6) / 1e6 }
