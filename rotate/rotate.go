// Package rotate is krbops' keytab rotation: a journaled state machine
// whose every step is a runbook step, so a crash at any point can be
// resumed and a key change is never sent twice.
//
// Start with [Rotation.Runbook]: preflight (clock, the current keytab,
// kpasswd/kadmin, the secret store, allowlist, rate limit, last login,
// lock), create (new keys, stored as pending), set (the KDC key change),
// test (the pending keytab works), finish (promote, publish, ledger).
// [Rotation.Finish] is phase 2 of a server rotation; [Status] lists
// rotations in progress. The package never prints: it returns runbook
// steps and results.
package rotate

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/procstat"
	"github.com/krbops/krbops/internal/readcap"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/ledger"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/clock"
	"github.com/krbops/krbops/secretstore"
)

// Role is what the principal does: a client logs in (kinit), a server
// decrypts service tickets.
type Role string

// Roles. A principal that both logs in and accepts tickets (a service
// that also calls other services as itself) is Both: it gets the client's
// last-login check and the server's two-phase timeline.
const (
	Client Role = "client"
	Server Role = "server"
	Both   Role = "both"
)

// LogsIn reports whether the principal logs in with its keytab: its last
// TGT must outlive the key change.
func (r Role) LogsIn() bool { return r == Client || r == Both }

// Serves reports whether the principal decrypts service tickets: its
// keytab must hold the old kvno until tickets under it expire (phase 2).
func (r Role) Serves() bool { return r == Server || r == Both }

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == Client || r == Server || r == Both }

// Backends that change the key at the KDC.
const (
	BackendKpasswd      = "kpasswd"
	BackendKpasswdAdmin = "kpasswd-admin"
	BackendKadmin       = "kadmin"
)

// Step ids, in run order: scripts match on them, and the crash tests name
// the step after which a test build dies.
const (
	StepClock       = "preflight.clock"
	StepKeytab      = "preflight.keytab"
	StepKpasswd     = "preflight.kpasswd"
	StepStore       = "preflight.secret-store"
	StepAllowlist   = "preflight.allowlist"
	StepRate        = "preflight.rate-limit"
	StepLastLogin   = "preflight.last-login"
	StepLock        = "preflight.lock"
	StepCreate      = "create.keys"
	StepPutPending  = "create.store"
	StepSet         = "set.kdc"
	StepTest        = "test.pending"
	StepPromote     = "finish.promote"
	StepPublish     = "finish.keytab"
	StepLedger      = "finish.ledger"
	StepPhase2Wait  = "phase2.ticket-lifetime"
	StepPhase2Store = "phase2.store"
	StepPhase2Keytb = "phase2.keytab"
	StepPhase2Done  = "phase2.ledger"
)

// StepIDs lists the steps of a rotation, in order.
var StepIDs = []string{StepClock, StepKeytab, StepKpasswd, StepStore, StepAllowlist, StepRate, StepLastLogin, StepLock,
	StepCreate, StepPutPending, StepSet, StepTest, StepPromote, StepPublish, StepLedger}

// Rotation is one rotation of one principal, with everything it talks to.
type Rotation struct {
	Config    *kdcops.Config
	KDCs      []kdcops.KDC
	Realm     string
	Principal string // name@REALM
	Role      Role
	Backend   string
	Cluster   string
	Tier      string
	Keytab    string // the principal's keytab file, rewritten by finish
	Secret    string // secret name in Store
	Store     secretstore.Store
	Ledger    ledger.Ledger

	JournalDir   string
	Allowlist    string
	MaxPerWindow int
	Window       time.Duration
	// MinGap is the least time between two rotations of (Cluster, Role)
	// (control-plane tiers; from the policy or --min-gap); 0 for none.
	// Enforced with MaxPerWindow by the ledger's Admit at preflight.lock.
	MinGap          time.Duration
	MinTGTRemaining time.Duration
	TicketLifetime  time.Duration // max TGT and service-ticket lifetime of the realm

	AdminPrincipal string
	AdminKeytab    string
	Kadmin         string   // the MIT kadmin binary
	KadminEnv      []string // environment of kadmin (KRB5_CONFIG)

	// KDC answers the rotation's Kerberos requests and makes the key
	// change; nil means the realm's real KDCs (see [KDC]).
	KDC KDC
	// ClockProbe reads one KDC's clock for preflight.clock; nil means a
	// real probe (kdcops.ProbeClock).
	ClockProbe func(ctx context.Context, k kdcops.KDC) (*kdcops.ClockSample, error)

	Operator      string
	CorrelationID string
	Timeout       time.Duration
	WarnSkew      time.Duration
	Log           *slog.Logger
	Now           func() time.Time
	// AfterStep runs after each step (the test-only crash hook).
	AfterStep func(id string)

	// Deny lists principal patterns (path.Match syntax, on the name
	// with or without the realm) that must never be rotated, on top of
	// the built-in ones (see [Denied]).
	Deny []string
	// NoLoginRecordOK lets a client rotate when the KDC logs hold no
	// login of it (a new principal, logs kept elsewhere): without it the
	// last-login check fails closed.
	NoLoginRecordOK bool
	// KDCLogs are the KDC logs the last-login check reads (MIT krb5kdc
	// format; rotated and .gz files too).
	KDCLogs []string
	// PolicyAllowlist, when set, decides preflight.allowlist in place of
	// the Allowlist file: a policy file's clusters section.
	PolicyAllowlist *AllowlistDecision
	// Policy is the effective policy with the source of every value; the
	// dry-run plan reports it (step plan.policy).
	Policy []PolicySetting
	// AdmissionDecides makes preflight.rate-limit advisory only (a warning
	// when the window looks full): a batch leaves the decision to the
	// ledger's admission at preflight.lock, whose refusal says until when,
	// so the target can be deferred until then.
	AdmissionDecides bool
	// Logins, when set, answers preflight.last-login in place of reading
	// KDCLogs: a batch indexes the logs once, as of its start (an earlier
	// cut than the rotation's own start, so never a later login).
	Logins *Logins

	// run state
	runStart  time.Time
	journal   *Journal
	current   []kdcops.KeytabEntry // --keytab's entries of the principal at the KDC's kvno
	preTicket *messages.Ticket     // a server's ticket issued before the change
	resume    bool
	// preflightKVNO is the KDC's kvno preflight.keytab saw; the plan is
	// made again under the lock and refused if the KDC moved meanwhile.
	preflightKVNO uint32
	// issued is the longest lifetime the KDC gave the tickets of
	// preflight (TGT, service ticket): phase 2 waits at least that long.
	issued time.Duration
	// tgtLifetime is the lifetime of the TGT the KDC issued the principal
	// in preflight: how long a client's last login keeps it logged in.
	tgtLifetime time.Duration
}

func (r *Rotation) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Rotation) components() []string {
	name, _ := kdcops.SplitPrincipal(r.Principal)
	return strings.Split(name, "/")
}

func (r *Rotation) holder(j *Journal) string { return "krbops rotate " + j.ID }

// lockTTL bounds a lock whose rotation died; a stale lock still holds
// until --resume finishes or an operator breaks it (ledger.Lock).
const lockTTL = time.Hour

