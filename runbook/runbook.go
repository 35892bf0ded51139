// Package runbook is krbops' checklist engine. Start with [Run]: it executes
// a [Runbook]'s steps in their fixed order, skips a step whose needs did not
// pass, and returns a [Report] whose exit code is decided here and nowhere
// else.
//
// Steps never print. They return a [Result]; the output package renders the
// report for people and machines.
package runbook

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
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

// Exit codes. Every command documents these in its help; [Report.ExitCode]
// and cmd/krbops are the only places that choose one.
const (
	ExitOK         = 0   // every step passed (warnings allowed unless --strict)
	ExitFail       = 1   // a check failed
	ExitUsage      = 2   // usage or configuration error; nothing was checked
	ExitIncomplete = 3   // could not complete: a dependency was unreachable
	ExitCancelled  = 130 // interrupted by SIGINT/SIGTERM
)

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
	Run       func(ctx context.Context, st *State) Result
}

// Runbook is an ordered list of steps for one command.
type Runbook struct {
	Command string
	Steps   []Step
}

// State carries values from earlier steps to later ones (a loaded config, a
// probe's offset). It is not safe for concurrent use: steps run in order.
type State struct {
	values   map[string]any
	results  map[string]StepResult
	findings []Finding
}

// NewState returns an empty state.
func NewState() *State {
	return &State{values: map[string]any{}, results: map[string]StepResult{}}
}

// Set stores a value for later steps.
func (s *State) Set(key string, v any) { s.values[key] = v }

// Get returns a stored value.
func (s *State) Get(key string) (any, bool) {
	v, ok := s.values[key]
	return v, ok
}

// ResultOf returns the result of a step that already ran.
func (s *State) ResultOf(id string) (StepResult, bool) {
	r, ok := s.results[id]
	return r, ok
}

// Value returns a stored value of type T, or the zero value and false.
func Value[T any](s *State, key string) (T, bool) {
	v, ok := s.values[key]
	if !ok {
		var zero T
		return zero, false
	}
	t, ok := v.(T)
	return t, ok
}

// StepResult is a step's result with its identity and timing.
type StepResult struct {
	ID        string
	Title     string
	Group     string
	DecidedBy string
	Result
	Duration time.Duration
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
	// Status is the overall verdict: pass, warn, fail, error or cancelled.
	Status   string
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

// Run executes rb's steps in order. It never returns an error: every
// problem is a step result, and a cancelled context turns the remaining
// steps into skips and the report into "cancelled".
func Run(ctx context.Context, rb Runbook, opts Options) *Report {
	now, since := opts.Now, opts.Since
	if now == nil {
		now = time.Now
	}
	if since == nil {
		since = time.Since
	}
	st := NewState()
	rep := &Report{
		Schema:        Schema,
		Command:       rb.Command,
		CorrelationID: opts.CorrelationID,
		StartedAt:     now(),
		Strict:        opts.Strict,
	}
	for _, step := range rb.Steps {
		sr := StepResult{ID: step.ID, Title: step.Title, Group: step.Group, DecidedBy: step.DecidedBy}
		begin := now()
		switch {
		case ctx.Err() != nil:
			rep.Cancelled = true
			sr.Result = Result{Status: Skip, Message: "skipped: run was cancelled"}
		default:
			if reason := unmetNeeds(st, step); reason != "" {
				sr.Result = Result{Status: Skip, Message: reason}
			} else {
				sr.Result = runStep(ctx, step, st)
				if ctx.Err() != nil && sr.Status == Error {
					rep.Cancelled = true
				}
			}
		}
		sr.Duration = since(begin)
		if sr.Status == "" {
			sr.Status = Error
			sr.Message = "step returned no status (bug in krbops)"
		}
		// Findings and metrics live in the report only, so a run over many
		// files holds one copy of each.
		st.findings = append(st.findings, sr.Findings...)
		rep.Metrics = append(rep.Metrics, sr.Metrics...)
		sr.Findings, sr.Metrics = nil, nil
		st.results[step.ID] = sr
		rep.Steps = append(rep.Steps, sr)
		rep.Summary.add(sr.Status)
		if opts.OnStep != nil {
			opts.OnStep(sr)
		}
	}
	rep.Findings = st.findings
	rep.Duration = since(rep.StartedAt)
	rep.Status, rep.ExitCode = verdict(rep)
	return rep
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

func unmetNeeds(st *State, step Step) string {
	var failed []string
	for _, need := range step.Needs {
		r, ok := st.results[need]
		switch {
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

// verdict is the one place an exit code is chosen from step results.
// Precedence: cancelled (130) > a failed check (1) > incomplete (3) > ok (0).
// A definite failure outranks "could not check" because it is what the
// on-call must act on first. A fail finding counts as a failed check and a
// warn finding as a warning, whatever its step's status.
func verdict(rep *Report) (string, int) {
	if rep.Cancelled {
		return "cancelled", ExitCancelled
	}
	var fail, errs, warn bool
	for _, sr := range rep.Steps {
		if !counts(rep, sr) {
			continue
		}
		switch sr.Status {
		case Fail:
			fail = true
		case Error:
			errs = true
		case Warn:
			warn = true
		}
	}
	fc := CountFindings(rep.Findings)
	fail = fail || fc.Fail > 0
	warn = warn || fc.Warn > 0
	switch {
	case fail, warn && rep.Strict:
		return "fail", ExitFail
	case errs:
		return "error", ExitIncomplete
	case warn:
		return "warn", ExitOK
	default:
		return "pass", ExitOK
	}
}

// ExitError carries an exit code out of a command with a message already
// formatted for the terminal (one lower-case line plus an optional hint).
type ExitError struct {
	Code int
	Err  error
	Hint string
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// UsageError is a usage or configuration error: exit 2.
func UsageError(err error, hint string) *ExitError {
	return &ExitError{Code: ExitUsage, Err: err, Hint: hint}
}

// ExitCodeOf maps an error returned by a command to its exit code.
func ExitCodeOf(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	if errors.Is(err, context.Canceled) {
		return ExitCancelled
	}
	return ExitIncomplete
}
