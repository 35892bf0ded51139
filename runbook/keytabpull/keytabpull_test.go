package keytabpull

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/internal/fakekdc"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/secretstore"
)

const realm = "UNIT.TEST"

// fake is the in-memory KDC behind the KDC interface; calls counts the
// exchanges, so a test can show a run asked the KDC nothing.
type fake struct {
	k     *fakekdc.KDC
	calls int
	// onLogin, when set, runs at each AS exchange: what happens on the
	// host while a run talks to the KDC.
	onLogin func()
	// ticketErr, when set, is the KDC's answer to every TGS request.
	ticketErr error
}

func (f *fake) LoginPerKVNO(ctx context.Context, entries []kdcops.KeytabEntry) (*kdcops.Session, []kdcops.LoginAttempt, error) {
	f.calls++
	if f.onLogin != nil {
		f.onLogin()
	}
	s, err := f.k.Login(ctx, entries)
	if err != nil || s == nil {
		return nil, []kdcops.LoginAttempt{{KeyCheck: kdcops.KeyCheck{KVNO: kdcops.KVNOs(entries)[0]}}}, err
	}
	return s, []kdcops.LoginAttempt{{KeyCheck: kdcops.KeyCheck{KVNO: s.KVNO, Enctype: s.Enctype, OK: true}}}, nil
}

func (f *fake) ServiceTicket(ctx context.Context, s *kdcops.Session, sname types.PrincipalName) (messages.Ticket, error) {
	f.calls++
	if f.ticketErr != nil {
		return messages.Ticket{}, f.ticketErr
	}
	return f.k.ServiceTicket(ctx, s, sname)
}

