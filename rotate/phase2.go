package rotate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	"github.com/krbops/krbops/internal/procstat"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/ledger"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/secretstore"
)

// Finish is phase 2 of a server rotation: once the maximum service-ticket
// lifetime has passed since phase 1, no valid ticket under the old kvno
// can exist, and the keytab is published with the new kvno only. force
// skips the wait (an old ticket still in use will then fail).
func (r *Rotation) Finish(force bool) runbook.Runbook {
	var rot ledger.Rotation
	var only []byte
	steps := []runbook.Step{
		{ID: StepPhase2Wait, Title: "max ticket lifetime passed since phase 1", Run: func(ctx context.Context, _ *runbook.State) runbook.Result {
			open, err := r.Ledger.List(ctx, ledger.Filter{Principal: r.Principal, Outcome: ledger.AwaitingPhase2, Limit: 1})
			if err != nil {
				return ledgerResult(err, "ledger: %s", err)
			}
			if len(open) == 0 {
				return runbook.Failf("%s has no server rotation waiting for phase 2", r.Principal).WithHint("krbops rotate status lists the open rotations")
			}
			rot = open[0]
			// The wait is the longest lifetime the KDC issued when phase 1
			// began (recorded in the ledger), never less than configured.
			wait := max(rot.Phase2Wait, r.TicketLifetime)
			ready := rot.Phase1Done.Add(wait)
			ev := runbook.Evidence{"phase1_done": rot.Phase1Done.UTC().Format(time.RFC3339), "ready_at": ready.UTC().Format(time.RFC3339), "wait": wait.String()}
			if left := ready.Sub(r.now()); left > 0 {
				if !force {
					return runbook.Failf("phase 1 ended %s ago; tickets under kvno %d may live %s more", r.now().Sub(rot.Phase1Done).Round(time.Second), rot.OldKVNO, left.Round(time.Second)).
						With(ev).WithHint("run rotate finish after %s, or with --force if no ticket under the old kvno can be in use", ready.UTC().Format(time.RFC3339))
				}
				return runbook.Warnf("--force: tickets under kvno %d may live %s more and will fail", rot.OldKVNO, left.Round(time.Second)).With(ev)
			}
			return runbook.Passf("phase 1 ended %s ago, beyond the %s ticket lifetime", r.now().Sub(rot.Phase1Done).Round(time.Second), wait).With(ev)
		}},
		{ID: StepPhase2Store, Title: "new-kvno-only keytab current in the store", Needs: []string{StepPhase2Wait}, Run: func(ctx context.Context, _ *runbook.State) runbook.Result {
			cur, err := r.Store.Get(ctx, r.Secret, secretstore.StageCurrent)
			if err != nil {
				return storeResult(err, "%s", err)
			}
			kt, err := kdcops.ParseKeytab(cur.Data, kdcops.KeytabOptions{KeepKeys: true})
			if err != nil {
				return runbook.Failf("the store's current keytab of %s does not parse", r.Secret)
			}
			next := kdcops.AtKVNO(kt.EntriesFor(r.Principal), rot.NewKVNO)
			if len(next) == 0 {
				return runbook.Failf("the store's current keytab holds no kvno %d", rot.NewKVNO).WithHint("inspect the store; phase 1 must have published it")
			}
			if only, err = kdcops.MarshalKeytab(next); err != nil {
				return runbook.Errorf("%s", err)
			}
			if len(kdcops.KVNOs(kt.Entries)) == 1 {
				return runbook.Passf("the store's current version already holds kvno %d only", rot.NewKVNO)
			}
			// A token derived from the rotation makes a repeat after a
			// crash find the same version.
			sum := sha256.Sum256([]byte("phase2 " + rot.ID))
			v, err := r.Store.PutPending(ctx, r.Secret, only, hex.EncodeToString(sum[:20]))
			if err != nil {
				return storeResult(err, "%s", err)
			}
			if err := r.Store.Promote(ctx, r.Secret, v.ID); err != nil {
				return storeResult(err, "%s", err)
			}
			return runbook.Passf("version %s with kvno %d only is current", v.ID, rot.NewKVNO)
		}},
		{ID: StepPhase2Keytb, Title: "keytab file holds the new kvno only", Needs: []string{StepPhase2Store}, Run: func(ctx context.Context, _ *runbook.State) runbook.Result {
			backup, err := publish(ctx, r.Keytab, r.Principal, only, BackupPath(r.Keytab, rot.OldKVNO)+".phase1", "", nil)
			if err != nil {
				return runbook.Usagef("write %s: %s", r.Keytab, describe(err))
			}
			return runbook.Passf("%s holds kvno %d only; the phase-1 file is %s", r.Keytab, rot.NewKVNO, backup)
		}},
		{ID: StepPhase2Done, Title: "rotation recorded", Needs: []string{StepPhase2Keytb}, Run: func(ctx context.Context, _ *runbook.State) runbook.Result {
			if _, err := r.Ledger.Update(ctx, rot.ID, func(x *ledger.Rotation) error {
				x.Outcome, x.Phase = ledger.Succeeded, ledger.Phase2
				return nil
			}); err != nil {
				return ledgerResult(err, "ledger: %s", err)
			}
			return runbook.Passf("rotation %s of %s complete", rot.ID, r.Principal)
		}},
	}
	for i := range steps {
		run, id := steps[i].Run, steps[i].ID
		steps[i].Run = func(ctx context.Context, st *runbook.State) runbook.Result {
			res := run(ctx, st)
			if r.AfterStep != nil {
				r.AfterStep(id)
			}
			return res
		}
	}
	return runbook.Runbook{Command: "rotate finish", Steps: steps}
}

