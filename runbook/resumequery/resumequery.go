// Package resumequery is the resume-query runbook: the table and its
// checkpoint, each worker's Kerberos ticket, the clock against the
// endpoint, the duration estimate, then every segment in parallel, each
// its own step. Start with [Query.Steps].
package resumequery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/krbops/krbops/dynamo"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/clock"
)

// runbook.Step ids of the resume-query runbook. Segment steps are
// "query.segment:" followed by the segment number, one per segment.
const (
	StepTable    = "query.table"
	StepTicket   = "query.ticket"
	StepClock    = "query.aws-clock"
	StepEstimate = "query.estimate"
	StepSegment  = "query.segment"
)

// SegmentID is the step id of one segment.
func SegmentID(seg int) string { return StepSegment + ":" + strconv.Itoa(seg) }

// Query describes one resume-query run over a prepared plan.
type Query struct {
	Plan     *dynamo.Plan
	Timeout  time.Duration
	WarnSkew time.Duration // clock offset that warns; beyond clock.SigV4MaxSkew fails
	Log      *slog.Logger
	// Hint words the hint of an error that stopped the run for people
	// (flag names); nil uses the error's own hint.
	Hint func(err error) string
	// ProbeHTTP defaults to kdcops.HTTPDateOffsetTLS with the plan's
	// --ca-bundle; tests replace it.
	ProbeHTTP func(ctx context.Context, endpoint string) (*kdcops.SourceSample, error)
}

// Steps returns the runbook: the table and checkpoint, the workers'
// tickets (Kerberos-backed runs only), the clock against the endpoint,
// the duration estimate, then one step per segment, all segments in one
// parallel group: each step reads its own segment (taking a worker in
// segment order) and reports its own duration.
func (q Query) Steps() []runbook.Step {
	if q.ProbeHTTP == nil {
		q.ProbeHTTP = func(ctx context.Context, endpoint string) (*kdcops.SourceSample, error) {
			return kdcops.HTTPDateOffsetTLS(ctx, endpoint, q.Timeout, q.Plan.TLSConfig(), q.Log)
		}
	}
	if q.WarnSkew <= 0 {
		q.WarnSkew = 60 * time.Second
	}
	steps := []runbook.Step{{ID: StepTable, Title: "table and checkpoint", Run: q.table}}
	needs := []string{StepTable, StepClock}
	if q.Plan.Kerberos() {
		steps = append(steps, runbook.Step{ID: StepTicket, Title: "each worker's Kerberos ticket", Run: q.ticket})
		needs = append(needs, StepTicket)
	}
	steps = append(steps,
		runbook.Step{ID: StepClock, Title: "clock against the DynamoDB endpoint", Run: q.clock},
		runbook.Step{ID: StepEstimate, Title: "estimated duration against the ticket", Run: q.estimate},
	)
	r := &run{}
	n := q.Plan.Config().Spec.Segments
	for i := range n {
		steps = append(steps, runbook.Step{
			ID:       SegmentID(i),
			Title:    fmt.Sprintf("segment %d of %d", i, n),
			Needs:    needs,
			Parallel: StepSegment,
			Run:      func(ctx context.Context, _ *runbook.State) runbook.Result { return q.segment(ctx, r, i) },
		})
	}
	return steps
}

// run is what the segment steps of one run share: the dynamo session the
// first of them opens.
type run struct {
	once    sync.Once
	session *dynamo.Session
}

func (r *run) begin(ctx context.Context, p *dynamo.Plan) *dynamo.Session {
	r.once.Do(func() { r.session = p.Begin(ctx) })
	return r.session
}

