package rotate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/fakekdc"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/ledger"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/secretstore"
)

// The fake KDC is a drop-in for the real one.
var _ KDC = (*fakekdc.KDC)(nil)

const (
	rigRealm    = "KRBOPS.TEST"
	rigPassword = "initial-password-of-the-principal"
	rigAdmin    = "admin/admin@" + rigRealm
	rigOldKVNO  = 2 // what kadmin ktadd leaves a new principal at
)

// rig is one principal in a fake realm with everything a rotation writes:
// a keytab file, a file secret store, a bbolt ledger and a journal
// directory, all under t.TempDir().
type rig struct {
	t         *testing.T
	kdc       *fakekdc.KDC
	cfg       *kdcops.Config
	principal string
	role      Role
	backend   string

	keytab, adminKeytab    string
	store, ledger, journal string
	allowlist, kdcLog      string
	orig                   []byte // the keytab file before any rotation
	origEntries            []kdcops.KeytabEntry
	salt                   string  // the principal's salt before the rotation; "" for the normal one
	enctypes               []int32 // the principal's enctypes before the rotation; nil for the realm's
	// afterStep, when set, runs after each step of every run (before a
	// crash): a test's way to change the KDC at an exact point.
	afterStep func(id string)
	// limit and minGap, when set, replace the rotation's rate limit of
	// 100 an hour and its minimum gap of none.
	limit  int
	minGap time.Duration
}

func newRig(t *testing.T, role Role, backend string) *rig {
	return newRigShape(t, role, backend, "", nil)
}