// Plan is --dry-run: a rehearsal. Every read-only pre-check runs for
// real against the KDC, the store, the allowlist, the ledger's rate window
// and the KDC logs; the lock step checks that nothing holds the principal
// (a journal, a lock, an open rotation) without taking anything; the
// steps that would change something say what they would do. Nothing is
// written: no journal, no lock, no store version, no ledger record. The
// caller opens the ledger read-only (or passes an empty one when there
// is no ledger file yet).
func (r *Rotation) Plan(resume bool, j *Journal) runbook.Runbook {
	what := map[string]string{
		StepCreate:     "derive new keys at kvno+1 from a random password with the KDC's salts; journal them (0600)",
		StepPutPending: "store the new keytab as pending in " + r.Secret,
		StepSet:        "change the key of " + r.Principal + " at the KDC with " + r.Backend,
		StepTest:       "log in and decrypt a service ticket with the pending keytab, after asking the KDC which keys the new kvno has",
		StepPromote:    "promote pending to current in " + r.Secret,
		StepPublish:    "rewrite " + r.Keytab + " atomically with its owner, group and mode, keeping the old file as a backup",
		StepLedger:     "record the rotation and unlock",
	}
	if r.Role.Serves() {
		what[StepCreate] = "derive new keys at kvno+1 (keytab keeps the old kvno too); journal them (0600)"
		what[StepLedger] = "record phase 1 (awaiting phase 2) and unlock"
	}
	if j == nil {
		j = &Journal{}
	}
	rb := r.Runbook(resume, j)
	for i := range rb.Steps {
		id := rb.Steps[i].ID
		switch {
		case id == StepLock:
			rb.Steps[i].Title = "nothing holds the principal"
			rb.Steps[i].Run = r.stepLockDry
		case what[id] != "":
			msg := "dry-run: would " + what[id]
			rb.Steps[i].Needs = nil
			rb.Steps[i].Run = func(context.Context, *runbook.State) runbook.Result {
				return runbook.Result{Status: runbook.Skip, Message: msg}
			}
		}
	}
	if len(r.Policy) > 0 {
		rb.Steps = append(rb.Steps, r.policyStep())
	}
	rb.Command = "rotate --dry-run"
	return rb
}