// keytabOf derives name's keytab at kvno from password, as the KDC holds it.
func keytabOf(t *testing.T, k *fakekdc.KDC, name, password string, kvno uint32) []byte {
	t.Helper()
	ents, err := kdcops.DeriveKeytab(realm, strings.Split(name, "/"), k.KDCKeys(name), password, kvno, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := kdcops.MarshalKeytab(ents)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type pullRig struct {
	kdc    *fake
	store  secretstore.Store
	keytab string
}

func newPullRig(t *testing.T) *pullRig {
	t.Helper()
	k := fakekdc.New(realm)
	if err := k.Put(fakekdc.Principal{Name: "svc/a", Password: "pw-2", KVNO: 2}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := secretstore.Open(context.Background(), filepath.Join(dir, "store"), secretstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Seed(context.Background(), "svc", keytabOf(t, k, "svc/a", "pw-2", 2), secretstore.NewToken()); err != nil {
		t.Fatal(err)
	}
	host := filepath.Join(dir, "host")
	if err := os.Mkdir(host, 0o700); err != nil {
		t.Fatal(err)
	}
	return &pullRig{kdc: &fake{k: k}, store: st, keytab: filepath.Join(host, "svc.keytab")}
}

func (g *pullRig) pull(t *testing.T, mod ...func(*Pull)) (*runbook.Report, *Pull) {
	t.Helper()
	p := &Pull{Store: g.store, Secret: "svc", Stage: secretstore.StageCurrent, Keytab: g.keytab, UID: -1, GID: -1,
		NewKDC: func() KDC { return g.kdc }}
	for _, m := range mod {
		m(p)
	}
	return p.Run(context.Background(), runbook.Options{}), p
}

// rotate changes the key at the KDC and makes the store's current version
// the new keytab, as krbops rotate does.
func (g *pullRig) rotate(t *testing.T, password string, data []byte) {
	t.Helper()
	ctx := context.Background()
	if password != "" {
		if err := g.kdc.k.SetPassword("svc/a", password); err != nil {
			t.Fatal(err)
		}
	}
	v, err := g.store.PutPending(ctx, "svc", data, secretstore.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.store.Promote(ctx, "svc", v.ID); err != nil {
		t.Fatal(err)
	}
}

func status(rep *runbook.Report, id string) (runbook.Status, string) {
	for _, s := range rep.Steps {
		if s.ID == id {
			return s.Status, s.Message
		}
	}
	return "", ""
}

func TestPullInstallsProvedKeytabOnce(t *testing.T) {
	g := newPullRig(t)
	rep, _ := g.pull(t)
	if rep.Status != "pass" {
		t.Fatalf("first pull: %s %+v", rep.Status, rep.Steps)
	}
	if fi, err := os.Stat(g.keytab); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new keytab: %v %v, want 0600", err, fi)
	}
	before, _ := os.Lstat(g.keytab)
	calls := g.kdc.calls
	rep, p := g.pull(t)
	if st, msg := status(rep, StepPullFetch); st != runbook.Pass || !strings.Contains(msg, "already current") {
		t.Errorf("second pull: %s %q", st, msg)
	}
	if st, _ := status(rep, StepPullInstall); st != runbook.Skip || p.Changed() {
		t.Errorf("second pull's install: %s, changed %v", st, p.Changed())
	}
	after, _ := os.Lstat(g.keytab)
	if g.kdc.calls != calls || before.Sys().(*syscall.Stat_t).Ino != after.Sys().(*syscall.Stat_t).Ino || !before.ModTime().Equal(after.ModTime()) {
		t.Errorf("an already-current pull asked the KDC (%d calls) or rewrote the file", g.kdc.calls-calls)
	}

	// A rotation: the new version is installed, the old file backed up
	// under rotate's name for it.
	old, _ := os.ReadFile(g.keytab)
	g.rotate(t, "pw-3", keytabOf(t, g.kdc.k, "svc/a", "pw-3", 3))
	if err := os.Chmod(g.keytab, 0o640); err != nil {
		t.Fatal(err)
	}
	rep, p = g.pull(t)
	if rep.Status != "pass" || !p.Changed() {
		t.Fatalf("pull after rotation: %s %+v", rep.Status, rep.Steps)
	}
	if b, err := os.ReadFile(g.keytab + ".kvno2.bak"); err != nil || !bytes.Equal(b, old) {
		t.Errorf("backup: %v", err)
	}
	kt, _ := kdcops.ReadKeytabFile(g.keytab, kdcops.KeytabOptions{})
	if got := kdcops.KVNOs(kt.Entries); len(got) != 1 || got[0] != 3 {
		t.Errorf("installed kvnos %v, want [3]", got)
	}
	if fi, _ := os.Stat(g.keytab); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %04o, want the old file's 0640", fi.Mode().Perm())
	}
	for _, m := range p.Metrics() {
		if m.Name == "krbops_keytab_pull_changed" && m.Value != 1 || m.Name == "krbops_keytab_newest_kvno" && m.Value != 3 {
			t.Errorf("metric %s = %v", m.Name, m.Value)
		}
	}

	// Only the mode asked for differs: rewritten, no KDC exchange, no backup.
	calls = g.kdc.calls
	rep, _ = g.pull(t, func(p *Pull) { p.Mode = 0o600 })
	if st, _ := status(rep, StepPullInstall); st != runbook.Pass || g.kdc.calls != calls {
		t.Errorf("--mode only: install %s, %d KDC calls", st, g.kdc.calls-calls)
	}
	if fi, _ := os.Stat(g.keytab); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o after --mode 0600", fi.Mode().Perm())
	}
	if _, err := os.Lstat(g.keytab + ".kvno3.bak"); !os.IsNotExist(err) {
		t.Errorf("a mode change made a backup: %v", err)
	}
}

func TestPullRefusesWhatTheKDCDoesNotAccept(t *testing.T) {
	g := newPullRig(t)
	if rep, _ := g.pull(t); rep.Status != "pass" {
		t.Fatalf("first pull: %+v", rep.Steps)
	}
	installed, _ := os.ReadFile(g.keytab)
	// The store moves to a kvno the KDC never got: the key change failed.
	g.rotate(t, "", keytabOf(t, g.kdc.k, "svc/a", "never-set", 3))
	rep, _ := g.pull(t)
	if st, msg := status(rep, StepPullAS); st != runbook.Fail || !strings.Contains(msg, "not installed") {
		t.Errorf("as: %s %q", st, msg)
	}
	if st, _ := status(rep, StepPullInstall); st != runbook.Skip || rep.Class.String() != "check-failed" {
		t.Errorf("install %s, class %s", st, rep.Class)
	}
	if b, _ := os.ReadFile(g.keytab); !bytes.Equal(b, installed) {
		t.Error("an unproved keytab was installed")
	}
	// Old and new kvno, the new one not at the KDC yet: phase 1 of a
	// server rotation, fine with --pending only.
	ctx := context.Background()
	cur := keytabOf(t, g.kdc.k, "svc/a", "pw-2", 2)
	ahead, _ := kdcops.ParseKeytab(keytabOf(t, g.kdc.k, "svc/a", "pw-3", 3), kdcops.KeytabOptions{KeepKeys: true})
	both, _ := kdcops.ParseKeytab(cur, kdcops.KeytabOptions{KeepKeys: true})
	phase1, _ := kdcops.MarshalKeytab(append(both.Entries, ahead.Entries...))
	if _, err := g.store.PutPending(ctx, "svc", phase1, secretstore.NewToken()); err != nil {
		t.Fatal(err)
	}
	rep, _ = g.pull(t, func(p *Pull) { p.Stage = secretstore.StagePending })
	if rep.Status != "pass" {
		t.Fatalf("--pending: %+v", rep.Steps)
	}
	kt, _ := kdcops.ReadKeytabFile(g.keytab, kdcops.KeytabOptions{})
	if got := kdcops.KVNOs(kt.Entries); len(got) != 2 {
		t.Errorf("--pending installed kvnos %v, want [2 3]", got)
	}
	// The KDC changes and phase 1 is promoted: the host already has it.
	if err := g.kdc.k.SetPassword("svc/a", "pw-3"); err != nil {
		t.Fatal(err)
	}
	v, err := g.store.Get(ctx, "svc", secretstore.StagePending)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.store.Promote(ctx, "svc", v.ID); err != nil {
		t.Fatal(err)
	}
	if rep, p := g.pull(t); rep.Status != "pass" || p.Changed() {
		t.Errorf("pull after promotion: %s, changed %v", rep.Status, p.Changed())
	}
	// Phase 2 (rotate finish): the store holds kvno 3 only, and so does
	// the host after its next pull.
	g.rotate(t, "", keytabOf(t, g.kdc.k, "svc/a", "pw-3", 3))
	if rep, p := g.pull(t); rep.Status != "pass" || !p.Changed() {
		t.Fatalf("pull after phase 2: %+v", rep.Steps)
	}
	kt, _ = kdcops.ReadKeytabFile(g.keytab, kdcops.KeytabOptions{})
	if got := kdcops.KVNOs(kt.Entries); len(got) != 1 || got[0] != 3 {
		t.Errorf("after phase 2 the host holds kvnos %v, want [3]", got)
	}
}

func TestPullKeepsOtherPrincipals(t *testing.T) {
	g := newPullRig(t)
	if err := g.kdc.k.Put(fakekdc.Principal{Name: "host/other", Password: "pw-o", KVNO: 5}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.keytab, keytabOf(t, g.kdc.k, "host/other", "pw-o", 5), 0o600); err != nil {
		t.Fatal(err)
	}
	if rep, _ := g.pull(t, func(p *Pull) { p.Principal = "svc/a" }); rep.Status != "pass" {
		t.Fatalf("pull: %+v", rep.Steps)
	}
	kt, _ := kdcops.ReadKeytabFile(g.keytab, kdcops.KeytabOptions{})
	if got := strings.Join(kt.Principals(), ","); got != "host/other@UNIT.TEST,svc/a@UNIT.TEST" {
		t.Errorf("principals after pull: %s", got)
	}
	if _, err := os.Lstat(g.keytab + ".kvno0.bak"); err != nil {
		t.Errorf("the replaced file was not backed up: %v", err)
	}
	// A principal the secret does not hold.
	if rep, _ := g.pull(t, func(p *Pull) { p.Principal = "nobody/here" }); rep.Status != "fail" {
		t.Errorf("--principal not in the secret: %s", rep.Status)
	}
}

func TestPullRefusesLinksAndUntrustedDirs(t *testing.T) {
	g := newPullRig(t)
	target := filepath.Join(t.TempDir(), "elsewhere")
	os.WriteFile(target, []byte("not yours"), 0o600)
	if err := os.Symlink(target, g.keytab); err != nil {
		t.Fatal(err)
	}
	rep, _ := g.pull(t)
	if st, _ := status(rep, StepPullKeytab); st != runbook.Error || rep.Class.String() != "usage" {
		t.Errorf("link at --keytab: %s %s", st, rep.Class)
	}
	if b, _ := os.ReadFile(target); string(b) != "not yours" {
		t.Error("the link's target was written")
	}
	os.Remove(g.keytab)
	os.Chmod(filepath.Dir(g.keytab), 0o777)
	if rep, _ := g.pull(t); rep.Class.String() != "usage" {
		t.Errorf("world-writable directory: %s", rep.Class)
	}
}

func entry(p string, kvno uint32, ts time.Time) kdcops.KeytabEntry {
	name, _ := kdcops.SplitPrincipal(p)
	return kdcops.KeytabEntry{Principal: p, Components: strings.Split(name, "/"), KVNO: kvno, Enctype: 18, Timestamp: ts}
}

func TestPlan(t *testing.T) {
	now := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	ents := []kdcops.KeytabEntry{
		entry("a@R", 1, now.Add(-30*day)), entry("a@R", 2, now.Add(-20*day)), entry("a@R", 3, now.Add(-10*day)),
		entry("b@R", 7, now.Add(-3*day)), entry("b@R", 8, now.Add(-2*day)),
	}
	for _, tc := range []struct {
		name string
		sel  Selection
		want string
	}{
		{"keep 1", Selection{Keep: 1}, "a@R kvno 1 (1 keys), a@R kvno 2 (1 keys), b@R kvno 7 (1 keys)"},
		{"keep 2", Selection{Keep: 2}, "a@R kvno 1 (1 keys)"},
		{"keep 5", Selection{Keep: 5}, ""},
		// a's newest is 10 days old, b's 2 days: only a's old kvnos go.
		{"older than 7d", Selection{OlderThan: 7 * day}, "a@R kvno 1 (1 keys), a@R kvno 2 (1 keys)"},
		{"older than 1d", Selection{OlderThan: day}, "a@R kvno 1 (1 keys), a@R kvno 2 (1 keys), b@R kvno 7 (1 keys)"},
		{"keep 2 and older than 7d", Selection{Keep: 2, OlderThan: 7 * day}, "a@R kvno 1 (1 keys)"},
		{"kvno", Selection{KVNO: 8, HasKVNO: true}, "b@R kvno 8 (1 keys)"},
		{"principal", Selection{Keep: 1, Principal: "b"}, "b@R kvno 7 (1 keys)"},
		{"principal with realm", Selection{Keep: 1, Principal: "a@R"}, "a@R kvno 1 (1 keys), a@R kvno 2 (1 keys)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(describeRemovals(Plan(ents, tc.sel, now)), ", "); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPruneGuard(t *testing.T) {
	k := fakekdc.New(realm)
	if err := k.Put(fakekdc.Principal{Name: "HTTP/web", Password: "pw-3", KVNO: 3}); err != nil {
		t.Fatal(err)
	}
	old, _ := kdcops.ParseKeytab(keytabOf(t, k, "HTTP/web", "pw-2", 2), kdcops.KeytabOptions{KeepKeys: true})
	cur, _ := kdcops.ParseKeytab(keytabOf(t, k, "HTTP/web", "pw-3", 3), kdcops.KeytabOptions{KeepKeys: true})
	ahead, _ := kdcops.ParseKeytab(keytabOf(t, k, "HTTP/web", "pw-4", 4), kdcops.KeytabOptions{KeepKeys: true})
	data, _ := kdcops.MarshalKeytab(append(append(old.Entries, cur.Entries...), ahead.Entries...))
	path := filepath.Join(t.TempDir(), "web.keytab")
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	run := func(sel Selection, offline, dry bool) *runbook.Report {
		p := &Prune{Keytab: path, Selection: sel, Offline: offline, DryRun: dry, NewKDC: func() KDC { return &fake{k: k} }}
		return p.Run(context.Background(), runbook.Options{})
	}
	// --keep 1 would keep the pending kvno 4 and drop the KDC's kvno 3.
	rep := run(Selection{Keep: 1}, false, false)
	if st, msg := status(rep, StepPruneGuard); st != runbook.Fail || !strings.Contains(msg, "kvno 3") || !strings.Contains(msg, "KDC's current kvno") {
		t.Errorf("--keep 1 with a kvno ahead of the KDC: %s %q", st, msg)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, data) {
		t.Error("a refused prune wrote the file")
	}
	// Offline, the newest (4) is protected and 3 may go: the reason to
	// ask the KDC.
	if rep := run(Selection{Keep: 1}, true, true); rep.Status != "pass" {
		t.Errorf("--offline --keep 1 --dry-run: %+v", rep.Steps)
	}
	// Removing the abandoned kvno 4 online is fine; kvno 3 stays.
	if rep := run(Selection{KVNO: 4, HasKVNO: true}, false, false); rep.Status != "pass" {
		t.Fatalf("--kvno 4: %+v", rep.Steps)
	}
	kt, _ := kdcops.ReadKeytabFile(path, kdcops.KeytabOptions{})
	if got := kdcops.KVNOs(kt.Entries); len(got) != 2 || got[1] != 3 {
		t.Errorf("after --kvno 4: %v", got)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %04o, want 0640 kept", fi.Mode().Perm())
	}
	// The KDC unreachable: could not complete, nothing removed.
	k.SetUnreachable(true)
	if rep := run(Selection{Keep: 1}, false, false); rep.Class.String() != "unreachable" {
		t.Errorf("KDC down: class %s %+v", rep.Class, rep.Steps)
	}
	k.SetUnreachable(false)
	if rep := run(Selection{Keep: 1}, false, false); rep.Status != "pass" {
		t.Fatalf("--keep 1: %+v", rep.Steps)
	}
	kt, _ = kdcops.ReadKeytabFile(path, kdcops.KeytabOptions{})
	if got := kdcops.KVNOs(kt.Entries); len(got) != 1 || got[0] != 3 {
		t.Errorf("after --keep 1: %v", got)
	}
}

// seedSecret makes data the store's current version of the secret.
func (g *pullRig) seedSecret(t *testing.T, data ...[]byte) {
	t.Helper()
	var all []kdcops.KeytabEntry
	for _, d := range data {
		kt, err := kdcops.ParseKeytab(d, kdcops.KeytabOptions{KeepKeys: true})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, kt.Entries...)
	}
	b, err := kdcops.MarshalKeytab(all)
	if err != nil {
		t.Fatal(err)
	}
	g.rotate(t, "", b)
}

// One secret, two principals: the KDC accepts svc/a and refuses svc/b.
// The proof of svc/a must not carry svc/b's refused keys into the file.
func TestPullInstallsNothingWhenOnePrincipalIsRefused(t *testing.T) {
	g := newPullRig(t)
	if err := g.kdc.k.Put(fakekdc.Principal{Name: "svc/b", Password: "pw-b", KVNO: 4}); err != nil {
		t.Fatal(err)
	}
	g.seedSecret(t, keytabOf(t, g.kdc.k, "svc/a", "pw-2", 2), keytabOf(t, g.kdc.k, "svc/b", "never-set", 4))
	rep, p := g.pull(t)
	if st, msg := status(rep, StepPullAS); st != runbook.Fail || !strings.Contains(msg, "svc/b") {
		t.Errorf("as: %s %q, want svc/b refused", st, msg)
	}
	for _, id := range []string{StepPullAP, StepPullInstall} {
		if st, _ := status(rep, id); st != runbook.Skip {
			t.Errorf("%s: %s, want skip after a refused principal", id, st)
		}
	}
	if _, err := os.Lstat(g.keytab); !os.IsNotExist(err) || p.Changed() {
		t.Errorf("a keytab with keys the KDC refused was installed (changed %v, %v)", p.Changed(), err)
	}
}

// A KDC that issues no service tickets to the principal (unknown as a
// service, user-to-user only, policy) marks a client keytab, proved by
// the AS exchange.
func TestPullClientKeytab(t *testing.T) {
	for _, code := range []int32{errorcode.KDC_ERR_S_PRINCIPAL_UNKNOWN, errorcode.KDC_ERR_MUST_USE_USER2USER, errorcode.KDC_ERR_POLICY} {
		t.Run(kdcops.ErrorName(code), func(t *testing.T) {
			g := newPullRig(t)
			g.kdc.ticketErr = &kdcops.KDCError{Code: code, Name: kdcops.ErrorName(code)}
			rep, p := g.pull(t)
			if st, msg := status(rep, StepPullAP); st != runbook.Skip || !strings.Contains(msg, "client keytab") {
				t.Errorf("ap: %s %q", st, msg)
			}
			if rep.Status != "pass" || !p.Changed() {
				t.Errorf("client keytab: %s, changed %v %+v", rep.Status, p.Changed(), rep.Steps)
			}
		})
	}
}

// holdLock takes path's keytab lock as another krbops would.
func holdLock(t *testing.T, path, holder string) func() {
	t.Helper()
	unlock, err := durable.Lock(context.Background(), durable.LockPath(path), holder, 0)
	if err != nil {
		t.Fatal(err)
	}
	return unlock
}

// Two writers of one keytab: while a pull talks to the KDC it holds the
// keytab's lock, so a prune (or a second pull) waits for it instead of
// rewriting the file from an older read; one that waits too long is
// refused, naming the holder, and writes nothing.
func TestKeytabLockSerialisesWriters(t *testing.T) {
	g := newPullRig(t)
	if rep, _ := g.pull(t); rep.Status != "pass" {
		t.Fatalf("first pull: %+v", rep.Steps)
	}
	g.rotate(t, "pw-3", keytabOf(t, g.kdc.k, "svc/a", "pw-3", 3))
	var during *runbook.Report
	g.kdc.onLogin = func() {
		g.kdc.onLogin = nil
		p := &Prune{Keytab: g.keytab, Selection: Selection{Keep: 1}, Offline: true, LockWait: time.Millisecond}
		during = p.Run(context.Background(), runbook.Options{})
	}
	if rep, p := g.pull(t); rep.Status != "pass" || !p.Changed() {
		t.Fatalf("pull: %+v", rep.Steps)
	}
	if st, msg := status(during, StepPruneKeytab); st != runbook.Error || !strings.Contains(msg, "krbops keytab pull, pid") || during.Class.String() != "unreachable" {
		t.Errorf("prune during a pull: %s %q class %s", st, msg, during.Class)
	}
	// The pull released its lock: the next writer gets it at once.
	unlock := holdLock(t, g.keytab, "test")
	unlock()

	// A held lock: pull and prune are refused, naming the holder, and
	// the file is untouched.
	before, _ := os.ReadFile(g.keytab)
	unlock = holdLock(t, g.keytab, "krbops rotate svc/a@UNIT.TEST")
	defer unlock()
	g.rotate(t, "pw-4", keytabOf(t, g.kdc.k, "svc/a", "pw-4", 4))
	rep, _ := g.pull(t, func(p *Pull) { p.LockWait = time.Millisecond })
	if st, msg := status(rep, StepPullKeytab); st != runbook.Error || !strings.Contains(msg, "krbops rotate svc/a@UNIT.TEST") {
		t.Errorf("pull while locked: %s %q", st, msg)
	}
	if after, _ := os.ReadFile(g.keytab); !bytes.Equal(before, after) {
		t.Error("a pull refused the lock wrote the file")
	}
	// A dry run reads only: it needs no lock.
	dry := &Prune{Keytab: g.keytab, Selection: Selection{Keep: 1}, Offline: true, DryRun: true}
	if rep := dry.Run(context.Background(), runbook.Options{}); rep.Status != "pass" {
		t.Errorf("dry run while locked: %+v", rep.Steps)
	}
}

// A writer that ignores the lock (ktutil, an operator) changes the file
// while the run talks to the KDC: the rewrite from the old read would
// lose that change, so nothing is written.
func TestRewriteStopsWhenTheFileChanged(t *testing.T) {
	other := func(t *testing.T, path string, data []byte) func() {
		return func() {
			if err := os.WriteFile(path+".new", data, 0o600); err != nil {
				t.Error(err)
			}
			if err := os.Rename(path+".new", path); err != nil {
				t.Error(err)
			}
		}
	}
	t.Run("pull", func(t *testing.T) {
		g := newPullRig(t)
		if rep, _ := g.pull(t); rep.Status != "pass" {
			t.Fatalf("first pull: %+v", rep.Steps)
		}
		g.rotate(t, "pw-3", keytabOf(t, g.kdc.k, "svc/a", "pw-3", 3))
		theirs := keytabOf(t, g.kdc.k, "svc/a", "pw-3", 3)
		g.kdc.onLogin = other(t, g.keytab, theirs)
		rep, p := g.pull(t)
		if st, msg := status(rep, StepPullInstall); st != runbook.Error || !strings.Contains(msg, "changed since krbops read it") || p.Changed() {
			t.Errorf("install: %s %q changed %v", st, msg, p.Changed())
		}
		if b, _ := os.ReadFile(g.keytab); !bytes.Equal(b, theirs) {
			t.Error("the other writer's file was replaced")
		}
		// A file created meanwhile where there was none is kept too.
		os.Remove(g.keytab)
		g.kdc.onLogin = other(t, g.keytab, theirs)
		if err := g.kdc.k.SetPassword("svc/a", "pw-5"); err != nil {
			t.Fatal(err)
		}
		g.rotate(t, "", keytabOf(t, g.kdc.k, "svc/a", "pw-5", g.kdc.k.KVNO("svc/a")))
		if st, msg := status(func() *runbook.Report { r, _ := g.pull(t); return r }(), StepPullInstall); st != runbook.Error || !strings.Contains(msg, "created") {
			t.Errorf("install over a new file: %s %q", st, msg)
		}
	})
	t.Run("prune", func(t *testing.T) {
		k := fakekdc.New(realm)
		if err := k.Put(fakekdc.Principal{Name: "HTTP/web", Password: "pw-3", KVNO: 3}); err != nil {
			t.Fatal(err)
		}
		old, _ := kdcops.ParseKeytab(keytabOf(t, k, "HTTP/web", "pw-2", 2), kdcops.KeytabOptions{KeepKeys: true})
		cur, _ := kdcops.ParseKeytab(keytabOf(t, k, "HTTP/web", "pw-3", 3), kdcops.KeytabOptions{KeepKeys: true})
		data, _ := kdcops.MarshalKeytab(append(old.Entries, cur.Entries...))
		path := filepath.Join(t.TempDir(), "web.keytab")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		// kvno 4 arrives (a pull without the lock) during the guard's
		// exchange with the KDC.
		withNew, _ := kdcops.MarshalKeytab(append(append(old.Entries, cur.Entries...), cur.Entries[0]))
		f := &fake{k: k, onLogin: other(t, path, withNew)}
		p := &Prune{Keytab: path, Selection: Selection{Keep: 1}, NewKDC: func() KDC { return f }}
		rep := p.Run(context.Background(), runbook.Options{})
		if st, msg := status(rep, StepPruneWrite); st != runbook.Error || !strings.Contains(msg, "changed since krbops read it") {
			t.Errorf("write: %s %q", st, msg)
		}
		if b, _ := os.ReadFile(path); !bytes.Equal(b, withNew) {
			t.Error("the other writer's file was replaced")
		}
	})
}
