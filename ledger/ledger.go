// Package ledger records keytab rotations: who rotated which principal, in
// which cluster and role, from which kvno to which, and how it ended. The
// rotate command reads it back for its pre-checks and its status:
//
//   - rate limits: [Ledger.Admit] decides a (cluster, role) fault domain's
//     sliding window and minimum gap and records the rotation in one
//     atomic step; [Ledger.CountSince] counts a window for an early look;
//   - one rotation per principal: [Ledger.Lock] / [Ledger.Unlock], and
//     [Ledger.Start] refuses a principal whose last rotation is still open;
//   - rotate status: [Ledger.Pending] lists rotations in progress and
//     server rotations waiting for phase 2;
//   - audit: [Ledger.List], [Ledger.Events].
//
// Start with [Open], which picks the backend from --ledger: [OpenFile], the
// embedded default, one bbolt file (0600) on the operator's machine (a
// damaged file is a [DamagedError], never a crash; callers that only read
// open it with Options.ReadOnly), or [OpenDynamo], one DynamoDB table that
// every operator shares (docs/ledger.md: item layout, why single-item
// conditional writes, what a crash between two writes leaves). [Init]
// creates that table.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Outcome is where a rotation stands.
type Outcome string

// Outcomes. InProgress and AwaitingPhase2 are open; the rest are final.
const (
	InProgress     Outcome = "in-progress"
	AwaitingPhase2 Outcome = "awaiting-phase2" // a server keytab holds old and new kvno
	Succeeded      Outcome = "succeeded"
	Failed         Outcome = "failed"
	Aborted        Outcome = "aborted" // stopped before the KDC changed anything
)

// Open reports whether a rotation with this outcome is still under way.
func (o Outcome) Open() bool { return o == InProgress || o == AwaitingPhase2 }

func (o Outcome) valid() bool {
	switch o {
	case InProgress, AwaitingPhase2, Succeeded, Failed, Aborted:
		return true
	}
	return false
}

// Phase is the step of a two-phase server rotation; clients have none.
type Phase string

// Phases of a server rotation (DESIGN.md, rotation hazards): phase 1
// publishes old and new kvno, phase 2 (after the maximum service-ticket
// lifetime) only the new one.
const (
	NoPhase Phase = ""
	Phase1  Phase = "phase1"
	Phase2  Phase = "phase2"
)

// Rotation is one rotation of one principal's key.
type Rotation struct {
	ID            string  `json:"id"` // assigned by Start
	Principal     string  `json:"principal"`
	Cluster       string  `json:"cluster"`
	Role          string  `json:"role"`
	Tier          string  `json:"tier,omitempty"`
	Operator      string  `json:"operator"` // who ran it
	CorrelationID string  `json:"correlation_id,omitempty"`
	OldKVNO       uint32  `json:"old_kvno"`
	NewKVNO       uint32  `json:"new_kvno,omitempty"`
	Phase         Phase   `json:"phase,omitempty"`
	Outcome       Outcome `json:"outcome"`
	// JournalID and PendingSHA256 bind the record to the local journal
	// that drives the rotation and to the pending keytab it created (a
	// SHA-256 of the keytab file: it identifies the keys without
	// revealing them). rotate --resume refuses a journal that does not
	// match its record.
	JournalID     string `json:"journal_id,omitempty"`
	PendingSHA256 string `json:"pending_sha256,omitempty"`
	// Phase2Wait is how long phase 2 must wait after phase 1: the longest
	// ticket lifetime the KDC issued when the rotation started.
	Phase2Wait time.Duration `json:"phase2_wait_ns,omitempty"`
	// Message is a one-line reason for a failure or an abort. It must
	// never hold a password or key.
	Message    string    `json:"message,omitempty"`
	Started    time.Time `json:"started"`
	Phase1Done time.Time `json:"phase1_done,omitzero"` // set when the outcome becomes AwaitingPhase2
	Finished   time.Time `json:"finished,omitzero"`    // set when the outcome becomes final
}

// Filter selects rotations for List; zero fields match everything.
type Filter struct {
	Principal string
	Cluster   string
	Role      string
	Outcome   Outcome
	Since     time.Time // started at or after
	Until     time.Time // started before
	Limit     int       // newest first; 0 for all
}