// Runbook returns the rotation's steps. With resume the journal j (from
// LoadJournal) says what is done; the KDC is tested before any key change
// is repeated.
func (r *Rotation) Runbook(resume bool, j *Journal) runbook.Runbook {
	r.runStart = r.now()
	r.resume, r.journal = resume, j
	var steps []runbook.Step
	add := func(id, title string, run func(context.Context, *runbook.State) runbook.Result) {
		s := runbook.Step{ID: id, Title: title, Run: run}
		if n := len(steps); n > 0 {
			s.Needs = []string{steps[n-1].ID}
		}
		steps = append(steps, s)
	}
	clk := clock.Check{Config: r.Config, Realm: r.Realm, Principal: r.Principal, KDCs: r.KDCs,
		WarnSkew: r.WarnSkew, MaxSkew: r.Config.ClockSkew(), Timeout: r.Timeout, Log: r.Log, Quick: true, ProbeKDC: r.ClockProbe}
	cs := clk.FirstKDCStep(StepClock, "KDC clock within clockskew")
	add(cs.ID, cs.Title, cs.Run)
	if !resume {
		add(StepKeytab, "current keytab authenticates", r.stepKeytab)
		add(StepKpasswd, "kpasswd/kadmin reachable", r.stepKpasswd)
	}
	add(StepStore, "secret store writable", r.stepStore)
	if !resume {
		add(StepAllowlist, "cluster in allowlist", r.stepAllowlist)
		add(StepRate, "rate limit of (cluster, role)", r.stepRate)
		if r.Role.LogsIn() {
			add(StepLastLogin, "last login leaves TGT lifetime", r.stepLastLogin)
		}
	}
	add(StepLock, "principal locked for this rotation", r.stepLock)
	add(StepCreate, "new keys derived and journaled", r.stepCreate)
	add(StepPutPending, "pending keytab in the secret store", r.stepPutPending)
	add(StepSet, "key changed at the KDC ("+r.Backend+")", r.stepSet)
	add(StepTest, "pending keytab works", r.stepTest)
	add(StepPromote, "pending promoted to current", r.stepPromote)
	add(StepPublish, "keytab file published", r.stepPublish)
	add(StepLedger, "rotation recorded", r.stepLedger)
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
	return runbook.Runbook{Command: "rotate", Steps: steps}
}

// readKeytab returns the principal's entries of the --keytab file.
func readKeytab(path, principal string) ([]kdcops.KeytabEntry, *kdcops.Keytab, error) {
	kt, err := kdcops.ReadKeytabFile(path, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		return nil, nil, err
	}
	ents := kt.EntriesFor(principal)
	if len(ents) == 0 {
		return nil, kt, fmt.Errorf("keytab %s holds no key of %s", path, principal)
	}
	return ents, kt, nil
}

func (r *Rotation) stepKeytab(ctx context.Context, _ *runbook.State) runbook.Result {
	// The published keytab must come back exactly as its service reads it:
	// refuse now, before the KDC changes, if this process cannot do that.
	if res, ok := r.keytabReplaceable(); !ok {
		return res
	}
	ents, _, err := readKeytab(r.Keytab, r.Principal)
	if err != nil {
		if isFileError(err) {
			return runbook.Usagef("--keytab %s: %s", r.Keytab, describe(err)).WithHint("pass --keytab with the principal's current keytab")
		}
		return runbook.Failf("%s", err).WithHint("pass --keytab with the principal's current keytab")
	}
	res, err := r.kdc().Check(ctx, ents)
	if err != nil {
		return runbook.Errorf("asking the KDC about %s: %s", r.Principal, err).WithHint("check that the KDC answers (krbops clock-check)")
	}
	switch {
	case res.Unknown:
		return runbook.Failf("the KDC does not know %s", r.Principal).WithHint("check the principal name and realm")
	case res.Refused != "":
		return runbook.Failf("the KDC refuses %s tickets: %s", r.Principal, res.Refused).WithHint("fix the principal at the KDC (kadmin getprinc) before rotating")
	case !res.KVNOKnown:
		return runbook.Failf("the current keytab does not authenticate: %s", res.KVNONote).WithHint("repair the keytab first (krbops verify); rotating from a broken keytab risks a lockout")
	}
	ok := false
	for _, kc := range res.Checks {
		ok = ok || kc.OK && kc.KVNO == res.KDCKVNO
	}
	if !ok {
		return runbook.Failf("the keytab holds no working key at the KDC's kvno %d", res.KDCKVNO).WithHint("repair the keytab first (krbops verify)")
	}
	r.current = kdcops.AtKVNO(ents, res.KDCKVNO)
	r.preflightKVNO = res.KDCKVNO
	ev := runbook.Evidence{"kdc_kvno": res.KDCKVNO, "new_kvno": res.KDCKVNO + 1}
	// The lifetimes the KDC really issues decide phase 2's wait: a
	// krb5.conf on the operator's host says what it asks for, not what
	// the KDC grants.
	sess, err := r.kdc().Login(ctx, r.current)
	if err != nil || sess == nil {
		return runbook.Errorf("login as %s to measure ticket lifetimes failed", r.Principal).WithHint("check that the KDC answers")
	}
	r.issued, r.tgtLifetime = sess.Lifetime(), sess.Lifetime()
	ev["tgt_lifetime"] = r.issued.String()
	tkt, err := r.kdc().ServiceTicket(ctx, sess, types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: r.components()})
	switch {
	case err == nil:
		if ap := kdcops.DecryptTicket(tkt, r.current); ap.Decrypted {
			ev["ticket_lifetime"] = ap.Lifetime().String()
			r.issued = max(r.issued, ap.Lifetime())
		}
		// A ticket issued now, under the old kvno, must still decrypt
		// with the phase-1 keytab: test proves it.
		r.preTicket = &tkt
	case r.Role.Serves():
		return runbook.Errorf("service ticket for %s: %s", r.Principal, err).WithHint("the principal must be usable as a service")
	}
	var ets []string
	for _, k := range res.KDCKeys {
		ets = append(ets, kdcops.EnctypeName(k.Enctype))
	}
	ev["enctypes"] = ets
	if !r.Role.Serves() {
		r.preTicket = nil
	}
	return runbook.Passf("kvno %d authenticates; keys %s; the KDC issues tickets for %s", res.KDCKVNO, strings.Join(ets, ", "), r.issued.Round(time.Second)).
		With(ev)
}

// keytabReplaceable refuses a --keytab that finish.keytab could not put
// back as its service reads it: a link or special file, or an owner or
// group this process cannot give a new file.
func (r *Rotation) keytabReplaceable() (runbook.Result, bool) {
	attrs, err := durable.ReadAttrs(r.Keytab)
	if err != nil {
		if errors.Is(err, durable.ErrNotPrivate) {
			return runbook.Usagef("--keytab %s", describe(err)).WithHint("pass the keytab file itself, not a link to it"), false
		}
		return runbook.Usagef("--keytab %s: %s", r.Keytab, describe(err)).WithHint("pass --keytab with the principal's current keytab"), false
	}
	if err := durable.CanReplace(r.Keytab, attrs); err != nil {
		return runbook.Usagef("--keytab %s: %s", r.Keytab, describe(err)).
			WithHint("run krbops as root or as the keytab's owner, so the rewritten keytab keeps its owner, group and mode; nothing was changed"), false
	}
	return runbook.Result{}, true
}

// Phase2Wait is how long phase 2 of a server rotation must wait after
// phase 1: the longest ticket lifetime the KDC issued in preflight, and
// never less than the configured lifetime.
func (r *Rotation) Phase2Wait() time.Duration { return max(r.issued, r.TicketLifetime) }

func (r *Rotation) stepKpasswd(ctx context.Context, _ *runbook.State) runbook.Result {
	if r.Backend != BackendKpasswd {
		if _, err := os.Stat(r.AdminKeytab); err != nil {
			return runbook.Usagef("--admin-keytab %s: %s", r.AdminKeytab, describe(err)).WithHint("pass the admin principal's keytab")
		}
	}
	server, err := r.kdc().ChangeServer(ctx, r.Backend)
	var se *setupError
	switch {
	case errors.As(err, &se):
		return runbook.Usagef("%s", se.msg).WithHint("%s", se.hint)
	case err != nil:
		what := "the kpasswd server (MIT: kadmind; Heimdal: kpasswdd, UDP only) is running and reachable over TCP or UDP"
		if r.Backend == BackendKadmin {
			what = "MIT's kadmind is running and reachable over TCP (" + kadminOnlyMIT + ")"
		}
		return runbook.Errorf("%s", err).WithHint("check %s; nothing was changed", what)
	}
	return runbook.Passf("%s server %s answers", r.Backend, server).With(runbook.Evidence{"server": server})
}

