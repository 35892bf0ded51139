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
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/ledger"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/clock"
	"github.com/krbops/krbops/secretstore"
)

// Role is what the principal does: a client logs in (kinit), a server
// decrypts service tickets.
type Role string

// Roles.
const (
	Client Role = "client"
	Server Role = "server"
)

// Backends that change the key at the KDC.
const (
	BackendKpasswd      = "kpasswd"
	BackendKpasswdAdmin = "kpasswd-admin"
	BackendKadmin       = "kadmin"
)

// Step ids, in run order. Scripts and KRBOPS_TEST_CRASH_AT name them.
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

	JournalDir      string
	Allowlist       string
	MaxPerWindow    int
	Window          time.Duration
	KDCLog          string
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

	// run state
	runStart  time.Time
	journal   *Journal
	current   []kdcops.KeytabEntry // --keytab's entries of the principal at the KDC's kvno
	preTicket *messages.Ticket     // a server's ticket issued before the change
	resume    bool
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
		if r.Role == Client {
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
	r.journal = &Journal{OldKVNO: res.KDCKVNO, NewKVNO: res.KDCKVNO + 1, KDCKeys: res.KDCKeys}
	if r.Role == Server {
		// A ticket issued now, under the old kvno, must still decrypt with
		// the phase-1 keytab: test proves it.
		sess, err := r.kdc().Login(ctx, r.current)
		if err != nil || sess == nil {
			return runbook.Errorf("login as %s for a pre-rotation service ticket failed", r.Principal).WithHint("check that the KDC answers")
		}
		tkt, err := r.kdc().ServiceTicket(ctx, sess, types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: r.components()})
		if err != nil {
			return runbook.Errorf("service ticket for %s: %s", r.Principal, err).WithHint("the principal must be usable as a service")
		}
		r.preTicket = &tkt
	}
	var ets []string
	for _, k := range res.KDCKeys {
		ets = append(ets, kdcops.EnctypeName(k.Enctype))
	}
	return runbook.Passf("kvno %d authenticates; keys %s", res.KDCKVNO, strings.Join(ets, ", ")).
		With(runbook.Evidence{"kdc_kvno": res.KDCKVNO, "new_kvno": res.KDCKVNO + 1, "enctypes": ets})
}

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
		return runbook.Errorf("%s", err).WithHint("check kadmind is running and reachable; nothing was changed")
	}
	return runbook.Passf("%s server %s answers", r.Backend, server).With(runbook.Evidence{"server": server})
}

func (r *Rotation) stepStore(ctx context.Context, _ *runbook.State) runbook.Result {
	if err := r.Store.Check(ctx, r.Secret); err != nil {
		return storeResult(err, "%s", err).WithHint("fix the secret store's access before rotating; nothing was changed")
	}
	return runbook.Passf("secret %s can be written", r.Secret)
}

func (r *Rotation) stepAllowlist(context.Context, *runbook.State) runbook.Result {
	b, err := os.ReadFile(r.Allowlist)
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
		return ledgerResult(err, "ledger: %s", err).WithHint("check the ledger file")
	}
	ev := runbook.Evidence{"count": n, "max": r.MaxPerWindow, "window": r.Window.String()}
	if n >= r.MaxPerWindow {
		return runbook.Failf("%d rotations of (%s, %s) in the last %s: the window's limit of %d is reached", n, r.Cluster, r.Role, r.Window, r.MaxPerWindow).
			With(ev).WithHint("wait for the window to move on; the blast radius per fault domain is bounded on purpose")
	}
	return runbook.Passf("%d of %d rotations of (%s, %s) in the last %s", n, r.MaxPerWindow, r.Cluster, r.Role, r.Window).With(ev)
}

func (r *Rotation) stepLastLogin(context.Context, *runbook.State) runbook.Result {
	at, found, err := LastLogin(r.KDCLog, r.Principal, r.runStart)
	if err != nil {
		return runbook.Usagef("--kdc-log: %s", describe(err)).WithHint("pass the KDC log (MIT krb5kdc format) that records the principal's logins")
	}
	if !found {
		return runbook.Passf("no login of %s in %s: no TGT to outlive", r.Principal, r.KDCLog)
	}
	left := at.Add(r.TicketLifetime).Sub(r.now())
	ev := runbook.Evidence{"last_login": at.UTC().Format(time.RFC3339), "tgt_remaining": left.Round(time.Second).String()}
	if left < r.MinTGTRemaining {
		return runbook.Failf("last login %s leaves %s of TGT lifetime, less than --min-tgt-remaining %s",
			at.UTC().Format(time.RFC3339), left.Round(time.Second), r.MinTGTRemaining).With(ev).
			WithHint("wait until the client logs in again (its next AS_REQ), then rotate at once")
	}
	return runbook.Passf("last login %s leaves %s of TGT lifetime", at.UTC().Format(time.RFC3339), left.Round(time.Second)).With(ev)
}