func (f Filter) match(r *Rotation) bool {
	return (f.Principal == "" || r.Principal == f.Principal) &&
		(f.Cluster == "" || r.Cluster == f.Cluster) &&
		(f.Role == "" || r.Role == f.Role) &&
		(f.Outcome == "" || r.Outcome == f.Outcome) &&
		(f.Since.IsZero() || !r.Started.Before(f.Since)) &&
		(f.Until.IsZero() || r.Started.Before(f.Until))
}

// Lock reserves a principal for one rotation.
type Lock struct {
	Principal string    `json:"principal"`
	Holder    string    `json:"holder"` // the rotation, e.g. "krbops rotate <journal id>"
	Acquired  time.Time `json:"acquired"`
	Expires   time.Time `json:"expires"`
	// Host, PID and User are the process that took or last renewed the
	// lock, so an operator (and rotate status) can tell whether it still
	// runs.
	Host string `json:"host,omitempty"`
	PID  int    `json:"pid,omitempty"`
	User string `json:"user,omitempty"`
	// Renewed is when that process took or renewed the lock: a process
	// with that PID that started later is another one.
	Renewed time.Time `json:"renewed,omitzero"`
}

// Event is one entry of the ledger's audit trail: who did what to which
// principal's rotation state, when and why, beyond the rotation records
// themselves (a lock broken by hand, a rotation aborted).
type Event struct {
	Seq       uint64    `json:"seq"` // assigned by Record
	Time      time.Time `json:"time"`
	Principal string    `json:"principal"`
	Action    string    `json:"action"`   // e.g. "unlock", "abort"
	Operator  string    `json:"operator"` // user@host
	Reason    string    `json:"reason,omitempty"`
	Detail    string    `json:"detail,omitempty"` // e.g. the lock that was broken
}

// Stale reports whether the lock outlived its ttl at now. A stale lock
// still holds: only BreakLock removes it, because a rotation that crashed
// mid-way must be resumed or inspected, not silently overtaken.
func (l Lock) Stale(now time.Time) bool { return now.After(l.Expires) }

// Ledger is the rotation ledger. Every method is safe for concurrent use,
// from goroutines and, for the file ledger, from processes.
type Ledger interface {
	// Start records a new rotation with outcome InProgress (unless r says
	// otherwise) and returns it with its ID and Started set. ErrConflict
	// when the principal already has an open rotation.
	Start(ctx context.Context, r Rotation) (Rotation, error)
	// Update applies fn to the stored rotation and stores the result, in
	// one transaction. ID, Principal, Cluster, Role, Operator and Started
	// cannot change, nor can a final outcome; Phase1Done and Finished are
	// stamped when the outcome reaches AwaitingPhase2 or a final one.
	// An error from fn aborts the update and is returned as is.
	Update(ctx context.Context, id string, fn func(*Rotation) error) (Rotation, error)
	// Get returns one rotation; ErrNotFound when there is none.
	Get(ctx context.Context, id string) (Rotation, error)
	// List returns the rotations f selects, newest first.
	List(ctx context.Context, f Filter) ([]Rotation, error)
	// Pending returns the open rotations (in progress, or waiting for
	// phase 2), oldest first.
	Pending(ctx context.Context) ([]Rotation, error)
	// CountSince counts the rotations of (cluster, role) started at or
	// after since, whatever their outcome: a failed rotation may have
	// changed a key too, so it spends the window's budget.
	CountSince(ctx context.Context, cluster, role string, since time.Time) (int, error)
	// Admit is Start behind the rate limits of req.Rotation's (cluster,
	// role), decided and recorded in one atomic step: of any number of
	// processes admitting at once, at most req.Limit get in per window.
	// A refusal is an *AdmitError (errors.Is ErrNotAdmitted) saying until
	// when; a second open rotation of the principal is ErrConflict, as
	// with Start. The rotation's Started is the ledger's clock.
	Admit(ctx context.Context, req AdmitRequest) (Rotation, error)
	// Lock reserves principal for holder until ttl from now. Locking again
	// with the same holder extends it (a resumed rotation keeps its lock).
	// A lock of another holder, stale or not, is a *LockedError.
	Lock(ctx context.Context, principal, holder string, ttl time.Duration) (Lock, error)
	// Unlock releases holder's lock; no lock is fine, another holder's
	// lock is a *LockedError.
	Unlock(ctx context.Context, principal, holder string) error
	// BreakLock removes a stale lock and returns it for the audit trail;
	// a live (unexpired) lock is a *LockedError unless force, which the
	// caller passes only when it knows the holder is dead. With holder
	// set, only that holder's lock is broken (a *LockedError otherwise),
	// so two processes that both saw a dead holder cannot break the lock
	// one of them has just taken. No lock is ErrNotFound.
	BreakLock(ctx context.Context, principal, holder string, force bool) (Lock, error)
	// Locks lists every lock, stale ones included.
	Locks(ctx context.Context) ([]Lock, error)
	// Record appends e to the audit trail, stamping its time and sequence.
	Record(ctx context.Context, e Event) (Event, error)
	// Events returns the audit trail of principal ("" for every
	// principal), oldest first.
	Events(ctx context.Context, principal string) ([]Event, error)
	// Close releases the ledger; later calls fail.
	Close() error
}