func (r *Rotation) stepStore(ctx context.Context, _ *runbook.State) runbook.Result {
	if err := r.Store.Check(ctx, r.Secret); err != nil {
		hint := "fix the secret store's access before rotating; nothing was changed"
		if h := fault.HintOf(err); h != "" {
			hint = h + "; nothing was changed"
		}
		return storeResult(err, "%s", err).WithHint("%s", hint)
	}
	return runbook.Passf("secret %s can be written", r.Secret)
}

func (r *Rotation) stepAllowlist(context.Context, *runbook.State) runbook.Result {
	if d := r.PolicyAllowlist; d != nil {
		return d.result(r.Cluster)
	}
	// A list of cluster names: 1 MiB is thousands of clusters, and a FIFO
	// or device is refused rather than waited on.
	b, err := readcap.ReadFile(r.Allowlist, 1<<20)
	if err != nil {
		return runbook.Usagef("--allowlist %s: %s", r.Allowlist, describe(err)).WithHint("pass the file of clusters cleared for rotation, one per line")
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if strings.TrimSpace(line) == r.Cluster {
			return runbook.Passf("cluster %s is allowlisted", r.Cluster)
		}
	}
	return runbook.Failf("cluster %s is not in the allowlist %s", r.Cluster, r.Allowlist).
		WithHint("roll out cluster by cluster: add %s to the allowlist when its turn comes", r.Cluster)
}

func (r *Rotation) stepRate(ctx context.Context, _ *runbook.State) runbook.Result {
	since := r.now().Add(-r.Window)
	n, err := r.Ledger.CountSince(ctx, r.Cluster, string(r.Role), since)
	if err != nil {
		res := ledgerResult(err, "ledger: %s", err)
		if res.Hint == "" {
			res = res.WithHint("check --ledger")
		}
		return res
	}
	ev := runbook.Evidence{"count": n, "max": r.MaxPerWindow, "window": r.Window.String()}
	if n >= r.MaxPerWindow && r.AdmissionDecides {
		return runbook.Warnf("%d rotations of (%s, %s) in the last %s reach the limit of %d: the admission at %s decides", n, r.Cluster, r.Role, r.Window, r.MaxPerWindow, StepLock).With(ev)
	}
	if n >= r.MaxPerWindow {
		return runbook.Failf("%d rotations of (%s, %s) in the last %s: the window's limit of %d is reached", n, r.Cluster, r.Role, r.Window, r.MaxPerWindow).
			With(ev).WithHint("wait for the window to move on; the blast radius per fault domain is bounded on purpose")
	}
	return runbook.Passf("%d of %d rotations of (%s, %s) in the last %s", n, r.MaxPerWindow, r.Cluster, r.Role, r.Window).With(ev)
}

func (r *Rotation) lastLogin(logs []string) (time.Time, bool, error) {
	if r.Logins != nil {
		at, ok := r.Logins.Last(r.Principal)
		return at, ok, nil
	}
	return LastLogin(logs, r.Principal, r.runStart)
}

func (r *Rotation) stepLastLogin(context.Context, *runbook.State) runbook.Result {
	logs := r.KDCLogs
	if len(logs) == 0 {
		return runbook.Usagef("no --kdc-log to read %s's last login from", r.Principal).
			WithHint("pass --kdc-log (repeatable: every KDC's log, rotated and .gz files too)")
	}
	at, found, err := r.lastLogin(logs)
	if err != nil {
		return runbook.Usagef("--kdc-log: %s", describe(err)).WithHint("pass the KDC logs (MIT krb5kdc, Heimdal kdc or an AD 4768 export) that record the principal's logins")
	}
	ev := runbook.Evidence{"kdc_logs": logs}
	if !found {
		// Fail closed: no record is as likely a log that rotated away, a
		// login at another KDC or another format as a client that never
		// logs in; guessing wrong locks a live client out.
		if r.NoLoginRecordOK {
			return runbook.Warnf("no login of %s in %d log(s); --no-login-record-ok: rotating without one", r.Principal, len(logs)).With(ev)
		}
		return runbook.Failf("no login of %s in %d log(s): its TGT's lifetime cannot be checked", r.Principal, len(logs)).With(ev).
			WithHint("pass every KDC's log (--kdc-log, repeatable; kdc.log.1 and .gz files too); if the principal really never logs in, add --no-login-record-ok")
	}
	life := r.TicketLifetime
	if r.tgtLifetime > 0 {
		life = r.tgtLifetime // what the KDC gives this principal, measured in preflight
	}
	left := at.Add(life).Sub(r.now())
	ev["last_login"], ev["tgt_remaining"], ev["tgt_lifetime"] = at.UTC().Format(time.RFC3339), left.Round(time.Second).String(), life.String()
	if left < r.MinTGTRemaining {
		return runbook.Failf("last login %s leaves %s of TGT lifetime, less than --min-tgt-remaining %s",
			at.UTC().Format(time.RFC3339), left.Round(time.Second), r.MinTGTRemaining).With(ev).
			WithHint("wait until the client logs in again (its next AS_REQ), then rotate at once")
	}
	return runbook.Passf("last login %s leaves %s of TGT lifetime", at.UTC().Format(time.RFC3339), left.Round(time.Second)).With(ev)
}

func (r *Rotation) stepLock(ctx context.Context, _ *runbook.State) runbook.Result {
	if res, denied := r.refuseDenied(); denied {
		return res
	}
	if r.resume {
		return r.relock(ctx)
	}
	if err := CheckJournalDir(r.JournalDir); err != nil {
		return untrusted(err)
	}
	if res, busy := r.inProgress(); busy {
		return res
	}
	j := &Journal{ID: newID(), Principal: r.Principal, Role: r.Role, Backend: r.Backend, Cluster: r.Cluster, Tier: r.Tier,
		Keytab: r.Keytab, Secret: r.Secret, CorrelationID: r.CorrelationID, Started: r.now(), State: StateLocked}
	// The lock comes first. Of two rotations started at once, the one that
	// loses it has planned, journaled and stored nothing, so it cannot
	// trip over the winner's journal, pending version or ledger record.
	if _, err := r.Ledger.Lock(ctx, r.Principal, r.holder(j), lockTTL); err != nil {
		if !r.takeOverDeadLock(ctx, err) {
			return lockRefused(err)
		}
		if _, err := r.Ledger.Lock(ctx, r.Principal, r.holder(j), lockTTL); err != nil {
			return lockRefused(err)
		}
	}
	unlock := func() { _ = r.Ledger.Unlock(ctx, r.Principal, r.holder(j)) }
	// Under the lock a journal can only be a crashed run's: look again.
	if res, busy := r.inProgress(); busy {
		unlock()
		return res
	}
	// The plan is made from the KDC as it is now, under the lock: a kvno
	// read before it could be one another rotation has already moved past.
	plan, err := r.kdc().Check(ctx, r.current)
	switch {
	case err != nil:
		unlock()
		return runbook.Errorf("asking the KDC about %s under the lock: %s", r.Principal, err).WithHint("check that the KDC answers; nothing was changed")
	case !plan.KVNOKnown || plan.KDCKVNO != r.preflightKVNO:
		unlock()
		return runbook.Failf("the KDC's kvno of %s moved from %d to %d since the pre-checks: another rotation changed it", r.Principal, r.preflightKVNO, plan.KDCKVNO).
			WithHint("nothing was changed; fetch the current keytab (krbops verify shows the KDC's kvno), then run again")
	}
	j.OldKVNO, j.NewKVNO, j.KDCKeys, j.Phase2Wait = plan.KDCKVNO, plan.KDCKVNO+1, plan.KDCKeys, r.Phase2Wait()
	r.journal = j
	if err := j.save(r.JournalDir, r.now()); err != nil {
		unlock()
		if errors.Is(err, durable.ErrUntrusted) {
			return untrusted(err)
		}
		return runbook.Usagef("journal: %s", err).WithHint("make --journal-dir writable; nothing was changed")
	}
	rot, err := r.startLedger(ctx, j)
	if err != nil {
		// The journal is this run's own: it was written under the lock.
		_ = removeJournal(r.JournalDir, r.Principal)
		unlock()
		if errors.Is(err, ledger.ErrConflict) {
			return runbook.Failf("%s already has an open rotation in the ledger", r.Principal).
				WithHint("finish it first: krbops rotate status, then rotate finish (servers) or rotate --resume")
		}
		if res, refused := notAdmitted(err); refused {
			return res
		}
		return ledgerResult(err, "ledger: %s", err)
	}
	j.LedgerID = rot.ID
	if err := j.save(r.JournalDir, r.now()); err != nil {
		return runbook.Usagef("journal: %s", err).WithHint("make --journal-dir writable, then rotate --resume")
	}
	return runbook.Passf("locked %s for rotation %s: kvno %d to %d", r.Principal, j.ID, j.OldKVNO, j.NewKVNO).
		With(runbook.Evidence{"ledger_id": rot.ID, "old_kvno": j.OldKVNO, "new_kvno": j.NewKVNO, "phase2_wait": j.Phase2Wait.String()})
}