func (q Query) table(context.Context, *runbook.State) runbook.Result {
	p := q.Plan
	cfg := p.Config()
	start := p.Start()
	var done int
	var items int64
	for _, s := range start.Segments {
		if s.Done {
			done++
		}
		items += s.Items
	}
	ev := runbook.Evidence{
		"table": p.Table.Name, "table_arn": p.Table.ARN, "key_schema": p.Table.KeySchema,
		"item_count": p.Table.ItemCount, "size_bytes": p.Table.SizeBytes,
		"operation": cfg.Spec.Operation(), "segments": cfg.Spec.Segments, "workers": len(p.Workers),
		"checkpoint": cfg.Checkpoint, "output": cfg.Out, "resumed": p.Resumed,
		"segments_done": done, "items_committed": items, "output_bytes": start.OutputBytes,
	}
	// Prepare's own requests (DescribeTable, the first page) may have
	// been retried or refreshed too: count them here, not lose them.
	ev["prepare_retries"], ev["prepare_refreshes"] = p.PrepareStats()
	if cfg.Spec.Index != "" {
		ev["index"] = cfg.Spec.Index
	}
	what := fmt.Sprintf("%s of table %s (%d items, %s)", cfg.Spec.Operation(), p.Table.Name, p.Table.ItemCount, humanBytes(p.Table.SizeBytes))
	if cfg.Spec.Index != "" {
		what = fmt.Sprintf("%s of index %s of table %s (%d items, %s)", cfg.Spec.Operation(), cfg.Spec.Index, p.Table.Name, p.Table.ItemCount, humanBytes(p.Table.SizeBytes))
	}
	if !p.Resumed {
		return runbook.Passf("%s in %d segments; new checkpoint %s", what, cfg.Spec.Segments, cfg.Checkpoint).With(ev)
	}
	return runbook.Passf("%s; resuming checkpoint %s: %d of %d segments done, %d items committed", what, cfg.Checkpoint, done, cfg.Spec.Segments, items).With(ev)
}

func (q Query) ticket(ctx context.Context, _ *runbook.State) runbook.Result {
	infos, err := q.Plan.LoginAll(ctx)
	if err != nil {
		return kerberosResult(err)
	}
	margin := q.Plan.Config().TicketMargin
	first, least := infos[0], infos[0]
	for _, in := range infos {
		if in.EndTime.Before(least.EndTime) {
			least = in
		}
	}
	left := time.Until(least.EndTime)
	ev := runbook.Evidence{
		"principal": first.Principal, "workers": len(infos), "end_time": least.EndTime.UTC(),
		"remaining_seconds": runbook.Seconds(left), "lifetime_seconds": runbook.Seconds(least.Lifetime), "margin_seconds": runbook.Seconds(margin),
	}
	if least.Lifetime <= margin {
		return runbook.Warnf("the KDC issues %s tickets to %s, not more than --ticket-margin %s: workers log in again after half the lifetime",
			roundDur(least.Lifetime), first.Principal, margin).
			WithHint("lower --ticket-margin below the ticket lifetime, or raise the principal's maxlife").With(ev)
	}
	return runbook.Passf("%d workers logged in as %s, each with its own ticket: %s left (until %s)",
		len(infos), first.Principal, roundDur(left), least.EndTime.UTC().Format(time.RFC3339)).With(ev)
}

func kerberosResult(err error) runbook.Result {
	var ke *dynamo.KerberosError
	if errors.As(err, &ke) {
		r := runbook.Failf("%s", ke.Error())
		if ke.Unreachable {
			r = runbook.Errorf("%s", ke.Error())
		}
		return r.WithHint("%s", ke.Hint()).With(runbook.Evidence{"principal": ke.Principal, "unreachable": ke.Unreachable})
	}
	return runbook.Errorf("%s", err.Error())
}

