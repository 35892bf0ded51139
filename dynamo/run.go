package dynamo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/krbops/krbops/internal/awserr"
	"github.com/krbops/krbops/internal/fault"
)

// Outcome is how a segment ended in one run.
type Outcome string

const (
	OutcomeDone        Outcome = "done"         // finished in this run
	OutcomeAlreadyDone Outcome = "already-done" // finished by an earlier run
	OutcomeFailed      Outcome = "failed"       // its own error stopped the run
	OutcomeStopped     Outcome = "stopped"      // another segment's error stopped the run
	OutcomeCancelled   Outcome = "cancelled"    // SIGINT/SIGTERM
)

// SegmentResult is one segment's part in a run. Items, Pages, Scanned and
// CapacityUnits count this run; State holds the totals over all runs.
type SegmentResult struct {
	Segment       int
	Worker        int
	Outcome       Outcome
	Err           error // why it failed (OutcomeFailed), or what stopped it
	Resumed       bool  // continued from a checkpointed key
	Items         int64
	Pages         int64
	Scanned       int64
	CapacityUnits float64
	Retries       int
	Refreshes     int
	State         SegmentState
	Duration      time.Duration
}

// RunResult is the outcome of Plan.Run.
type RunResult struct {
	Segments  []SegmentResult
	Stop      error // the error that stopped the run; nil when complete or cancelled
	StoppedBy int   // the segment whose error it was (-1 for the run itself)
	Cancelled bool
	Duration  time.Duration
	Output    string
	Bytes     int64 // committed output length after the run
}

// WriteError is a failure to write the output or the checkpoint. Disk
// full and permission errors are not retried.
type WriteError struct {
	Path string
	Err  error
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("writing %s: %s", e.Path, describeFileErr(e.Err))
}
func (e *WriteError) Unwrap() error { return e.Err }

// Hint says what to do next.
func (e *WriteError) Hint() string {
	return "free space or fix permissions, then resume with the same command: committed pages are kept"
}

// FaultClass: the run could not complete (fault.Unreachable).
func (e *WriteError) FaultClass() fault.Class { return fault.Unreachable }

// page is one response, reduced to what a run keeps.
type page struct {
	items   []map[string]types.AttributeValue
	lek     map[string]types.AttributeValue
	scanned int64
	cu      float64
}