// refuseDenied refuses a principal on the deny-list, whatever the run
// got this far with (a journal, a flag): checked again at the lock and
// right before the key change.
func (r *Rotation) refuseDenied() (runbook.Result, bool) {
	if p, denied := Denied(r.Principal, r.Deny); denied {
		return runbook.Usagef("refusing to rotate %s: it matches the deny pattern %s", r.Principal, p).
			WithHint("the realm's own keys (krbtgt, kadmin, changepw, kiprop, K/M) are never rotated by krbops; nothing was changed"), true
	}
	return runbook.Result{}, false
}

// takeOverDeadLock breaks the lock in err when it can only be the trace
// of a run that died before planning anything: its process is gone, it
// left no journal here (checked by the caller), and the ledger has no
// record it started. Such a run changed nothing (the journal comes before
// any change), so waiting for an operator would only stall the next
// rotation. The break goes to the audit trail. Any doubt keeps the lock.
func (r *Rotation) takeOverDeadLock(ctx context.Context, err error) bool {
	var le *ledger.LockedError
	if !errors.As(err, &le) || holderState(le.Lock) != procstat.Dead {
		return false
	}
	id, ok := strings.CutPrefix(le.Lock.Holder, "krbops rotate ")
	if !ok {
		return false
	}
	recs, lerr := r.Ledger.List(ctx, ledger.Filter{Principal: r.Principal, Limit: 1})
	if lerr != nil || len(recs) > 0 && recs[0].JournalID == id {
		return false
	}
	broken, berr := r.Ledger.BreakLock(ctx, r.Principal, le.Lock.Holder, true)
	if berr != nil {
		return false
	}
	_, _ = r.Ledger.Record(ctx, ledger.Event{Principal: r.Principal, Action: "takeover", Operator: r.Operator,
		Reason: "the holder's process is gone and it left no journal or ledger record: it died before planning anything",
		Detail: fmt.Sprintf("%s (pid %d on %s, since %s)", broken.Holder, broken.PID, broken.Host, broken.Acquired.UTC().Format(time.RFC3339))})
	return true
}

// inProgress reports a journal of the principal already in the journal
// directory: a rotation to resume, not to start again.
func (r *Rotation) inProgress() (runbook.Result, bool) {
	old, err := LoadJournal(r.JournalDir, r.Principal)
	switch {
	case err == nil:
		return runbook.Failf("a rotation of %s is in progress (journal state %s)", r.Principal, old.State).
			WithHint("run %s, or %s if it never reached the KDC", r.command("rotate --resume"), r.command("rotate abort")), true
	case errors.Is(err, ErrNoJournal):
		return runbook.Result{}, false
	case errors.Is(err, durable.ErrUntrusted):
		return untrusted(err), true
	}
	return runbook.Usagef("%s", err).WithHint("inspect the journal in --journal-dir"), true
}

// relock takes the lock again for a resumed rotation and proves, before
// anything can reach the KDC, that the journal belongs to its ledger
// record and to the store's pending version.
func (r *Rotation) relock(ctx context.Context) runbook.Result {
	j := r.journal
	if _, err := r.Ledger.Lock(ctx, r.Principal, r.holder(j), lockTTL); err != nil {
		return lockRefused(err)
	}
	if j.LedgerID == "" {
		// The crash came between ledger.Start and the journal update: the
		// open record must be the one this journal started.
		open, err := r.Ledger.List(ctx, ledger.Filter{Principal: r.Principal, Outcome: ledger.InProgress, Limit: 1})
		if err != nil {
			return ledgerResult(err, "ledger: %s", err)
		}
		if len(open) == 0 {
			rot, err := r.startLedger(ctx, j)
			if res, refused := notAdmitted(err); refused {
				return res
			}
			if err != nil {
				return ledgerResult(err, "ledger: %s", err)
			}
			open = append(open, rot)
		}
		j.LedgerID = open[0].ID
		if err := j.save(r.JournalDir, r.now()); err != nil {
			return runbook.Usagef("journal: %s", err).WithHint("make --journal-dir writable, then rotate --resume")
		}
	}
	if j.State < StatePublished {
		// --resume skips preflight.keytab: what finish.keytab needs is
		// checked here, before anything can reach the KDC.
		if res, ok := r.keytabReplaceable(); !ok {
			return res
		}
	}
	if err := r.checkBinding(ctx, j); err != nil {
		return runbook.Failf("the journal of %s does not belong to this rotation: %s", r.Principal, err).
			WithHint("nothing was changed; compare %s with %s before doing anything else", r.command("rotate status"), "the journal in --journal-dir")
	}
	return runbook.Passf("resuming rotation %s of %s from state %s", j.ID, r.Principal, j.State).
		With(runbook.Evidence{"journal_state": j.State.String(), "old_kvno": j.OldKVNO, "new_kvno": j.NewKVNO, "ledger_id": j.LedgerID})
}

// checkBinding: journal, ledger record and store must tell the same
// story — same rotation, principal and kvnos, the pending keytab the
// record was bound to at create.keys, and the store's version holding
// the journal's pending keytab.
func (r *Rotation) checkBinding(ctx context.Context, j *Journal) error {
	rec, err := r.Ledger.Get(ctx, j.LedgerID)
	if err != nil {
		return fmt.Errorf("ledger record %s: %w", j.LedgerID, err)
	}
	// finish.ledger records the outcome, unlocks, then removes the journal:
	// a crash in between leaves a published journal whose record already
	// says succeeded, and the resume only has to remove the journal.
	endedHere := j.State >= StatePublished && rec.Outcome == ledger.Succeeded
	switch {
	case !rec.Outcome.Open() && !endedHere:
		return fmt.Errorf("ledger record %s already ended (%s)", rec.ID, rec.Outcome)
	case rec.Principal != j.Principal:
		return fmt.Errorf("ledger record %s is of %s", rec.ID, rec.Principal)
	case rec.JournalID != "" && rec.JournalID != j.ID:
		return fmt.Errorf("ledger record %s was started by journal %s, not %s", rec.ID, rec.JournalID, j.ID)
	case rec.OldKVNO != j.OldKVNO || rec.NewKVNO != j.NewKVNO:
		return fmt.Errorf("ledger record %s rotates kvno %d to %d, the journal %d to %d", rec.ID, rec.OldKVNO, rec.NewKVNO, j.OldKVNO, j.NewKVNO)
	case j.State >= StateCreated && rec.PendingSHA256 != "" && rec.PendingSHA256 != j.CreatedSHA:
		return fmt.Errorf("the journal's pending keytab is not the one ledger record %s was bound to", rec.ID)
	}
	if j.State >= StateStored && j.PendingVersion != "" {
		v, err := r.Store.GetVersion(ctx, r.Secret, j.PendingVersion)
		if err != nil {
			return fmt.Errorf("store version %s: %w", j.PendingVersion, err)
		}
		if keytabSHA(v.Data) != keytabSHA(j.Pending) {
			return fmt.Errorf("store version %s does not hold the journal's pending keytab", j.PendingVersion)
		}
	}
	return nil
}