func (q Query) clock(ctx context.Context, _ *runbook.State) runbook.Result {
	ep := q.Plan.Endpoint()
	if ep == "" {
		return runbook.Errorf("no DynamoDB endpoint to compare with").WithHint("pass --endpoint-url or --region")
	}
	s, err := q.ProbeHTTP(ctx, ep)
	if err != nil {
		return runbook.Errorf("%s", err.Error()).WithHint("check --endpoint-url and the network").With(runbook.Evidence{"endpoint": ep})
	}
	ev := runbook.Evidence{"endpoint": ep, "offset_seconds": runbook.Seconds(s.Offset), "uncertainty_seconds": runbook.Seconds(s.Uncertainty)}
	off := abs(s.Offset)
	switch {
	case off-s.Uncertainty > clock.SigV4MaxSkew:
		return runbook.Failf("this host is %.1fs off the endpoint's clock, beyond SigV4's 5 minutes: every request would be refused", s.Offset.Seconds()).
			WithHint("fix this host's clock (chronyc tracking; chronyc makestep), then resume").With(ev)
	case off > q.WarnSkew:
		return runbook.Warnf("this host is %.1fs off the endpoint's clock (SigV4 refuses beyond 5 minutes)", s.Offset.Seconds()).
			WithHint("check chrony/ntpd on this host").With(ev)
	}
	return runbook.Passf("endpoint %s: clock offset %.3fs ± %.3fs", ep, s.Offset.Seconds(), s.Uncertainty.Seconds()).With(ev)
}

func (q Query) estimate(context.Context, *runbook.State) runbook.Result {
	p := q.Plan
	e := p.Estimate()
	ev := runbook.Evidence{"item_count": e.ItemCount, "remaining_items": e.Remaining, "estimated_seconds": runbook.Seconds(e.Duration),
		"page_seconds": runbook.Seconds(e.PageLatency), "page_items": e.PageItems, "parallel": e.Parallel}
	if p.Start().Done() {
		return runbook.Passf("nothing left to read: every segment is done").With(ev)
	}
	if !e.Known {
		return runbook.Passf("no estimate: DescribeTable reports %d items (AWS refreshes the count about every six hours); a page took %s",
			e.ItemCount, roundDur(e.PageLatency)).With(ev)
	}
	upper := ""
	if !p.Config().Spec.Scan {
		upper = "at most "
	}
	msg := fmt.Sprintf("%s%s for ~%d items (%d in parallel, %s per page of %d)",
		upper, roundDur(e.Duration), e.Remaining, e.Parallel, roundDur(e.PageLatency), e.PageItems)
	if !p.Kerberos() {
		return runbook.Passf("%s", msg).With(ev)
	}
	var least time.Time
	for _, w := range p.Workers {
		if end := w.Krb.Info().EndTime; !end.IsZero() && (least.IsZero() || end.Before(least)) {
			least = end
		}
	}
	if least.IsZero() {
		return runbook.Passf("%s", msg).With(ev)
	}
	left := time.Until(least)
	ev["ticket_remaining_seconds"] = runbook.Seconds(left)
	if left < e.Duration {
		return runbook.Warnf("%s; the ticket has %s left, less than that: each worker will log in again from the keytab when less than %s is left, without stopping",
			msg, roundDur(left), p.Config().TicketMargin).
			WithHint("nothing to do: with --keytab each worker logs in again by itself (see the ticket requests in --log-file)").With(ev)
	}
	return runbook.Passf("%s; the ticket's %s left cover it", msg, roundDur(left)).With(ev)
}