// stepLockDry is preflight.lock without the lock: it reports what would
// stop the rotation there, and writes nothing.
func (r *Rotation) stepLockDry(ctx context.Context, _ *runbook.State) runbook.Result {
	if res, denied := r.refuseDenied(); denied {
		return res
	}
	if r.resume {
		if err := r.checkBinding(ctx, r.journal); err != nil {
			return runbook.Failf("the journal of %s does not belong to this rotation: %s", r.Principal, err)
		}
		return runbook.Passf("dry-run: would resume rotation %s of %s from state %s", r.journal.ID, r.Principal, r.journal.State)
	}
	if err := CheckJournalDir(r.JournalDir); err != nil {
		return untrusted(err)
	}
	if res, busy := r.inProgress(); busy {
		return res
	}
	locks, err := r.Ledger.Locks(ctx)
	if err != nil {
		return ledgerResult(err, "ledger: %s", err)
	}
	for _, l := range locks {
		if l.Principal == r.Principal {
			return runbook.Failf("%s is locked by %q since %s", r.Principal, l.Holder, l.Acquired.UTC().Format(time.RFC3339)).
				WithHint("inspect it with krbops rotate status")
		}
	}
	open, err := r.Ledger.List(ctx, ledger.Filter{Principal: r.Principal, Limit: 1})
	if err != nil {
		return ledgerResult(err, "ledger: %s", err)
	}
	if len(open) > 0 && open[0].Outcome.Open() {
		return runbook.Failf("%s already has an open rotation in the ledger (%s)", r.Principal, open[0].Outcome).
			WithHint("finish it first: krbops rotate status, then rotate finish (servers) or rotate --resume")
	}
	return runbook.Passf("dry-run: would lock %s, plan kvno %d to %d under the lock and journal it in %s", r.Principal, r.preflightKVNO, r.preflightKVNO+1, r.JournalDir).
		With(runbook.Evidence{"kdc_kvno": r.preflightKVNO, "phase2_wait": r.Phase2Wait().String()})
}