func lockRefused(err error) runbook.Result {
	if errors.Is(err, ledger.ErrLocked) {
		return runbook.Failf("%s", err).WithHint("another rotation holds the principal; inspect it with krbops rotate status (nothing was changed)")
	}
	return ledgerResult(err, "ledger: %s", err)
}

// untrusted is the refusal of state another user could have written.
func untrusted(err error) runbook.Result {
	return runbook.Usagef("%s", err).
		WithHint("keep --journal-dir and its journals private to the user who rotates (chmod 700 DIR, chmod 600 DIR/*.json, owned by that user); nothing was changed")
}

// command is a krbops command line for a hint, with the principal quoted
// for a shell.
func (r *Rotation) command(sub string) string {
	return "krbops " + sub + " --principal " + shellQuote(r.Principal)
}

// startLedger records the rotation through the ledger's admission: the
// rate limit is decided and the rotation recorded in one atomic step, so
// operators racing past preflight.rate-limit together (on several hosts,
// with a shared ledger) never exceed it.
func (r *Rotation) startLedger(ctx context.Context, j *Journal) (ledger.Rotation, error) {
	return r.Ledger.Admit(ctx, ledger.AdmitRequest{Rotation: ledger.Rotation{
		Principal: r.Principal, Cluster: j.Cluster, Role: string(j.Role), Tier: j.Tier, Operator: r.Operator,
		CorrelationID: r.CorrelationID, OldKVNO: j.OldKVNO, NewKVNO: j.NewKVNO, Phase: phaseOf(j.Role, ledger.Phase1),
		JournalID: j.ID, Phase2Wait: j.Phase2Wait,
	}, Limit: r.MaxPerWindow, Window: r.Window, MinGap: r.MinGap})
}

// notAdmitted is the lock step's result for an admission the ledger
// refused: nothing was changed, and the refusal says until when.
func notAdmitted(err error) (runbook.Result, bool) {
	var ae *ledger.AdmitError
	if !errors.As(err, &ae) {
		return runbook.Result{}, false
	}
	until := ae.Until.UTC().Format(time.RFC3339)
	ev := runbook.Evidence{"count": ae.Count, "max": ae.Limit, "window": ae.Window.String(), "until": until}
	if ae.Reason == ledger.MinGapWait {
		ev["min_gap"] = ae.MinGap.String()
		return runbook.Failf("(%s, %s) rotated last at %s: min gap %s until %s", ae.Cluster, ae.Role, ae.Last.UTC().Format(time.RFC3339), ae.MinGap, until).
			With(ev).WithHint("run again after %s; nothing was changed", until), true
	}
	return runbook.Failf("%d of %d rotations of (%s, %s) in the last %s: window full until %s", ae.Count, ae.Limit, ae.Cluster, ae.Role, ae.Window, until).
		With(ev).WithHint("run again after %s (another operator may have used the window meanwhile); nothing was changed", until), true
}

func phaseOf(role Role, p ledger.Phase) ledger.Phase {
	if role.Serves() {
		return p
	}
	return ledger.NoPhase
}

// Password alphabet. The symbols are ones no KDC's prompt or request path
// mangles and no shell or krb5.conf reading treats specially: no quote,
// backslash, '#', '$', '!', '@', '%' or space.
const (
	passwordLetters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	passwordOthers  = "0123456789-_.+=:,"
	passwordLength  = 64
)