// fetch sends one Scan or Query for segment seg from key.
func (p *Plan) fetch(ctx context.Context, w *Worker, seg int, key map[string]types.AttributeValue) (page, error) {
	s := p.cfg.Spec
	var limit *int32
	if s.PageSize > 0 {
		limit = aws.Int32(s.PageSize)
	}
	var names map[string]string
	if len(s.Names) > 0 {
		names = s.Names
	}
	var values map[string]types.AttributeValue
	if len(s.Values) > 0 {
		values = s.Values
	}
	proj := optional(s.Projection)
	if s.Scan {
		in := &dynamodb.ScanInput{
			TableName: aws.String(s.Table), IndexName: optional(s.Index), FilterExpression: optional(s.Filter),
			ProjectionExpression: proj, ExpressionAttributeNames: names, ExpressionAttributeValues: values,
			ConsistentRead: optionalBool(s.Consistent), Limit: limit, ExclusiveStartKey: key,
			ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
		}
		if s.Segments > 1 {
			in.Segment, in.TotalSegments = aws.Int32(int32(seg)), aws.Int32(int32(s.Segments))
		}
		out, err := w.API.Scan(ctx, in)
		if err != nil {
			return page{}, err
		}
		return page{items: out.Items, lek: out.LastEvaluatedKey, scanned: int64(out.ScannedCount), cu: capacity(out.ConsumedCapacity)}, nil
	}
	in := &dynamodb.QueryInput{
		TableName: aws.String(s.Table), IndexName: optional(s.Index), KeyConditionExpression: optional(s.KeyCondition),
		FilterExpression: optional(s.Filter), ProjectionExpression: proj, ExpressionAttributeNames: names,
		ExpressionAttributeValues: values, ConsistentRead: optionalBool(s.Consistent), Limit: limit,
		ExclusiveStartKey: key, ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
	}
	out, err := w.API.Query(ctx, in)
	if err != nil {
		return page{}, err
	}
	return page{items: out.Items, lek: out.LastEvaluatedKey, scanned: int64(out.ScannedCount), cu: capacity(out.ConsumedCapacity)}, nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

func optionalBool(b bool) *bool {
	if !b {
		return nil
	}
	return aws.Bool(true)
}

func capacity(c *types.ConsumedCapacity) float64 {
	if c == nil {
		return 0
	}
	return aws.ToFloat64(c.CapacityUnits)
}

// call sends one request (send) with a run's error policy and returns nil
// or the error that must stop the run:
//
//   - authentication: refresh the worker's ticket and credentials
//     (invalidating the SDK's cache, which never does so itself) and
//     resend the same request; a second authentication failure before any
//     success is an *AuthError.
//   - permission: a *PermissionError at once, never retried.
//   - transient: full-jitter backoff, each retry paid from the shared
//     retry budget; an empty budget is a *BudgetError.
//   - TLS: never retried; the broker's *BrokerError when the handshake
//     with the broker failed, else a *RequestError.
//   - anything else: a *RequestError.
//
// Every failure is logged with its class before it is acted on.
func (p *Plan) call(ctx context.Context, w *Worker, seg int, op string, res *SegmentResult, send func(context.Context) error) error {
	log := logFrom(ctx, w.Log)
	refreshed := false
	attempt := 0
	transient := func(c Classified) error {
		if !p.budget.Spend() {
			return &BudgetError{Budget: p.budget.Max, Last: c}
		}
		res.Retries++
		d := p.backoff.Delay(attempt)
		attempt++
		log.LogAttrs(ctx, slog.LevelInfo, "retry", slog.String("operation", op), slog.Int("attempt", attempt),
			slog.Float64("delay_seconds", d.Seconds()))
		return sleep(ctx, d)
	}
	for {
		if w.Krb != nil {
			if err := w.Krb.Ensure(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				var ke *KerberosError
				if errors.As(err, &ke) && ke.Unreachable {
					if err := transient(Classify(err)); err != nil {
						return err
					}
					continue
				}
				return err
			}
		}
		if err := p.limiter.Wait(ctx); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
		err := send(rctx)
		cancel()
		if err == nil {
			p.budget.Earn()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c := Classify(err)
		attrs := []slog.Attr{slog.String("operation", op), slog.String("table", p.cfg.Spec.Table),
			slog.String("class", string(c.Class)), slog.String("code", c.Code), slog.String("message", c.Message),
			slog.Int("http_status", c.HTTPStatus), slog.Int("attempt", attempt+1)}
		if c.RequestID != "" {
			attrs = append(attrs, slog.String("request_id", c.RequestID))
		}
		if c.Class == ClassTLS {
			attrs = append(attrs, slog.String("tls_host", c.TLSHost), slog.String("tls_reason", string(c.TLSReason)))
		}
		log.LogAttrs(ctx, slog.LevelWarn, "aws error", attrs...)
		switch c.Class {
		case ClassAuth:
			if refreshed {
				return &AuthError{Segment: seg, Detail: c}
			}
			res.Refreshes++
			if err := w.refresh(ctx, "authentication-failure"); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if rc := Classify(err); rc.Class == ClassTransient {
					if err := transient(rc); err != nil {
						return err
					}
					continue
				}
				return err
			}
			refreshed = true
		case ClassPermission:
			return &PermissionError{Action: "dynamodb:" + op, Resource: p.Table.Resource(), Segment: seg, Detail: c}
		case ClassTransient:
			if c.HTTPStatus != 0 {
				// The service answered past its signature check: the
				// refreshed credentials were accepted.
				refreshed = false
			}
			if err := transient(c); err != nil {
				return err
			}
		case ClassTLS:
			var be *BrokerError
			if errors.As(err, &be) {
				return be
			}
			return &RequestError{Operation: op, Detail: c, CustomEndpoint: p.customEndpoint}
		default:
			return &RequestError{Operation: op, Detail: c, CustomEndpoint: p.customEndpoint}
		}
	}
}

// refresh gets the worker a new ticket (a fresh AS exchange from the
// keytab) and new credentials. The SDK caches credentials until their
// expiry and never drops them on ExpiredTokenException, so the cache is
// invalidated here and refilled at once, which surfaces a broker failure
// now rather than inside the resent request.
func (w *Worker) refresh(ctx context.Context, reason string) error {
	log := logFrom(ctx, w.Log)
	log.LogAttrs(ctx, slog.LevelInfo, "credentials refresh", slog.String("reason", reason))
	if w.Krb != nil {
		if err := w.Krb.Login(ctx, reason); err != nil {
			return err
		}
	}
	if w.Creds == nil {
		return nil
	}
	w.Creds.Invalidate()
	if _, err := w.Creds.Retrieve(ctx); err != nil {
		// The cache wraps the provider's error; return the typed one,
		// whose text is ours and safe.
		var be *BrokerError
		var ke *KerberosError
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &be):
			return be
		case errors.As(err, &ke):
			return ke
		}
		// A standard-chain provider's error can quote a credential_process
		// helper's output: replace it. A TLS failure (an SSO or STS
		// endpoint behind an untrusted certificate) is described from its
		// typed errors only, so it is kept.
		if c := awserr.Classify(err); c.Class == ClassTLS {
			return &RequestError{Operation: "credentials", Detail: c}
		}
		return &RequestError{Operation: "credentials", Detail: Classified{Class: ClassCredentials,
			Message: "the standard AWS credential chain could not refresh the credentials"}}
	}
	log.LogAttrs(ctx, slog.LevelInfo, "credentials refreshed", slog.String("reason", reason))
	return nil
}

