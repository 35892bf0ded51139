package rotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/krbops/krbops/internal/procstat"
	"github.com/krbops/krbops/ledger"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/secretstore"
)

// Step ids of rotate abort and rotate unlock.
const (
	StepAbortJournal = "abort.journal"
	StepAbortStore   = "abort.store"
	StepAbortLedger  = "abort.ledger"
	StepUnlock       = "unlock.lock"
)

// holderState says whether a lock's process still runs.
func holderState(l ledger.Lock) procstat.Liveness {
	return procstat.Of(l.Host, l.PID, l.Renewed)
}

func describeLock(l ledger.Lock) runbook.Evidence {
	return runbook.Evidence{"holder": l.Holder, "host": l.Host, "pid": l.PID, "user": l.User,
		"acquired": l.Acquired.UTC().Format(time.RFC3339), "expires": l.Expires.UTC().Format(time.RFC3339),
		"alive": string(holderState(l))}
}

// Abort discards a rotation that has not reached the KDC: its pending
// version leaves the store's pending stage, its ledger record ends as
// aborted (with who and why in the audit trail), the lock is released
// and the journal removed. A rotation whose journal is at setting or
// later may have changed the key: abort refuses and points at --resume,
// which finds out.
func (r *Rotation) Abort(j *Journal, reason string) runbook.Runbook {
	r.journal = j
	steps := []runbook.Step{
		{ID: StepAbortJournal, Title: "the rotation has not reached the KDC", Run: func(ctx context.Context, _ *runbook.State) runbook.Result {
			if j.State >= StateSetting {
				return runbook.Failf("rotation %s of %s is at %s: the key change may have reached the KDC", j.ID, r.Principal, j.State).
					WithHint("run %s: it finds out what the KDC holds and finishes the rotation", r.command("rotate --resume"))
			}
			// The process that runs the rotation must not be running.
			locks, err := r.Ledger.Locks(ctx)
			if err != nil {
				return ledgerResult(err, "ledger: %s", err)
			}
			for _, l := range locks {
				if l.Principal == r.Principal && l.Holder == r.holder(j) && holderState(l) == procstat.Alive {
					return runbook.Failf("rotation %s of %s is running (pid %d on %s)", j.ID, r.Principal, l.PID, l.Host).With(describeLock(l)).
						WithHint("stop that krbops first (it is alive), or let it finish")
				}
			}
			if err := r.checkBinding(ctx, j); err != nil {
				return runbook.Failf("the journal of %s does not belong to its rotation: %s", r.Principal, err).
					WithHint("nothing was changed; inspect %s", r.command("rotate status"))
			}
			return runbook.Passf("rotation %s of %s stopped at %s, before the key change", j.ID, r.Principal, j.State).
				With(runbook.Evidence{"journal_state": j.State.String(), "old_kvno": j.OldKVNO, "new_kvno": j.NewKVNO})
		}},
		{ID: StepAbortStore, Title: "pending version discarded", Needs: []string{StepAbortJournal}, Run: func(ctx context.Context, _ *runbook.State) runbook.Result {
			if j.PendingVersion == "" {
				return runbook.Passf("no pending version was stored")
			}
			err := r.Store.Discard(ctx, r.Secret, j.PendingVersion)
			switch {
			case errors.Is(err, secretstore.ErrNotFound):
				return runbook.Passf("version %s is no longer in %s", j.PendingVersion, r.Secret)
			case err != nil:
				return storeResult(err, "discard version %s: %s", j.PendingVersion, err)
			}
			return runbook.Passf("version %s of %s is no longer pending; current is unchanged", j.PendingVersion, r.Secret)
		}},
		{ID: StepAbortLedger, Title: "rotation recorded as aborted", Needs: []string{StepAbortStore}, Run: func(ctx context.Context, _ *runbook.State) runbook.Result {
			if j.LedgerID != "" {
				if _, err := r.Ledger.Update(ctx, j.LedgerID, func(rot *ledger.Rotation) error {
					if rot.Outcome.Open() {
						rot.Outcome, rot.Message = ledger.Aborted, "aborted by "+r.Operator+": "+reason
					}
					return nil
				}); err != nil {
					return ledgerResult(err, "ledger: %s", err)
				}
			}
			if _, err := r.Ledger.Record(ctx, ledger.Event{Principal: r.Principal, Action: "abort", Operator: r.Operator, Reason: reason,
				Detail: fmt.Sprintf("rotation %s at %s, kvno %d to %d", j.ID, j.State, j.OldKVNO, j.NewKVNO)}); err != nil {
				return ledgerResult(err, "ledger: %s", err)
			}
			if _, err := r.Ledger.BreakLock(ctx, r.Principal, r.holder(j), true); err != nil && !errors.Is(err, ledger.ErrNotFound) {
				return ledgerResult(err, "ledger unlock: %s", err)
			}
			if err := removeJournal(r.JournalDir, r.Principal); err != nil {
				return runbook.Usagef("remove the journal: %s", err)
			}
			return runbook.Passf("rotation %s of %s aborted; the KDC and the store's current keytab are as before", j.ID, r.Principal)
		}},
	}
	return runbook.Runbook{Command: "rotate abort", Steps: steps}
}