// NewPassword returns a random password of 64 characters (over 300 bits)
// that Active Directory's complexity rule accepts: upper and lower case
// letters, a digit and a symbol, and never three letters in a row (every
// third character is a digit or symbol), so it cannot contain an account
// name or a display-name token, which that rule also refuses. A kadmin
// prompt takes it as typed (no whitespace, no newline).
func NewPassword() string {
	for {
		b := make([]byte, passwordLength)
		for i := range b {
			set := passwordLetters
			if i%3 == 2 {
				set = passwordOthers
			}
			b[i] = set[randIndex(len(set))]
		}
		pw := string(b)
		if strings.ContainsAny(pw, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") && strings.ContainsAny(pw, "abcdefghijklmnopqrstuvwxyz") &&
			strings.ContainsAny(pw, "0123456789") && strings.ContainsAny(pw, "-_.+=:,") {
			return pw
		}
	}
}

// randIndex is a uniform random index below n (n <= 256), by rejection
// so no index is likelier than another.
func randIndex(n int) int {
	limit := 256 - 256%n
	var one [1]byte
	for {
		if _, err := rand.Read(one[:]); err != nil {
			panic("crypto/rand: " + err.Error()) // crypto/rand.Read never fails on Linux
		}
		if int(one[0]) < limit {
			return int(one[0]) % n
		}
	}
}

func (r *Rotation) saveJournal(s State) error {
	if s > r.journal.State {
		r.journal.State = s
	}
	return r.journal.save(r.JournalDir, r.now())
}

func journalError(err error) runbook.Result {
	return runbook.Usagef("journal: %s", err).WithHint("make --journal-dir writable, then krbops rotate --resume")
}

func (r *Rotation) stepCreate(ctx context.Context, _ *runbook.State) runbook.Result {
	j := r.journal
	if j.State >= StateCreated {
		if err := r.bindLedger(ctx); err != nil {
			return ledgerResult(err, "ledger: %s", err)
		}
		return runbook.Passf("pending keytab kvno %d already journaled", j.NewKVNO)
	}
	cur, _, err := readKeytab(r.Keytab, r.Principal)
	if err != nil {
		return runbook.Failf("%s", err).WithHint("restore --keytab from its backup, then rotate --resume")
	}
	cur = kdcops.AtKVNO(cur, j.OldKVNO)
	pw := NewPassword()
	next, err := kdcops.DeriveKeytab(r.Realm, r.components(), j.KDCKeys, pw, j.NewKVNO, r.now())
	if err != nil {
		return runbook.Failf("%s", err).WithHint("remove the enctype from the principal (kadmin) or rotate it with kadmin ktadd")
	}
	pending := next
	if j.Role.Serves() {
		pending = append(append([]kdcops.KeytabEntry(nil), cur...), next...)
	}
	data, err := kdcops.MarshalKeytab(pending)
	if err != nil {
		return runbook.Errorf("%s", err)
	}
	j.Password, j.Pending, j.CreatedSHA = pw, data, keytabSHA(data)
	j.Token, j.SeedToken = secretstore.NewToken(), secretstore.NewToken()
	if err := r.saveJournal(StateCreated); err != nil {
		return journalError(err)
	}
	if err := r.bindLedger(ctx); err != nil {
		return ledgerResult(err, "ledger: %s", err)
	}
	return runbook.Passf("pending keytab: kvno %v, %d keys", kdcops.KVNOs(pending), len(pending)).
		With(runbook.Evidence{"new_kvno": j.NewKVNO, "kvnos": kdcops.KVNOs(pending)})
}

// bindLedger records the pending keytab's fingerprint in the ledger
// record, once: a resumed run proves with it that its journal is the one
// this record belongs to. After a crash between the journal and the
// ledger write it is recorded on resume.
func (r *Rotation) bindLedger(ctx context.Context) error {
	j := r.journal
	_, err := r.Ledger.Update(ctx, j.LedgerID, func(rot *ledger.Rotation) error {
		switch rot.PendingSHA256 {
		case "":
			rot.PendingSHA256 = j.CreatedSHA
		case j.CreatedSHA:
		default:
			return fmt.Errorf("%w: rotation %s is bound to another pending keytab", ledger.ErrConflict, rot.ID)
		}
		return nil
	})
	return err
}

func (r *Rotation) stepPutPending(ctx context.Context, _ *runbook.State) runbook.Result {
	j := r.journal
	if j.State >= StateStored {
		return runbook.Passf("pending version %s already stored", j.PendingVersion)
	}
	if _, err := r.Store.Get(ctx, r.Secret, secretstore.StageCurrent); errors.Is(err, secretstore.ErrNotFound) {
		// The store must hold a working current keytab before the KDC
		// changes: seed it with the one that authenticates now.
		cur, _, err := readKeytab(r.Keytab, r.Principal)
		if err != nil {
			return runbook.Failf("%s", err)
		}
		data, err := kdcops.MarshalKeytab(kdcops.AtKVNO(cur, j.OldKVNO))
		if err != nil {
			return runbook.Errorf("%s", err)
		}
		if _, err := r.Store.Seed(ctx, r.Secret, data, j.SeedToken); err != nil && !errors.Is(err, secretstore.ErrConflict) {
			return storeResult(err, "seed the secret store: %s", err).WithHint("fix the store, then krbops rotate --resume; the KDC is unchanged")
		}
	} else if err != nil {
		return storeResult(err, "%s", err).WithHint("fix the store, then krbops rotate --resume; the KDC is unchanged")
	}
	v, err := r.Store.PutPending(ctx, r.Secret, j.Pending, j.Token)
	if err != nil {
		return storeResult(err, "store the pending keytab: %s", err).WithHint("fix the store, then krbops rotate --resume; the KDC is unchanged")
	}
	j.PendingVersion = v.ID
	if err := r.saveJournal(StateStored); err != nil {
		return journalError(err)
	}
	return runbook.Passf("pending version %s stored in %s", v.ID, r.Secret).With(runbook.Evidence{"version": v.ID})
}

func (r *Rotation) pendingEntries() ([]kdcops.KeytabEntry, error) {
	kt, err := kdcops.ParseKeytab(r.journal.Pending, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		return nil, errors.New("the journal's pending keytab does not parse")
	}
	return kt.Entries, nil
}

// pendingWorks reports whether the KDC accepts the pending keytab's new
// key: the key change has happened.
func (r *Rotation) pendingWorks(ctx context.Context) (*kdcops.Session, bool, error) {
	ents, err := r.pendingEntries()
	if err != nil {
		return nil, false, err
	}
	sess, err := r.kdc().Login(ctx, kdcops.AtKVNO(ents, r.journal.NewKVNO))
	if err != nil {
		return nil, false, err
	}
	return sess, sess != nil, nil
}

func (r *Rotation) stepSet(ctx context.Context, _ *runbook.State) runbook.Result {
	if res, denied := r.refuseDenied(); denied {
		return res
	}
	j := r.journal
	if j.State >= StateSet {
		return runbook.Passf("the KDC already holds kvno %d", j.NewKVNO)
	}
	if r.resume || j.State == StateSetting {
		// Find out before anything else: a change sent before a crash, a
		// lost reply or a timeout may have reached the KDC. Repeating it
		// would fail (kpasswd with the old key) or bump the kvno past the
		// pending keytab (kadmin).
		switch applied, res := r.changeApplied(ctx); {
		case res.Status != "":
			return res
		case applied:
			if err := r.saveJournal(StateSet); err != nil {
				return journalError(err)
			}
			return runbook.Passf("the KDC already accepts kvno %d (changed before the crash): not repeated", j.NewKVNO)
		}
	}
	if err := r.saveJournal(StateSetting); err != nil {
		return journalError(err)
	}
	err := r.sendChange(ctx)
	if err == nil {
		if err := r.saveJournal(StateSet); err != nil {
			return journalError(err)
		}
		return runbook.Passf("the KDC changed the key of %s (%s)", r.Principal, r.Backend)
	}
	// An error says only that krbops saw no confirmation: the request may
	// have been applied and the reply lost, or reset, or late. Ask the KDC
	// which key it holds now, and never send the change again blindly.
	switch applied, res := r.changeApplied(ctx); {
	case res.Status != "":
		return runbook.Errorf("key change with %s: %s; then %s", r.Backend, err, res.Message).
			WithHint("the outcome is unknown and the pending keytab is stored; %s tests the KDC first and repeats the change only if it did not happen", r.command("rotate --resume"))
	case applied:
		if err := r.saveJournal(StateSet); err != nil {
			return journalError(err)
		}
		return runbook.Passf("the KDC applied the key change although %s answered: %s; not repeated", r.Backend, err).
			With(runbook.Evidence{"reply_error": err.Error()})
	}
	hint := "fix the cause"
	// A kpasswd refusal says what its result code means for the operator.
	var h fault.Hinter
	if errors.As(err, &h) && h.Hint() != "" {
		hint = h.Hint()
	}
	return runbook.Errorf("key change with %s failed: %s; the KDC still holds kvno %d, nothing changed", r.Backend, err, j.OldKVNO).
		WithHint("%s; then %s: it tests the KDC first and repeats the change only if it did not happen", hint, r.command("rotate --resume"))
}

func (r *Rotation) sendChange(ctx context.Context) error {
	j := r.journal
	switch r.Backend {
	case BackendKpasswd:
		cur, err := r.oldEntries()
		if err != nil {
			return err
		}
		return r.kdc().Kpasswd(ctx, cur, r.Realm, r.components(), j.Password)
	case BackendKpasswdAdmin:
		admin, _, err := readKeytab(r.AdminKeytab, r.AdminPrincipal)
		if err != nil {
			return err
		}
		kv := kdcops.KVNOs(admin)
		return r.kdc().Kpasswd(ctx, kdcops.AtKVNO(admin, kv[len(kv)-1]), r.Realm, r.components(), j.Password)
	case BackendKadmin:
		return r.kdc().KadminCPW(ctx, r.AdminPrincipal, r.AdminKeytab, r.Principal, j.Password)
	}
	return fmt.Errorf("unknown backend %q", r.Backend)
}

// oldEntries are the principal's keys at the rotation's old kvno: from
// the pending keytab of a server (it holds both), else from --keytab,
// which finish.keytab has not rewritten yet when this is asked.
func (r *Rotation) oldEntries() ([]kdcops.KeytabEntry, error) {
	j := r.journal
	if ents, err := r.pendingEntries(); err == nil {
		if old := kdcops.AtKVNO(ents, j.OldKVNO); len(old) > 0 {
			return old, nil
		}
	}
	cur, _, err := readKeytab(r.Keytab, r.Principal)
	if err != nil {
		return nil, err
	}
	old := kdcops.AtKVNO(cur, j.OldKVNO)
	if len(old) == 0 {
		return nil, fmt.Errorf("%s holds no key at kvno %d", r.Keytab, j.OldKVNO)
	}
	return old, nil
}

// changeApplied asks the KDC whether this rotation's key change is in
// place: the new key logs in (derived again from the journaled password
// when the KDC now has other enctypes or salts), or the old one still
// does. Neither means the key changed to something this rotation did not
// set, and nothing more may be sent: a failed result. An unreachable KDC
// is an error result: the outcome stays unknown.
func (r *Rotation) changeApplied(ctx context.Context) (bool, runbook.Result) {
	j := r.journal
	_, ok, err := r.pendingWorks(ctx)
	if err != nil {
		return false, runbook.Errorf("asking the KDC whether the change happened: %s", err).
			WithHint("check that the KDC answers, then %s", r.command("rotate --resume"))
	}
	if ok {
		return true, runbook.Result{}
	}
	if j.Password != "" {
		if keys, err := r.kdc().Keys(ctx, r.Realm, r.components()); err == nil && !kdcops.SameKeys(keys, j.KDCKeys) {
			if next, err := kdcops.DeriveKeytab(r.Realm, r.components(), keys, j.Password, j.NewKVNO, r.now()); err == nil {
				if sess, err := r.kdc().Login(ctx, next); err == nil && sess != nil {
					return true, runbook.Result{}
				}
			}
		}
	}
	old, err := r.oldEntries()
	if err != nil {
		return false, runbook.Usagef("%s", err)
	}
	sess, err := r.kdc().Login(ctx, old)
	switch {
	case err != nil:
		return false, runbook.Errorf("asking the KDC whether the change happened: %s", err).
			WithHint("check that the KDC answers, then %s", r.command("rotate --resume"))
	case sess != nil:
		return false, runbook.Result{}
	}
	return false, runbook.Failf("neither the old kvno %d nor the new kvno %d of %s logs in: the key was changed by someone else", j.OldKVNO, j.NewKVNO, r.Principal).
		WithHint("nothing more was sent; inspect the principal (kadmin getprinc) and its last changes before anything else")
}

func (r *Rotation) stepTest(ctx context.Context, _ *runbook.State) runbook.Result {
	j := r.journal
	if j.State >= StateTested {
		return runbook.Passf("pending keytab already tested")
	}
	rekeyed, res := r.rekey(ctx)
	if res.Status != "" {
		return res
	}
	sess, ok, err := r.pendingWorks(ctx)
	if err != nil {
		return runbook.Errorf("login with the pending keytab: %s", err).WithHint("check the KDC, then krbops rotate --resume")
	}
	if !ok {
		return runbook.Failf("the KDC rejects the pending keytab's kvno %d", j.NewKVNO).
			WithHint("the key changed to something else (a concurrent rotation?): inspect with kadmin getprinc; the store still has the old keytab as current")
	}
	ents, _ := r.pendingEntries()
	tkt, err := r.kdc().ServiceTicket(ctx, sess, types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: r.components()})
	if err != nil && !r.Role.Serves() && kdcops.IsNoService(err) {
		// A pure client (an AD user account without an SPN) gets no
		// tickets: the login with the new kvno's key is the proof, and
		// the AS-REP names the kvno when the KDC fills it in.
		ev := runbook.Evidence{"login_kvno": sess.KVNO, "reply_kvno": sess.ReplyKVNO}
		if sess.ReplyKVNO != 0 && sess.ReplyKVNO != j.NewKVNO {
			return runbook.Failf("the KDC answers the pending keytab's login under kvno %d, not %d", sess.ReplyKVNO, j.NewKVNO).With(ev).
				WithHint("the KDC's kvno is not the expected %d: inspect the principal at the KDC before anything else", j.NewKVNO)
		}
		return r.pendingTested(rekeyed, ev, fmt.Sprintf("login with the pending keytab's kvno %d works (%s is no service: the login is the proof)", j.NewKVNO, r.Principal))
	}
	if err != nil {
		return runbook.Errorf("service ticket for %s: %s", r.Principal, err)
	}
	ap := kdcops.DecryptTicket(tkt, ents)
	ev := runbook.Evidence{"kdc_kvno": ap.TicketKVNO, "keytab_kvnos": ap.ServerKVNOs}
	if ap.TicketKVNO != j.NewKVNO || !ap.Decrypted {
		return runbook.Failf("the KDC issues tickets under kvno %d; the pending keytab decrypts: %v", ap.TicketKVNO, ap.Decrypted).With(ev).
			WithHint("the KDC's kvno is not the expected %d: inspect with kadmin getprinc before anything else", j.NewKVNO)
	}
	msg := fmt.Sprintf("login and a kvno %d ticket work with the pending keytab", j.NewKVNO)
	if r.preTicket != nil {
		old := kdcops.DecryptTicket(*r.preTicket, ents)
		ev["old_ticket_decrypts"] = old.Decrypted
		if !old.Decrypted {
			return runbook.Failf("a ticket issued under kvno %d does not decrypt with the pending keytab", old.TicketKVNO).With(ev)
		}
		msg += fmt.Sprintf("; a kvno %d ticket from before still decrypts", old.TicketKVNO)
	}
	return r.pendingTested(rekeyed, ev, msg)
}