// committer appends pages to the output and replaces the checkpoint, one
// page at a time: items are written at the committed length, fsynced,
// and only then is the checkpoint that counts them made durable. A crash
// in between leaves bytes past the committed length, which the next
// resume truncates: every page is in the output exactly once.
type committer struct {
	mu     sync.Mutex
	out    *os.File
	outPth string
	// qmu guards the queue of pages waiting for the commit being
	// written, and whether a caller is writing (leading).
	qmu     sync.Mutex
	queue   []*queued
	leading bool
	cpPth   string
	cp      *Checkpoint
	err     error // sticky: after a failed write nothing more is committed
}

func (c *committer) state(seg int) SegmentState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cp.Segments[seg]
}

func (c *committer) writeCheckpoint() error {
	c.cp.UpdatedAt = time.Now().UTC()
	data, err := c.cp.Encode()
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(c.cpPth, data, 0o600); err != nil {
		return &WriteError{Path: c.cpPth, Err: err}
	}
	return nil
}

// queued is one page waiting in the committer's queue.
type queued struct {
	seg        int
	items      []byte
	n, scanned int64
	cu         float64
	lek        json.RawMessage
	done       bool
	err        error
	ready      chan struct{}
}

// commit makes one page durable and returns when it is: its items are in
// the output (fsynced) and a checkpoint that counts them has replaced the
// old one. Pages that arrive while a commit is being written wait and are
// then committed together — one output fsync and one checkpoint replace
// for all of them (group commit) — so the workers do not queue behind
// three fsyncs each. Each page is still a unit: a crash leaves every page
// either wholly counted by the checkpoint or truncated away on resume.
func (c *committer) commit(seg int, items []byte, n, scanned int64, cu float64, lek json.RawMessage, done bool) error {
	pg := &queued{seg: seg, items: items, n: n, scanned: scanned, cu: cu, lek: lek, done: done, ready: make(chan struct{})}
	c.qmu.Lock()
	c.queue = append(c.queue, pg)
	if c.leading {
		c.qmu.Unlock()
		<-pg.ready
		return pg.err
	}
	// This caller writes batches until the queue is empty; pages arriving
	// meanwhile join the next batch.
	c.leading = true
	for len(c.queue) > 0 {
		batch := c.queue
		c.queue = nil
		c.qmu.Unlock()
		c.commitBatch(batch)
		c.qmu.Lock()
	}
	c.leading = false
	c.qmu.Unlock()
	<-pg.ready
	return pg.err
}

func (c *committer) commitBatch(batch []*queued) {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.writeBatch(batch)
	for _, pg := range batch {
		pg.err = err
		close(pg.ready)
	}
}