// newRigShape is newRig for a principal whose keys have salt (a renamed
// or migrated principal; "" for the normal salt) and enctypes (nil for the
// realm's).
func newRigShape(t *testing.T, role Role, backend, salt string, enctypes []int32) *rig {
	t.Helper()
	dir := t.TempDir()
	g := &rig{t: t, kdc: fakekdc.New(rigRealm), role: role, backend: backend, salt: salt, enctypes: enctypes,
		keytab: filepath.Join(dir, "service.keytab"), adminKeytab: filepath.Join(dir, "admin.keytab"),
		store: filepath.Join(dir, "store"), ledger: filepath.Join(dir, "ledger.db"), journal: filepath.Join(dir, "journal"),
		allowlist: filepath.Join(dir, "allow.txt"), kdcLog: filepath.Join(dir, "krb5kdc.log")}
	g.principal = "batch@" + rigRealm
	if role == Server {
		g.principal = "HTTP/web1.krbops.test@" + rigRealm
	}
	cfg, err := kdcops.LoadConfig(writeConf(t))
	if err != nil {
		t.Fatal(err)
	}
	g.cfg = cfg
	g.put()
	if err := g.kdc.Put(fakekdc.Principal{Name: rigAdmin, Password: "admin-password", KVNO: 1, Admin: true}); err != nil {
		t.Fatal(err)
	}
	g.origEntries = g.derive(g.principal, rigPassword, rigOldKVNO)
	g.orig = g.writeKeytab(g.keytab, g.origEntries)
	g.writeKeytab(g.adminKeytab, g.derive(rigAdmin, "admin-password", 1))
	if err := os.Mkdir(g.store, 0o700); err != nil {
		t.Fatal(err)
	}
	// The principal logged in a minute ago: its TGT outlives the change.
	login := fmt.Sprintf("Dec  1 12:00:00 kdc krb5kdc[1](info): AS_REQ (2 etypes {aes256-cts-hmac-sha1-96(18)}) 127.0.0.1: ISSUE: authtime %d, etypes {rep=aes256-cts-hmac-sha1-96(18), tkt=aes256-cts-hmac-sha1-96(18), ses=aes256-cts-hmac-sha1-96(18)}, %s for krbtgt/%s@%s\n",
		time.Now().Add(-time.Minute).Unix(), g.principal, rigRealm, rigRealm)
	for path, data := range map[string]string{g.allowlist: "# cleared\nc1\n", g.kdcLog: login} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// put (re)creates the principal with its pre-rotation keys, as restoring
// the KDC database from a backup taken before the rotation would.
func (g *rig) put() {
	g.t.Helper()
	if err := g.kdc.Put(fakekdc.Principal{Name: g.principal, Password: rigPassword, KVNO: rigOldKVNO, Salt: g.salt, Enctypes: g.enctypes}); err != nil {
		g.t.Fatal(err)
	}
}

func (g *rig) derive(principal, password string, kvno uint32) []kdcops.KeytabEntry {
	g.t.Helper()
	name, _ := kdcops.SplitPrincipal(principal)
	ents, err := kdcops.DeriveKeytab(rigRealm, strings.Split(name, "/"), g.kdc.KDCKeys(principal), password, kvno, time.Unix(1_700_000_000, 0))
	if err != nil {
		g.t.Fatal(err)
	}
	return ents
}

func (g *rig) writeKeytab(path string, ents []kdcops.KeytabEntry) []byte {
	g.t.Helper()
	data, err := kdcops.MarshalKeytab(ents)
	if err != nil {
		g.t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		g.t.Fatal(err)
	}
	return data
}

func (g *rig) openStore() secretstore.Store {
	g.t.Helper()
	st, err := secretstore.Open(context.Background(), "file://"+g.store, secretstore.Options{Holder: "rotate test"})
	if err != nil {
		g.t.Fatal(err)
	}
	return st
}

// rotation is what commands/rotate.go builds from flags, with the fake KDC
// and its clock probe in place of the network.
func (g *rig) rotation(st secretstore.Store, led ledger.Ledger) *Rotation {
	r := &Rotation{
		Config: g.cfg, KDCs: []kdcops.KDC{{Entry: "kdc.krbops.test", Host: "kdc.krbops.test", Port: 88}},
		Realm: rigRealm, Principal: g.principal, Role: g.role, Backend: g.backend, Cluster: "c1", Tier: "standard",
		Keytab: g.keytab, Secret: g.principal, Store: st, Ledger: led,
		JournalDir: g.journal, Allowlist: g.allowlist, MaxPerWindow: 100, Window: time.Hour,
		KDCLogs: []string{g.kdcLog}, MinTGTRemaining: 30 * time.Minute, TicketLifetime: 24 * time.Hour,
		AdminPrincipal: rigAdmin, AdminKeytab: g.adminKeytab,
		Operator: "tester@host", CorrelationID: "corr-test", Timeout: time.Second, WarnSkew: time.Minute,
		KDC: g.kdc, ClockProbe: g.kdc.ProbeClock,
		MinGap: g.minGap,
	}
	if g.limit > 0 {
		r.MaxPerWindow = g.limit
	}
	return r
}

// outcome is one krbops process: its report, or why there was nothing to
// run.
type outcome struct {
	rep     *runbook.Report
	nothing bool // --resume without a journal and without a finished rotation in the ledger
}

// run is one krbops process: it opens the store and ledger, builds the
// runbook as commands/rotate.go does (with --resume: from the journal, or
// AlreadyDone without one), runs it and closes everything. With crashAfter
// the process "dies" after that step: the context is cancelled, so no
// later step runs and nothing is cleaned up, as with SIGKILL at a step
// boundary (what KRBOPS_TEST_CRASH_AT does to the real binary).
func (g *rig) run(resume bool, crashAfter string) outcome {
	g.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	led, err := ledger.OpenFile(g.ledger, ledger.Options{})
	if err != nil {
		g.t.Fatal(err)
	}
	defer led.Close()
	r := g.rotation(g.openStore(), led)
	var j *Journal
	if resume {
		j, err = LoadJournal(g.journal, g.principal)
		if errors.Is(err, ErrNoJournal) {
			rb, ok := AlreadyDone(ctx, led, g.principal)
			if !ok {
				return outcome{nothing: true}
			}
			return outcome{rep: runbook.Run(ctx, rb, runbook.Options{})}
		}
		if err != nil {
			g.t.Fatal(err)
		}
		r.Role, r.Backend, r.Cluster, r.Tier, r.Keytab, r.Secret = j.Role, j.Backend, j.Cluster, j.Tier, j.Keytab, j.Secret
	}
	r.AfterStep = func(id string) {
		if g.afterStep != nil {
			g.afterStep(id)
		}
		if id == crashAfter {
			cancel()
		}
	}
	return outcome{rep: runbook.Run(ctx, r.Runbook(resume, j), runbook.Options{CorrelationID: "corr-test"})}
}

func (g *rig) loadJournal() *Journal {
	g.t.Helper()
	j, err := LoadJournal(g.journal, g.principal)
	if err != nil {
		g.t.Fatal(err)
	}
	return j
}

// steps renders a report as "id=status" in run order, for messages.
func steps(rep *runbook.Report) string {
	if rep == nil {
		return "(no report)"
	}
	var b strings.Builder
	for _, s := range rep.Steps {
		fmt.Fprintf(&b, "\n  %s=%s: %s", s.ID, s.Status, s.Message)
	}
	return b.String()
}

// wantSteps checks that every step before stop passed, stop has status
// (when stop is not empty) and every later step was skipped.
func wantSteps(t *testing.T, rep *runbook.Report, stop string, status runbook.Status) {
	t.Helper()
	if rep == nil {
		t.Fatalf("no report")
	}
	seen := false
	for _, s := range rep.Steps {
		want := runbook.Pass
		switch {
		case s.ID == stop:
			want, seen = status, true
		case seen:
			want = runbook.Skip
		}
		if s.Status != want {
			t.Errorf("step %s: %s, want %s%s", s.ID, s.Status, want, steps(rep))
			return
		}
	}
	if stop != "" && !seen {
		t.Errorf("step %s did not run%s", stop, steps(rep))
	}
}

// final is what a rotation left behind, checked by check.
type final struct {
	kvno      uint32 // the KDC's kvno of the principal
	completed bool   // the keytab file and store hold the new keytab, ledger recorded, journal gone
	login     bool   // the store's current keytab logs in
}

func (g *rig) storeCurrent() ([]byte, []kdcops.KeytabEntry) {
	g.t.Helper()
	v, err := g.openStore().Get(context.Background(), g.principal, secretstore.StageCurrent)
	if errors.Is(err, secretstore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		g.t.Fatal(err)
	}
	kt, err := kdcops.ParseKeytab(v.Data, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		g.t.Fatalf("the store's current keytab does not parse: %v", err)
	}
	return v.Data, kt.Entries
}

// check verifies the KDC, the store, the keytab file, the journal and the
// ledger after a rotation.
func (g *rig) check(want final) {
	t := g.t
	t.Helper()
	ctx := context.Background()
	if got := g.kdc.KVNO(g.principal); got != want.kvno {
		t.Errorf("KDC kvno %d, want %d", got, want.kvno)
	}
	cur, curEnts := g.storeCurrent()
	loggedIn := false
	if len(curEnts) > 0 {
		sess, err := g.kdc.Login(ctx, curEnts)
		if err != nil {
			t.Errorf("login with the store's current keytab: %v", err)
		}
		loggedIn = sess != nil
	}
	if loggedIn != want.login {
		t.Errorf("login with the store's current keytab (kvnos %v): %v, want %v", kdcops.KVNOs(curEnts), loggedIn, want.login)
	}
	file, err := os.ReadFile(g.keytab)
	if err != nil {
		t.Fatal(err)
	}
	_, jerr := LoadJournal(g.journal, g.principal)
	if !want.completed {
		if string(file) != string(g.orig) {
			t.Errorf("the keytab file changed although the rotation did not complete")
		}
		if jerr != nil {
			t.Errorf("journal of an unfinished rotation: %v", jerr)
		}
		return
	}
	if !errors.Is(jerr, ErrNoJournal) {
		t.Errorf("journal left after the rotation: %v", jerr)
	}
	if string(file) != string(cur) {
		t.Errorf("the keytab file is not the store's current version")
	}
	kt, err := kdcops.ParseKeytab(file, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	wantKVNOs := []uint32{rigOldKVNO + 1}
	if g.role == Server {
		wantKVNOs = []uint32{rigOldKVNO, rigOldKVNO + 1}
	}
	if got := kdcops.KVNOs(kt.Entries); fmt.Sprint(got) != fmt.Sprint(wantKVNOs) {
		t.Errorf("keytab kvnos %v, want %v", got, wantKVNOs)
	}
	old := kdcops.AtKVNO(kt.Entries, rigOldKVNO)
	if g.role == Server && !sameKeys(old, g.origEntries) {
		t.Errorf("the phase-1 keytab's kvno %d keys are not the original ones", rigOldKVNO)
	}
	if want.kvno == rigOldKVNO+1 {
		// The new keys are the KDC's: its own keys, nothing else.
		if kc, err := g.kdc.Check(ctx, kdcops.AtKVNO(kt.Entries, rigOldKVNO+1)); err != nil || !kc.KVNOKnown || len(kc.Checks) != len(g.kdc.KDCKeys(g.principal)) {
			t.Errorf("the new keys at the KDC: %+v %v", kc, err)
		} else {
			for _, c := range kc.Checks {
				if !c.OK {
					t.Errorf("the KDC rejects the new %s key", kdcops.EnctypeName(c.Enctype))
				}
			}
		}
	}
	backup, err := os.ReadFile(BackupPath(g.keytab, rigOldKVNO))
	if err != nil || string(backup) != string(g.orig) {
		t.Errorf("backup %s is not the original keytab: %v", BackupPath(g.keytab, rigOldKVNO), err)
	}
	led, err := ledger.OpenFile(g.ledger, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	rots, err := led.List(ctx, ledger.Filter{Principal: g.principal})
	wantOutcome := ledger.Succeeded
	if g.role == Server {
		wantOutcome = ledger.AwaitingPhase2
	}
	if err != nil || len(rots) != 1 || rots[0].Outcome != wantOutcome || rots[0].OldKVNO != rigOldKVNO || rots[0].NewKVNO != rigOldKVNO+1 {
		t.Errorf("ledger: %+v %v; want one rotation %s from kvno %d", rots, err, wantOutcome, rigOldKVNO)
	}
	if locks, err := led.Locks(ctx); err != nil || len(locks) != 0 {
		t.Errorf("locks left: %+v %v", locks, err)
	}
}

func sameKeys(a, b []kdcops.KeytabEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].KVNO != b[i].KVNO || !a[i].SameKey(b[i]) {
			return false
		}
	}
	return true
}