func (q Query) segment(ctx context.Context, rn *run, seg int) runbook.Result {
	session := rn.begin(ctx, q.Plan)
	r := session.Segment(seg)
	s := r.State
	ev := runbook.Evidence{
		"segment": seg, "items": r.Items, "pages": r.Pages, "scanned": r.Scanned, "retries": r.Retries,
		"refreshes": r.Refreshes, "capacity_units": round3(r.CapacityUnits), "items_total": s.Items,
		"pages_total": s.Pages, "done": s.Done, "resumed": r.Resumed, "outcome": string(r.Outcome),
	}
	if r.Worker >= 0 {
		ev["worker"] = r.Worker
	}
	counts := fmt.Sprintf("%d items in %d pages (%d retries, %d refreshes)", r.Items, r.Pages, r.Retries, r.Refreshes)
	switch r.Outcome {
	case dynamo.OutcomeDone:
		if fb := q.fallback(r.Worker); fb.Fallbacks > 0 {
			// The run completed, but on the second principal: the
			// primary's key is broken or being rotated.
			ev["fallback_logins"], ev["fallback_principal"] = fb.Fallbacks, fb.FallbackPrincipal
			return runbook.Warnf("done: %s; worker %d fell back to %s (%d logins): %s's key failed",
				counts, r.Worker, fb.FallbackPrincipal, fb.Fallbacks, fb.Primary).
				WithHint("fix the primary principal's keytab (see \"ticket fallback\" in --log-file); the next run tries it first again").With(ev)
		}
		if r.Resumed {
			return runbook.Passf("done: %s, resumed from the checkpoint; %d items in all", counts, s.Items).With(ev)
		}
		return runbook.Passf("done: %s", counts).With(ev)
	case dynamo.OutcomeAlreadyDone:
		return runbook.Passf("done in an earlier run: %d items in %d pages", s.Items, s.Pages).With(ev)
	case dynamo.OutcomeCancelled:
		return runbook.Errorf("interrupted after %s; committed pages are kept", counts).
			WithHint("resume with the same command").With(ev)
	case dynamo.OutcomeStopped:
		return runbook.Result{Status: runbook.Skip, Message: fmt.Sprintf("stopped after %s: segment %d failed", counts, session.StoppedBy()),
			Hint: "resume with the same command once the cause is fixed", Evidence: ev}.With(runbook.Evidence{"stopped_by": session.StoppedBy()})
	}
	return q.failedSegment(r.Err, counts).With(ev)
}

// fallback describes the ticket of the worker that read a segment.
func (q Query) fallback(worker int) dynamo.TicketInfo {
	if worker < 0 || worker >= len(q.Plan.Workers) || q.Plan.Workers[worker].Krb == nil {
		return dynamo.TicketInfo{}
	}
	return q.Plan.Workers[worker].Krb.Info()
}

// failedSegment turns the error that stopped the run into the segment's
// result. dynamo's errors carry their class (internal/fault): a denial or
// a refused login is a failed check (1), a wrong expression or an
// untrusted certificate of the operator's endpoint is local input (2),
// what could not be completed (budget, disk, unreachable) is an error (3).
func (q Query) failedSegment(err error, counts string) runbook.Result {
	msg := fmt.Sprintf("%s (after %s)", err.Error(), counts)
	ev := runbook.Evidence{}
	var pe *dynamo.PermissionError
	var ae *dynamo.AuthError
	var ke *dynamo.KerberosError
	var be *dynamo.BrokerError
	var re *dynamo.RequestError
	switch {
	case errors.As(err, &pe):
		msg = fmt.Sprintf("%s after %s; not retried", pe.Error(), counts)
		ev = runbook.Evidence{"error_class": string(dynamo.ClassPermission), "action": pe.Action, "resource": pe.Resource, "code": pe.Detail.Code}
	case errors.As(err, &ae):
		ev = runbook.Evidence{"error_class": string(dynamo.ClassAuth), "code": ae.Detail.Code}
	case errors.As(err, &ke):
		ev = runbook.Evidence{"principal": ke.Principal, "unreachable": ke.Unreachable}
	case errors.As(err, &be):
		ev = runbook.Evidence{"error_class": string(be.Class)}
	case errors.As(err, &re):
		ev = runbook.Evidence{"error_class": string(re.Detail.Class), "code": re.Detail.Code}
	}
	var r runbook.Result
	switch fault.ClassOf(err) {
	case fault.CheckFailed:
		r = runbook.Failf("%s", msg)
	case fault.Usage:
		r = runbook.Usagef("%s", msg)
	default:
		r = runbook.Errorf("%s", msg)
	}
	return r.WithHint("%s", q.hint(err)).With(ev)
}

// hint is what to do after err: in the command's words when it gave a
// Hint function, else the error's own.
func (q Query) hint(err error) string {
	h := ""
	if q.Hint != nil {
		h = q.Hint(err)
	} else {
		h = fault.HintOf(err)
	}
	if h == "" {
		h = "resume with the same command"
	}
	return h
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Hour:
		return d.Round(time.Minute)
	case d >= time.Minute:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