// pendingTested records that the pending keytab works: the journal drops
// the password and moves to StateTested.
func (r *Rotation) pendingTested(rekeyed []string, ev runbook.Evidence, msg string) runbook.Result {
	j := r.journal
	if rekeyed != nil {
		msg = fmt.Sprintf("the KDC gave kvno %d the keys %s, not the old ones: pending keytab derived again; ", j.NewKVNO, strings.Join(rekeyed, ", ")) + msg
		ev["rekeyed"], ev["enctypes"] = true, rekeyed
	}
	j.Password = "" // no longer needed: the change is confirmed
	if err := r.saveJournal(StateTested); err != nil {
		return journalError(err)
	}
	return runbook.Passf("%s", msg).With(ev)
}

// rekey makes the pending keytab hold exactly the keys the KDC now has
// for the new kvno. A password change gives a principal the realm's
// enctypes with the normal salt (MIT), whatever its old keys were: a
// pending keytab derived from the old list (aes256 only, or a migrated
// salt) would lock the principal out. The journal still holds the
// password until test.pending passes, so the keys can be derived again;
// the new pending version is journaled before it is stored, under a new
// token. It returns the enctypes when it re-derived, and a result with a
// status when it could not.
func (r *Rotation) rekey(ctx context.Context) ([]string, runbook.Result) {
	j := r.journal
	keys, err := r.kdc().Keys(ctx, r.Realm, r.components())
	if err != nil {
		return nil, runbook.Errorf("asking the KDC which keys kvno %d has: %s", j.NewKVNO, err).
			WithHint("check that the KDC answers, then %s", r.command("rotate --resume"))
	}
	var names []string
	if !kdcops.SameKeys(keys, j.KDCKeys) {
		if j.Password == "" {
			return nil, runbook.Failf("the KDC holds other keys for kvno %d than the pending keytab, and the journal no longer has the password", j.NewKVNO).
				WithHint("export the keys with kadmin ktadd -norandkey, or rotate again")
		}
		ents, err := r.pendingEntries()
		if err != nil {
			return nil, runbook.Usagef("%s", err)
		}
		next, err := kdcops.DeriveKeytab(r.Realm, r.components(), keys, j.Password, j.NewKVNO, r.now())
		if err != nil {
			return nil, runbook.Failf("%s", err).WithHint("the KDC holds a key krbops cannot derive: export the keys with kadmin ktadd -norandkey")
		}
		if j.Role.Serves() {
			next = append(kdcops.AtKVNO(ents, j.OldKVNO), next...)
		}
		data, err := kdcops.MarshalKeytab(next)
		if err != nil {
			return nil, runbook.Errorf("%s", err)
		}
		j.KDCKeys, j.Pending, j.Token, j.PendingVersion, j.Rekeyed = keys, data, secretstore.NewToken(), "", true
		if err := r.saveJournal(j.State); err != nil {
			return nil, journalError(err)
		}
	}
	if j.PendingVersion == "" {
		v, err := r.Store.PutPending(ctx, r.Secret, j.Pending, j.Token)
		if err != nil {
			return nil, storeResult(err, "store the re-derived pending keytab: %s", err).
				WithHint("the KDC has the new key; fix the store, then %s", r.command("rotate --resume"))
		}
		j.PendingVersion = v.ID
		if err := r.saveJournal(j.State); err != nil {
			return nil, journalError(err)
		}
	}
	if j.Rekeyed {
		for _, k := range keys {
			names = append(names, kdcops.EnctypeName(k.Enctype))
		}
		return names, runbook.Result{}
	}
	return nil, runbook.Result{}
}