// Errors callers can match with errors.Is.
var (
	ErrNotFound = errors.New("ledger: not found")
	// ErrLocked: another holder has the principal (see LockedError).
	ErrLocked = errors.New("ledger: principal locked by another rotation")
	// ErrBusy: the ledger file stayed locked by another krbops process
	// for the whole timeout.
	ErrBusy = errors.New("ledger: locked by another krbops")
	// ErrConflict: the change would break the ledger's rules (a second
	// open rotation of a principal, rewriting a finished rotation).
	ErrConflict = errors.New("ledger: conflict")
	// ErrClosed: the ledger was closed.
	ErrClosed = errors.New("ledger: closed")
)

// ErrNotAdmitted: Admit refused the rotation (see AdmitError).
var ErrNotAdmitted = errors.New("ledger: rotation not admitted")

// AdmitRequest is a rotation to start and the limits of its (cluster,
// role) fault domain.
//
// The window is sliding: a rotation started at s counts against every
// admission in [s, s+Window). Every rotation started in the domain counts,
// whatever its outcome or how it was started. A fixed window (a counter
// per clock hour) would be one conditional counter, but lets 2×Limit
// through around each boundary; the blast-radius bound is what the limit
// is for, so it is exact instead.
type AdmitRequest struct {
	Rotation Rotation
	// Limit is the most rotations per Window; 0 for no limit.
	Limit  int
	Window time.Duration
	// MinGap is the least time between two rotations started in the
	// domain (control-plane roles); 0 for none.
	MinGap time.Duration
}

func (q AdmitRequest) validate() error {
	switch {
	case q.Limit < 0 || q.MinGap < 0:
		return fmt.Errorf("ledger: admission limit %d and minimum gap %s may not be negative", q.Limit, q.MinGap)
	case q.Limit > 0 && q.Window <= 0:
		return fmt.Errorf("ledger: a limit of %d rotations needs a positive window (got %s)", q.Limit, q.Window)
	}
	return nil
}

// AdmitReason is why Admit refused.
type AdmitReason string

// Refusals.
const (
	WindowFull AdmitReason = "window-full"
	MinGapWait AdmitReason = "min-gap"
)

// AdmitError is a refused admission. Until is the earliest time the same
// request can be admitted, as far as this domain's rotations so far go.
type AdmitError struct {
	Reason        AdmitReason
	Cluster, Role string
	Count, Limit  int // rotations in the window, and its limit
	Window        time.Duration
	MinGap        time.Duration
	Last          time.Time // the domain's latest rotation start
	Until         time.Time
}