func (r *Rotation) stepLock(ctx context.Context, _ *runbook.State) runbook.Result {
	if r.resume {
		j := r.journal
		if _, err := r.Ledger.Lock(ctx, r.Principal, r.holder(j), lockTTL); err != nil {
			return runbook.Failf("%s", err).WithHint("another rotation holds the principal; inspect it with krbops rotate status")
		}
		if j.LedgerID == "" {
			// The crash came between ledger.Start and the journal update.
			open, err := r.Ledger.List(ctx, ledger.Filter{Principal: r.Principal, Outcome: ledger.InProgress, Limit: 1})
			if err != nil {
				return ledgerResult(err, "ledger: %s", err)
			}
			if len(open) == 0 {
				rot, err := r.startLedger(ctx, j)
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
		return runbook.Passf("resuming rotation %s of %s from state %s", j.ID, r.Principal, j.State).
			With(runbook.Evidence{"journal_state": j.State.String(), "old_kvno": j.OldKVNO, "new_kvno": j.NewKVNO})
	}
	if old, err := LoadJournal(r.JournalDir, r.Principal); err == nil {
		return runbook.Failf("a rotation of %s is in progress (journal state %s)", r.Principal, old.State).
			WithHint("run krbops rotate --resume --principal %s", r.Principal)
	} else if !errors.Is(err, ErrNoJournal) {
		return runbook.Errorf("%s", err)
	}
	j := r.journal
	j.ID = newID()
	j.Principal, j.Role, j.Backend, j.Cluster, j.Tier = r.Principal, r.Role, r.Backend, r.Cluster, r.Tier
	j.Keytab, j.Secret, j.CorrelationID = r.Keytab, r.Secret, r.CorrelationID
	j.Started, j.State = r.now(), StateLocked
	// Journal first: a lock or ledger record without a journal could
	// only be cleared by hand.
	if err := j.save(r.JournalDir, r.now()); err != nil {
		return runbook.Usagef("journal: %s", err).WithHint("make --journal-dir writable; nothing was changed")
	}
	if _, err := r.Ledger.Lock(ctx, r.Principal, r.holder(j), lockTTL); err != nil {
		_ = removeJournal(r.JournalDir, r.Principal)
		return runbook.Failf("%s", err).WithHint("another rotation holds the principal; inspect it with krbops rotate status")
	}
	rot, err := r.startLedger(ctx, j)
	if err != nil {
		_ = r.Ledger.Unlock(ctx, r.Principal, r.holder(j))
		_ = removeJournal(r.JournalDir, r.Principal)
		if errors.Is(err, ledger.ErrConflict) {
			return runbook.Failf("%s already has an open rotation in the ledger", r.Principal).
				WithHint("finish it first: krbops rotate status, then rotate finish (servers) or rotate --resume")
		}
		return ledgerResult(err, "ledger: %s", err)
	}
	j.LedgerID = rot.ID
	if err := j.save(r.JournalDir, r.now()); err != nil {
		return runbook.Usagef("journal: %s", err).WithHint("make --journal-dir writable, then rotate --resume")
	}
	return runbook.Passf("locked %s for rotation %s", r.Principal, j.ID).With(runbook.Evidence{"ledger_id": rot.ID})
}

func (r *Rotation) startLedger(ctx context.Context, j *Journal) (ledger.Rotation, error) {
	return r.Ledger.Start(ctx, ledger.Rotation{
		Principal: r.Principal, Cluster: j.Cluster, Role: string(j.Role), Tier: j.Tier, Operator: r.Operator,
		CorrelationID: r.CorrelationID, OldKVNO: j.OldKVNO, NewKVNO: j.NewKVNO, Phase: phaseOf(j.Role, ledger.Phase1),
	})
}

func phaseOf(role Role, p ledger.Phase) ledger.Phase {
	if role == Server {
		return p
	}
	return ledger.NoPhase
}

// NewPassword returns 256 random bits as text a kadmin prompt and a
// password policy accept (letters and digits, no newline).
func NewPassword() string { return rand.Text() + rand.Text() }

func (r *Rotation) saveJournal(s State) error {
	if s > r.journal.State {
		r.journal.State = s
	}
	return r.journal.save(r.JournalDir, r.now())
}

func journalError(err error) runbook.Result {
	return runbook.Usagef("journal: %s", err).WithHint("make --journal-dir writable, then krbops rotate --resume")
}

func (r *Rotation) stepCreate(context.Context, *runbook.State) runbook.Result {
	j := r.journal
	if j.State >= StateCreated {
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
	if j.Role == Server {
		pending = append(append([]kdcops.KeytabEntry(nil), cur...), next...)
	}
	data, err := kdcops.MarshalKeytab(pending)
	if err != nil {
		return runbook.Errorf("%s", err)
	}
	j.Password, j.Pending = pw, data
	j.Token, j.SeedToken = secretstore.NewToken(), secretstore.NewToken()
	if err := r.saveJournal(StateCreated); err != nil {
		return journalError(err)
	}
	return runbook.Passf("pending keytab: kvno %v, %d keys", kdcops.KVNOs(pending), len(pending)).
		With(runbook.Evidence{"new_kvno": j.NewKVNO, "kvnos": kdcops.KVNOs(pending)})
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
	j := r.journal
	if j.State >= StateSet {
		return runbook.Passf("the KDC already holds kvno %d", j.NewKVNO)
	}
	if r.resume || j.State == StateSetting {
		// Test before set: a change that reached the KDC before the crash
		// must not be repeated (kpasswd with the old key would now fail,
		// and kadmin would bump the kvno past the pending keytab).
		_, ok, err := r.pendingWorks(ctx)
		if err != nil {
			return runbook.Errorf("testing the pending keytab: %s", err).WithHint("check that the KDC answers, then krbops rotate --resume")
		}
		if ok {
			if err := r.saveJournal(StateSet); err != nil {
				return journalError(err)
			}
			return runbook.Passf("the KDC already accepts kvno %d (changed before the crash): not repeated", j.NewKVNO)
		}
	}
	if err := r.saveJournal(StateSetting); err != nil {
		return journalError(err)
	}
	var err error
	switch r.Backend {
	case BackendKpasswd:
		var cur []kdcops.KeytabEntry
		if cur, _, err = readKeytab(r.Keytab, r.Principal); err == nil {
			err = r.kdc().Kpasswd(ctx, kdcops.AtKVNO(cur, j.OldKVNO), r.Realm, r.components(), j.Password)
		}
	case BackendKpasswdAdmin:
		var admin []kdcops.KeytabEntry
		if admin, _, err = readKeytab(r.AdminKeytab, r.AdminPrincipal); err == nil {
			kv := kdcops.KVNOs(admin)
			err = r.kdc().Kpasswd(ctx, kdcops.AtKVNO(admin, kv[len(kv)-1]), r.Realm, r.components(), j.Password)
		}
	case BackendKadmin:
		err = r.kdc().KadminCPW(ctx, r.AdminPrincipal, r.AdminKeytab, r.Principal, j.Password)
	default:
		err = fmt.Errorf("unknown backend %q", r.Backend)
	}
	if err != nil {
		return runbook.Errorf("key change with %s failed: %s", r.Backend, err).
			WithHint("the pending keytab is stored; krbops rotate --resume tests the KDC first and repeats the change only if it did not happen")
	}
	if err := r.saveJournal(StateSet); err != nil {
		return journalError(err)
	}
	return runbook.Passf("the KDC changed the key of %s (%s)", r.Principal, r.Backend)
}

func (r *Rotation) stepTest(ctx context.Context, _ *runbook.State) runbook.Result {
	j := r.journal
	if j.State >= StateTested {
		return runbook.Passf("pending keytab already tested")
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
	j.Password = "" // no longer needed: the change is confirmed
	if err := r.saveJournal(StateTested); err != nil {
		return journalError(err)
	}
	return runbook.Passf("%s", msg).With(ev)
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

// publish replaces principal's entries in the keytab file with data's,
// keeping other principals' keys, and keeps the old file at backup
// unless a backup is already there (a resumed run must not overwrite the
// original with a half-published file).
func publish(path, principal string, data []byte, backup string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if _, err := os.Stat(backup); errors.Is(err, fs.ErrNotExist) {
		if err := durable.WriteFile(backup, old, 0o600, nil); err != nil {
			return fmt.Errorf("backup %s: %w", backup, err)
		}
	}
	kt, err := kdcops.ParseKeytab(old, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	next, err := kdcops.ParseKeytab(data, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		return errors.New("the new keytab does not parse")
	}
	var keep []kdcops.KeytabEntry
	for _, e := range kt.Entries {
		if e.Principal != principal {
			keep = append(keep, e)
		}
	}
	out, err := kdcops.MarshalKeytab(append(keep, next.Entries...))
	if err != nil {
		return err
	}
	return durable.WriteFile(path, out, 0o600, nil)
}

func (r *Rotation) stepPublish(context.Context, *runbook.State) runbook.Result {
	j := r.journal
	if j.State >= StatePublished {
		return runbook.Passf("%s already holds the new keytab", r.Keytab)
	}
	backup := BackupPath(r.Keytab, j.OldKVNO)
	if err := publish(r.Keytab, r.Principal, j.Pending, backup); err != nil {
		return runbook.Usagef("write %s: %s", r.Keytab, describe(err)).WithHint("the store's current version is the new keytab; fix the path, then krbops rotate --resume")
	}
	if err := r.saveJournal(StatePublished); err != nil {
		return journalError(err)
	}
	return runbook.Passf("%s holds kvno %v; the old file is %s", r.Keytab, kvnosOf(j.Pending), backup).
		With(runbook.Evidence{"backup": backup})
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
	if j.Role == Server {
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
	if j.Role == Server {
		return runbook.Passf("phase 1 done: kvno %d and %d published; run rotate finish after %s", j.OldKVNO, j.NewKVNO, r.TicketLifetime).
			With(runbook.Evidence{"outcome": string(outcome), "phase2_after": r.now().Add(r.TicketLifetime).UTC().Format(time.RFC3339)})
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