func (c *committer) writeBatch(batch []*queued) error {
	if c.err != nil {
		return c.err
	}
	off := c.cp.OutputBytes
	end := off
	for _, pg := range batch {
		if len(pg.items) == 0 {
			continue
		}
		// WriteAt the committed length, not the file position: after a
		// failed partial write the next page must not land behind it.
		if _, err := c.out.WriteAt(pg.items, end); err != nil {
			c.err = &WriteError{Path: c.outPth, Err: err}
			return c.err
		}
		end += int64(len(pg.items))
	}
	if end > off {
		if err := c.out.Sync(); err != nil {
			c.err = &WriteError{Path: c.outPth, Err: err}
			return c.err
		}
	}
	prev := slices.Clone(c.cp.Segments)
	at := off
	for _, pg := range batch {
		s := &c.cp.Segments[pg.seg]
		s.Items += pg.n
		s.Scanned += pg.scanned
		s.Pages++
		s.Bytes += int64(len(pg.items))
		s.CapacityUnits += pg.cu
		s.LastEvaluatedKey, s.Done = pg.lek, pg.done
		at += int64(len(pg.items))
		s.Offset = at
	}
	c.cp.OutputBytes = end
	if err := c.writeCheckpoint(); err != nil {
		// Keep the in-memory state equal to the file on disk.
		c.cp.Segments, c.cp.OutputBytes = prev, off
		c.err = err
		return err
	}
	return nil
}

// Run reads every unfinished segment, Workers at a time, and commits each
// page as a unit. It runs once; later calls return the first result. A
// cancelled ctx (SIGINT) stops at the next page boundary: in-flight
// requests are abandoned uncommitted.
func (p *Plan) Run(ctx context.Context) *RunResult {
	p.runOnce.Do(func() {
		s := p.Begin(ctx)
		var wg sync.WaitGroup
		for seg := range p.cfg.Spec.Segments {
			wg.Go(func() { s.Segment(seg) })
		}
		wg.Wait()
		p.result = s.End()
	})
	return p.result
}

// Session is one run over a prepared plan. [Plan.Begin] opens it; each
// segment is then read by one [Session.Segment] call, from as many
// goroutines as the caller likes (the runbook gives every segment its own
// step): segments take a worker in segment order, Workers at a time, as a
// queue would hand them out. When the last Segment call returns the
// output file is closed and [Session.End] has the run's result.
type Session struct {
	p       *Plan
	parent  context.Context // the caller's: tells a SIGINT from a stop
	runCtx  context.Context // cancelled by the first failure (stopRun)
	stop    context.CancelCauseFunc
	began   time.Time
	openErr error // the output or checkpoint could not be set up
	out     *os.File
	c       *committer
	workers chan *Worker
	// turn[i] closes when segment i may wait for a worker: segments start
	// in order even when their goroutines are scheduled in any order.
	turn     []chan struct{}
	once     []sync.Once
	stopOnce sync.Once
	left     sync.WaitGroup // Segment calls still to finish

	mu  sync.Mutex // guards res.Stop/StoppedBy against End
	res *RunResult
}

// Begin opens a run: truncates the output to what the checkpoint
// committed (a killed run may have written past it) and writes the
// checkpoint before the first page, so a crash at any point leaves a
// checkpoint that owns the output file.
func (p *Plan) Begin(ctx context.Context) *Session {
	n := p.cfg.Spec.Segments
	s := &Session{p: p, parent: ctx, began: time.Now(), workers: make(chan *Worker, len(p.Workers)),
		turn: make([]chan struct{}, n+1), once: make([]sync.Once, n)}
	p.prog.began.Store(s.began.UnixNano())
	s.runCtx, s.stop = context.WithCancelCause(ctx)
	s.res = &RunResult{Segments: make([]SegmentResult, n), StoppedBy: -1, Output: p.cfg.Out}
	for i := range s.turn {
		s.turn[i] = make(chan struct{})
	}
	close(s.turn[0])
	for _, w := range p.Workers {
		s.workers <- w
	}
	s.left.Add(n)
	for i, st := range p.cp.Segments {
		s.res.Segments[i] = SegmentResult{Segment: i, Worker: -1, State: st}
		if st.Done {
			p.prog.segsDone.Add(1)
		}
	}
	s.openErr = s.open()
	if s.openErr != nil {
		s.res.Stop = s.openErr
	}
	p.session = s
	return s
}