func (r *Rotation) stepPromote(ctx context.Context, _ *runbook.State) runbook.Result {
	j := r.journal
	if j.State >= StatePromoted {
		return runbook.Passf("version %s already current", j.PendingVersion)
	}
	if err := r.Store.Promote(ctx, r.Secret, j.PendingVersion); err != nil {
		return storeResult(err, "promote %s: %s", j.PendingVersion, err).WithHint("the KDC uses the new key and the store has it as pending: fix the store, then krbops rotate --resume")
	}
	if err := r.saveJournal(StatePromoted); err != nil {
		return journalError(err)
	}
	return runbook.Passf("version %s is current in %s", j.PendingVersion, r.Secret)
}

// BackupPath is where finish keeps the keytab it replaces.
func BackupPath(keytab string, kvno uint32) string { return fmt.Sprintf("%s.kvno%d.bak", keytab, kvno) }

// maxKeytabSize bounds a keytab krbops reads to rewrite: far above any
// real keytab (hundreds of entries), far below what could hurt.
const maxKeytabSize = 16 << 20

// publish replaces principal's entries in the keytab file at path with
// data's, keeping other principals' keys and the file's owner, group,
// mode and extended attributes, so the service that reads it still can.
// The replaced file is saved first, under backup or backup.N — never over
// an existing file, never through a link — unless made is the name of a
// backup an earlier, interrupted run already saved; saved is called with
// the new backup's name before the keytab changes. It returns the backup's
// name.
func publish(ctx context.Context, path, principal string, data []byte, backup, made string, saved func(string) error) (string, error) {
	// The lock keytab pull and prune take: one of them rewriting the file
	// from an older read would drop the kvno published here.
	unlock, err := durable.Lock(ctx, durable.LockPath(path), "krbops rotate "+principal, durable.DefaultLockWait)
	if err != nil {
		return "", err
	}
	defer unlock()
	attrs, err := durable.ReadAttrs(path)
	if err != nil {
		return "", err
	}
	if err := durable.CanReplace(path, attrs); err != nil {
		return "", err
	}
	old, err := readcap.ReadFile(path, maxKeytabSize)
	if err != nil {
		return "", err
	}
	if made == "" {
		if made, err = durable.CreateExclusive(backup, old, attrs); err != nil {
			return "", fmt.Errorf("backup %s: %w", backup, err)
		}
		if saved != nil {
			if err := saved(made); err != nil {
				return made, err
			}
		}
	}
	kt, err := kdcops.ParseKeytab(old, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		return made, fmt.Errorf("%s: %w", path, err)
	}
	next, err := kdcops.ParseKeytab(data, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		return made, errors.New("the new keytab does not parse")
	}
	var keep []kdcops.KeytabEntry
	for _, e := range kt.Entries {
		if e.Principal != principal {
			keep = append(keep, e)
		}
	}
	out, err := kdcops.MarshalKeytab(append(keep, next.Entries...))
	if err != nil {
		return made, err
	}
	return made, durable.WriteFileAs(path, out, attrs, nil)
}

func (r *Rotation) stepPublish(ctx context.Context, _ *runbook.State) runbook.Result {
	j := r.journal
	if j.State >= StatePublished {
		return runbook.Passf("%s already holds the new keytab; the old file is %s", r.Keytab, j.Backup)
	}
	backup, err := publish(ctx, r.Keytab, r.Principal, j.Pending, BackupPath(r.Keytab, j.OldKVNO), j.Backup, func(name string) error {
		j.Backup = name
		return r.saveJournal(j.State)
	})
	if err != nil {
		res := runbook.Usagef("write %s: %s", r.Keytab, describe(err)).
			WithHint("the store's current version is the new keytab; fix the file or its directory, then %s", r.command("rotate --resume"))
		if errors.Is(err, durable.ErrLocked) {
			// Another writer (keytab pull or prune) held KEYTAB.lock past the
			// wait: transient, as it is for those commands.
			res.Class = fault.Unreachable
			res = res.WithHint("another krbops process holds the keytab's lock; the store's current version is the new keytab: %s once it is done", r.command("rotate --resume"))
		}
		return res
	}
	if err := r.saveJournal(StatePublished); err != nil {
		return journalError(err)
	}
	return runbook.Passf("%s holds kvno %v with its owner, group and mode kept; the old file is %s", r.Keytab, kvnosOf(j.Pending), backup).
		With(runbook.Evidence{"backup": backup, "mode": fmt.Sprintf("%04o", r.keytabMode())})
}

func (r *Rotation) keytabMode() os.FileMode {
	if a, err := durable.ReadAttrs(r.Keytab); err == nil {
		return a.Mode
	}
	return 0
}

func kvnosOf(data []byte) []uint32 {
	kt, err := kdcops.ParseKeytab(data, kdcops.KeytabOptions{})
	if err != nil {
		return nil
	}
	return kdcops.KVNOs(kt.Entries)
}

func (r *Rotation) stepLedger(ctx context.Context, _ *runbook.State) runbook.Result {
	j := r.journal
	outcome := ledger.Succeeded
	if j.Role.Serves() {
		outcome = ledger.AwaitingPhase2
	}
	cur, err := r.Ledger.Get(ctx, j.LedgerID)
	if err != nil {
		return ledgerResult(err, "ledger: %s", err)
	}
	if cur.Outcome != outcome {
		if _, err := r.Ledger.Update(ctx, j.LedgerID, func(rot *ledger.Rotation) error {
			rot.Outcome, rot.NewKVNO, rot.OldKVNO = outcome, j.NewKVNO, j.OldKVNO
			return nil
		}); err != nil {
			return ledgerResult(err, "ledger: %s", err).WithHint("the rotation itself is complete; krbops rotate --resume records it")
		}
	}
	if err := r.Ledger.Unlock(ctx, r.Principal, r.holder(j)); err != nil {
		return ledgerResult(err, "ledger unlock: %s", err)
	}
	if err := removeJournal(r.JournalDir, r.Principal); err != nil {
		return runbook.Usagef("remove the journal: %s", err)
	}
	if j.Role.Serves() {
		wait := max(j.Phase2Wait, r.TicketLifetime)
		return runbook.Passf("phase 1 done: kvno %d and %d published; run rotate finish after %s", j.OldKVNO, j.NewKVNO, wait).
			With(runbook.Evidence{"outcome": string(outcome), "phase2_after": r.now().Add(wait).UTC().Format(time.RFC3339)})
	}
	return runbook.Passf("rotated %s from kvno %d to %d", r.Principal, j.OldKVNO, j.NewKVNO).With(runbook.Evidence{"outcome": string(outcome)})
}

// storeResult is an error result for a secret-store failure, classed by
// the store: a local problem (a missing or insecure file-store directory,
// missing credentials) exits 2, a store that refused or failed exits 3.
func storeResult(err error, format string, a ...any) runbook.Result {
	r := runbook.Errorf(format, a...)
	if c := fault.ClassOf(err); c == fault.Usage || c == fault.Unreachable || c == fault.CheckFailed {
		r.Class = c
	}
	return r
}

// ledgerResult is an error result for a ledger failure. The bbolt ledger
// is a local file, so what it cannot do is local input (exit 2) unless the
// ledger said otherwise.
func ledgerResult(err error, format string, a ...any) runbook.Result {
	r := runbook.Usagef(format, a...)
	if c := fault.ClassOf(err); c == fault.Unreachable || c == fault.CheckFailed {
		r.Class = c
	}
	// A shared ledger's errors say what to do (refresh credentials, the
	// IAM action denied, ledger init).
	if h := fault.HintOf(err); h != "" {
		r = r.WithHint("%s", h)
	}
	return r
}

// isFileError reports whether err is the file system's (missing,
// unreadable), not the content's.
func isFileError(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe)
}

func describe(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func newID() string {
	return strings.ToLower(rand.Text()[:16])
}