// Status is one step per open rotation: journals on this host (in
// progress) and ledger records (in progress, awaiting phase 2).
func Status(ctx context.Context, l ledger.Ledger, journalDir string, ticketLifetime time.Duration, now time.Time) (runbook.Runbook, error) {
	open, err := l.Pending(ctx)
	if err != nil {
		return runbook.Runbook{}, err
	}
	journals, err := ListJournals(journalDir)
	if err != nil {
		return runbook.Runbook{}, err
	}
	byPrincipal := map[string]*Journal{}
	for _, j := range journals {
		byPrincipal[j.Principal] = j
	}
	locks, err := l.Locks(ctx)
	if err != nil {
		return runbook.Runbook{}, err
	}
	lockOf := map[string]ledger.Lock{}
	for _, lk := range locks {
		lockOf[lk.Principal] = lk
	}
	// withLock adds the lock's holder to a principal's evidence, and says
	// whether it still runs: a dead holder's lock is what unlock is for.
	withLock := func(p string, ev runbook.Evidence) (string, bool) {
		lk, ok := lockOf[p]
		if !ok {
			return "", false
		}
		for k, v := range describeLock(lk) {
			ev["lock_"+k] = v
		}
		if j := byPrincipal[p]; j != nil && lk.Holder == "krbops rotate "+j.ID {
			ev["lock_step"] = j.State.String()
		}
		state := holderState(lk)
		return fmt.Sprintf("locked by pid %d on %s (%s) since %s, holder %s", lk.PID, lk.Host, lk.User, lk.Acquired.UTC().Format(time.RFC3339), state), state == procstat.Dead
	}
	var steps []runbook.Step
	seen := map[string]bool{}
	for _, rot := range open {
		rot := rot
		seen[rot.Principal] = true
		j := byPrincipal[rot.Principal]
		steps = append(steps, runbook.Step{ID: "status." + rot.Principal, Title: string(rot.Outcome),
			Run: func(context.Context, *runbook.State) runbook.Result {
				ev := runbook.Evidence{"ledger_id": rot.ID, "role": rot.Role, "cluster": rot.Cluster, "outcome": string(rot.Outcome),
					"old_kvno": rot.OldKVNO, "new_kvno": rot.NewKVNO, "started": rot.Started.UTC().Format(time.RFC3339), "operator": rot.Operator}
				if rot.Outcome == ledger.AwaitingPhase2 {
					ready := rot.Phase1Done.Add(max(rot.Phase2Wait, ticketLifetime))
					ev["phase2_after"] = ready.UTC().Format(time.RFC3339)
					if now.Before(ready) {
						return runbook.Passf("awaiting phase 2: kvno %d and %d published; rotate finish after %s", rot.OldKVNO, rot.NewKVNO, ready.UTC().Format(time.RFC3339)).With(ev)
					}
					return runbook.Warnf("awaiting phase 2 since %s: ready now", rot.Phase1Done.UTC().Format(time.RFC3339)).With(ev).
						WithHint("krbops rotate finish --principal %s", shellQuote(rot.Principal))
				}
				state := "no journal on this host"
				if j != nil {
					state = "journal state " + j.State.String()
				}
				if held, dead := withLock(rot.Principal, ev); held != "" {
					state += "; " + held
					if dead {
						return runbook.Warnf("in progress since %s (%s)", rot.Started.UTC().Format(time.RFC3339), state).With(ev).
							WithHint("its krbops is gone: krbops rotate --resume --principal %s (or rotate abort if it never reached the KDC)", shellQuote(rot.Principal))
					}
				}
				return runbook.Warnf("in progress since %s (%s)", rot.Started.UTC().Format(time.RFC3339), state).With(ev).
					WithHint("krbops rotate --resume --principal %s", shellQuote(rot.Principal))
			}})
	}
	// Locks without an open rotation: a run that died between taking the
	// lock and writing its record.
	var lockOnly []string
	for p := range lockOf {
		if !seen[p] && byPrincipal[p] == nil {
			lockOnly = append(lockOnly, p)
		}
	}
	sort.Strings(lockOnly)
	for _, p := range lockOnly {
		seen[p] = true
		steps = append(steps, runbook.Step{ID: "status." + p, Title: "locked", Run: func(context.Context, *runbook.State) runbook.Result {
			ev := runbook.Evidence{}
			held, dead := withLock(p, ev)
			if dead {
				return runbook.Warnf("%s; no journal and no open rotation", held).With(ev).
					WithHint("krbops rotate unlock --principal %s --force --reason TEXT", shellQuote(p))
			}
			return runbook.Warnf("%s; no journal on this host and no open rotation", held).With(ev)
		}})
	}
	var orphans []string
	for p := range byPrincipal {
		if !seen[p] {
			orphans = append(orphans, p)
		}
	}
	sort.Strings(orphans)
	for _, p := range orphans {
		j := byPrincipal[p]
		steps = append(steps, runbook.Step{ID: "status." + p, Title: "in-progress", Run: func(context.Context, *runbook.State) runbook.Result {
			return runbook.Warnf("journal in state %s without an open ledger record", j.State).
				WithHint("krbops rotate --resume --principal %s", shellQuote(p))
		}})
	}
	if len(steps) == 0 {
		steps = append(steps, runbook.Step{ID: "status.none", Title: "open rotations", Run: func(context.Context, *runbook.State) runbook.Result {
			return runbook.Passf("no rotation in progress or awaiting phase 2")
		}})
	}
	return runbook.Runbook{Command: "rotate status", Steps: steps}, nil
}

// AlreadyDone is --resume without a journal: when the principal's last
// rotation in the ledger ended (phase 1 or all), a one-step runbook that
// says so; false when the ledger has nothing to show.
func AlreadyDone(ctx context.Context, l ledger.Ledger, principal string) (runbook.Runbook, bool) {
	last, err := l.List(ctx, ledger.Filter{Principal: principal, Limit: 1})
	if err != nil || len(last) == 0 {
		return runbook.Runbook{}, false
	}
	rot := last[0]
	if rot.Outcome != ledger.Succeeded && rot.Outcome != ledger.AwaitingPhase2 {
		return runbook.Runbook{}, false
	}
	return runbook.Runbook{Command: "rotate --resume", Steps: []runbook.Step{{ID: "resume.journal", Title: "rotation journal", Run: func(context.Context, *runbook.State) runbook.Result {
		return runbook.Passf("nothing to resume: rotation %s of %s ended %s (kvno %d to %d)", rot.ID, principal, rot.Outcome, rot.OldKVNO, rot.NewKVNO).
			With(runbook.Evidence{"ledger_id": rot.ID, "outcome": string(rot.Outcome)})
	}}}}, true
}