func (s *Session) open() error {
	p := s.p
	out, err := os.OpenFile(p.cfg.Out, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return &WriteError{Path: p.cfg.Out, Err: err}
	}
	s.out = out
	// Drop what a killed run wrote after its last commit.
	if err := out.Truncate(p.cp.OutputBytes); err != nil {
		return &WriteError{Path: p.cfg.Out, Err: err}
	}
	if err := out.Sync(); err != nil {
		return &WriteError{Path: p.cfg.Out, Err: err}
	}
	s.c = &committer{out: out, outPth: p.cfg.Out, cpPth: p.cfg.Checkpoint, cp: p.cp}
	if !p.cpOnDisk {
		if err := s.c.writeCheckpoint(); err != nil {
			return err
		}
		p.cpOnDisk = true
	}
	return nil
}

// stopRun stops every worker at once: their in-flight requests are
// abandoned, nothing more is sent.
func (s *Session) stopRun(seg int, err error) {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.res.Stop, s.res.StoppedBy = err, seg
		s.mu.Unlock()
		s.p.cfg.Log.LogAttrs(s.parent, slog.LevelWarn, "run stopped", slog.Int("segment", seg), slog.String("error", err.Error()))
		s.stop(err)
	})
}

// Segment reads segment seg to its end or until the run stops, and
// returns its part in the run. A second call for the same segment returns
// the first call's result.
func (s *Session) Segment(seg int) SegmentResult {
	s.once[seg].Do(func() {
		defer s.left.Done()
		s.res.Segments[seg] = s.segment(seg)
	})
	return s.res.Segments[seg]
}

func (s *Session) segment(seg int) SegmentResult {
	p := s.p
	r := s.res.Segments[seg]
	passTurn := func() { close(s.turn[seg+1]) }
	if r.State.Done {
		passTurn()
		r.Outcome = OutcomeAlreadyDone
		return r
	}
	if s.openErr != nil {
		passTurn()
		r.Outcome, r.Err = OutcomeFailed, s.openErr
		return r
	}
	var w *Worker
	select {
	case <-s.turn[seg]:
		select {
		case w = <-s.workers:
		case <-s.runCtx.Done():
		}
	case <-s.runCtx.Done():
	}
	passTurn()
	if w == nil {
		return s.neverStarted(seg)
	}
	defer func() { s.workers <- w }()
	if s.runCtx.Err() != nil {
		return s.neverStarted(seg)
	}
	r = p.segment(s.runCtx, s.parent, w, s.c, seg, s.stopRun)
	if r.Outcome == OutcomeFailed {
		s.stopRun(seg, r.Err)
	}
	return r
}

// neverStarted is a segment the run stopped or cancelled before it got a
// worker.
func (s *Session) neverStarted(seg int) SegmentResult {
	r := s.res.Segments[seg]
	r.State = s.c.state(seg)
	r.Resumed = len(r.State.LastEvaluatedKey) > 0
	if s.parent.Err() != nil {
		r.Outcome, r.Err = OutcomeCancelled, s.parent.Err()
	} else {
		r.Outcome, r.Err = OutcomeStopped, context.Cause(s.runCtx)
	}
	return r
}

// StoppedBy is the segment whose failure stopped the run, or -1.
func (s *Session) StoppedBy() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res.StoppedBy
}

// End waits for every segment and returns the run's result; it closes the
// output file.
func (s *Session) End() *RunResult {
	s.left.Wait()
	s.close()
	res := s.res
	res.Cancelled = s.parent.Err() != nil
	res.Bytes = s.p.cp.OutputBytes
	res.Duration = time.Since(s.began)
	return res
}

func (s *Session) close() {
	s.stop(nil)
	if s.out != nil {
		s.out.Close()
		s.out = nil
	}
}

// takeProbe hands segment seg the page Prepare read from its checkpointed
// key, once: the probe's pages are their segments' first pages, not extra
// reads. Nothing else has written those segments' state since.
func (p *Plan) takeProbe(seg int) (page, bool) {
	p.probeMu.Lock()
	defer p.probeMu.Unlock()
	pg, ok := p.probePages[seg]
	if !ok {
		return page{}, false
	}
	delete(p.probePages, seg)
	return *pg, true
}