// Unlock breaks the lock on principal when its holder is dead (the
// process is gone, or — on another host — its lease expired), and
// records who, when and why in the ledger's audit trail. A live holder's
// lock is never broken.
func Unlock(l ledger.Ledger, principal, operator, reason string, now func() time.Time) runbook.Runbook {
	return runbook.Runbook{Command: "rotate unlock", Steps: []runbook.Step{{ID: StepUnlock, Title: "lock of a dead holder broken",
		Run: func(ctx context.Context, _ *runbook.State) runbook.Result {
			locks, err := l.Locks(ctx)
			if err != nil {
				return ledgerResult(err, "ledger: %s", err)
			}
			var lk *ledger.Lock
			for i := range locks {
				if locks[i].Principal == principal {
					lk = &locks[i]
				}
			}
			if lk == nil {
				return runbook.Passf("%s is not locked", principal)
			}
			ev := describeLock(*lk)
			switch holderState(*lk) {
			case procstat.Alive:
				return runbook.Failf("%s is locked by a running krbops (pid %d on %s, %s)", principal, lk.PID, lk.Host, lk.Holder).With(ev).
					WithHint("a live rotation's lock is never broken: stop it, or let it finish")
			case procstat.Unknown:
				if !lk.Stale(now()) {
					return runbook.Failf("%s is locked from host %s (pid %d), which this host cannot look at, until %s", principal, lk.Host, lk.PID, lk.Expires.UTC().Format(time.RFC3339)).With(ev).
						WithHint("run krbops rotate unlock on %s, or wait until the lock expires", lk.Host)
				}
			}
			broken, err := l.BreakLock(ctx, principal, lk.Holder, true)
			if err != nil {
				return ledgerResult(err, "ledger: %s", err)
			}
			if _, err := l.Record(ctx, ledger.Event{Principal: principal, Action: "unlock", Operator: operator, Reason: reason,
				Detail: fmt.Sprintf("%s (pid %d on %s, user %s, since %s)", broken.Holder, broken.PID, broken.Host, broken.User, broken.Acquired.UTC().Format(time.RFC3339))}); err != nil {
				return ledgerResult(err, "ledger: %s", err)
			}
			return runbook.Passf("broke the lock of %s held by %s (pid %d on %s, gone); recorded in the audit trail", principal, broken.Holder, broken.PID, broken.Host).With(ev).
				WithHint("a journal of that rotation, if any, is still there: %s or %s", "krbops rotate --resume --principal "+shellQuote(principal), "krbops rotate abort --principal "+shellQuote(principal))
		}}}}
}