func (e *AdmitError) Error() string {
	if e.Reason == MinGapWait {
		return fmt.Sprintf("ledger: (%s, %s) rotated last at %s; min gap %s until %s", e.Cluster, e.Role,
			e.Last.UTC().Format(time.RFC3339), e.MinGap, e.Until.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("ledger: (%s, %s) has %d of %d rotations in its %s window; window full until %s", e.Cluster, e.Role,
		e.Count, e.Limit, e.Window, e.Until.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrNotAdmitted) true.
func (e *AdmitError) Is(target error) bool { return target == ErrNotAdmitted }

// admission decides req at now from the start times of the domain's
// rotations in the window (any order) and the domain's latest start: nil
// admits. When both the gap and the window refuse, the refusal is the one
// that lasts longer, so Until is when the same request can get in. Both
// backends decide with it, inside their atomic step.
func admission(req AdmitRequest, now time.Time, inWindow []time.Time, last time.Time) *AdmitError {
	r := req.Rotation
	e := &AdmitError{Cluster: r.Cluster, Role: r.Role, Count: len(inWindow), Limit: req.Limit,
		Window: req.Window, MinGap: req.MinGap, Last: last}
	if req.Limit > 0 && len(inWindow) >= req.Limit {
		ts := slices.SortedFunc(slices.Values(inWindow), time.Time.Compare)
		// The window opens when all but Limit-1 of them have left it.
		e.Reason, e.Until = WindowFull, ts[len(ts)-req.Limit].Add(req.Window)
	}
	if req.MinGap > 0 && !last.IsZero() && now.Sub(last) < req.MinGap {
		if until := last.Add(req.MinGap); until.After(e.Until) {
			e.Reason, e.Until = MinGapWait, until
		}
	}
	if e.Reason == "" {
		return nil
	}
	return e
}

// inWindow reports whether a rotation started at s counts against an
// admission at now.
func inWindow(s, now time.Time, window time.Duration) bool { return s.After(now.Add(-window)) }

// LockedError is a refused Lock, Unlock or BreakLock: it tells who holds
// the principal and whether that lock is stale.
type LockedError struct {
	Lock  Lock
	Stale bool
}

func (e *LockedError) Error() string {
	state := "expires " + e.Lock.Expires.UTC().Format(time.RFC3339)
	if e.Stale {
		state = "stale since " + e.Lock.Expires.UTC().Format(time.RFC3339) + "; break it explicitly once its rotation is resumed or inspected"
	}
	return fmt.Sprintf("ledger: principal %s is locked by %q since %s (%s)",
		e.Lock.Principal, e.Lock.Holder, e.Lock.Acquired.UTC().Format(time.RFC3339), state)
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// validate checks what Start needs. Cluster and role are index keys, so
// they may not hold the NUL that separates them there.
func (r *Rotation) validate() error {
	for _, f := range []struct{ name, v string }{
		{"principal", r.Principal}, {"cluster", r.Cluster}, {"role", r.Role}, {"operator", r.Operator},
	} {
		if strings.TrimSpace(f.v) == "" {
			return fmt.Errorf("ledger: rotation without %s", f.name)
		}
		if strings.ContainsRune(f.v, 0) {
			return fmt.Errorf("ledger: %s %q contains NUL", f.name, f.v)
		}
	}
	if !r.Outcome.valid() {
		return fmt.Errorf("ledger: unknown outcome %q", r.Outcome)
	}
	switch r.Phase {
	case NoPhase, Phase1, Phase2:
	default:
		return fmt.Errorf("ledger: unknown phase %q", r.Phase)
	}
	return nil
}

func openConflict(principal string, o *Rotation) error {
	return fmt.Errorf("%w: principal %s already has open rotation %s (%s, started %s by %s); resume or finish it first",
		ErrConflict, principal, o.ID, o.Outcome, o.Started.Format(time.RFC3339), o.Operator)
}

// checkUpdate enforces Update's rules on before → after and stamps times.
func checkUpdate(before Rotation, after *Rotation, now time.Time) error {
	if after.ID != before.ID || after.Principal != before.Principal || after.Cluster != before.Cluster ||
		after.Role != before.Role || after.Operator != before.Operator || !after.Started.Equal(before.Started) {
		return fmt.Errorf("%w: rotation %s: id, principal, cluster, role, operator and start time are fixed", ErrConflict, before.ID)
	}
	if err := after.validate(); err != nil {
		return err
	}
	if !before.Outcome.Open() && *after != before {
		return fmt.Errorf("%w: rotation %s of %s already ended (%s)", ErrConflict, before.ID, before.Principal, before.Outcome)
	}
	if after.Outcome == AwaitingPhase2 && after.Phase1Done.IsZero() {
		after.Phase1Done = now
	}
	if !after.Outcome.Open() && after.Finished.IsZero() {
		after.Finished = now
	}
	return nil
}