// segment reads one segment to its end or until the run stops. parent is
// the caller's context, to tell a SIGINT from another segment's stop.
func (p *Plan) segment(ctx, parent context.Context, w *Worker, c *committer, seg int, stopRun func(int, error)) SegmentResult {
	began := time.Now()
	st := c.state(seg)
	r := SegmentResult{Segment: seg, Worker: w.ID, Resumed: len(st.LastEvaluatedKey) > 0}
	log := w.Log.With("segment", seg)
	ctx = withLog(ctx, log)
	finish := func(o Outcome, err error) SegmentResult {
		r.Outcome, r.Err, r.State, r.Duration = o, err, c.state(seg), time.Since(began)
		return r
	}
	// A page's commit (write, fsync, checkpoint) runs while the same
	// worker already fetches the next page: the disk's latency hides
	// behind the network's. Commits stay in page order — the next page is
	// committed only after this one — so a crash at any point still
	// resumes from the last committed key.
	var (
		bufs     [2][]byte
		inflight chan error
		pending  page
		pendDone bool
	)
	wait := func() error {
		if inflight == nil {
			return nil
		}
		err := <-inflight
		inflight = nil
		if err != nil {
			return err
		}
		r.Items += int64(len(pending.items))
		r.Pages++
		r.Scanned += pending.scanned
		r.CapacityUnits += pending.cu
		p.prog.items.Add(int64(len(pending.items)))
		p.prog.pages.Add(1)
		p.prog.cuMilli.Add(int64(pending.cu * 1000))
		log.LogAttrs(ctx, slog.LevelDebug, "page committed", slog.Int("items", len(pending.items)),
			slog.Int64("output_bytes", c.state(seg).Offset), slog.Bool("done", pendDone))
		return nil
	}
	// failed and stopped settle the page in flight before returning.
	failed := func(err error) SegmentResult {
		// Stop the other workers before waiting for this one's commit.
		stopRun(seg, err)
		wait()
		return finish(OutcomeFailed, err)
	}
	stopped := func(err error) SegmentResult {
		if parent.Err() == nil && ctx.Err() == nil {
			return failed(err)
		}
		if werr := wait(); werr != nil {
			return failed(werr)
		}
		if parent.Err() != nil {
			return finish(OutcomeCancelled, parent.Err())
		}
		return finish(OutcomeStopped, context.Cause(ctx))
	}
	key, err := st.Key()
	if err != nil {
		return failed(&CheckpointError{Path: p.cfg.Checkpoint, Msg: fmt.Sprintf("segment %d: %v", seg, err)})
	}
	log.LogAttrs(ctx, slog.LevelInfo, "segment start", slog.Bool("resumed", r.Resumed), slog.Int64("pages_before", st.Pages))
	op := p.cfg.Spec.Operation()
	for n := 0; ; n++ {
		pg, ok := p.takeProbe(seg)
		if !ok {
			err := p.call(ctx, w, seg, op, &r, func(rctx context.Context) error {
				var err error
				pg, err = p.fetch(rctx, w, seg, key)
				return err
			})
			if err != nil {
				return stopped(err)
			}
		}
		p.limiter.Consume(pg.cu)
		buf := bufs[n%2][:0]
		var err error
		for _, item := range pg.items {
			if buf, err = AppendItem(buf, item, p.cfg.Format); err != nil {
				return failed(&RequestError{Operation: op, Detail: Classified{Class: ClassOther, Message: "encoding an item: " + err.Error()}})
			}
			buf = append(buf, '\n')
		}
		bufs[n%2] = buf
		var lek json.RawMessage
		done := len(pg.lek) == 0
		if !done {
			if lek, err = attributevalue.MarshalMapJSON(pg.lek); err != nil {
				return failed(&RequestError{Operation: op, Detail: Classified{Class: ClassOther, Message: "encoding LastEvaluatedKey: " + err.Error()}})
			}
		}
		// The previous page first: commits are in order.
		if err := wait(); err != nil {
			return failed(err)
		}
		inflight, pending, pendDone = make(chan error, 1), pg, done
		go func(ch chan error) {
			ch <- c.commit(seg, buf, int64(len(pg.items)), pg.scanned, pg.cu, lek, done)
		}(inflight)
		if done {
			if err := wait(); err != nil {
				return failed(err)
			}
			p.prog.segsDone.Add(1)
			log.LogAttrs(ctx, slog.LevelInfo, "segment done", slog.Int64("items", r.Items), slog.Int64("pages", r.Pages),
				slog.Int("retries", r.Retries), slog.Int("refreshes", r.Refreshes))
			return finish(OutcomeDone, nil)
		}
		key = pg.lek
		if ctx.Err() != nil {
			return stopped(ctx.Err())
		}
	}
}
