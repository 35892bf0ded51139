package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/krbops/krbops/internal/lab"
	"github.com/krbops/krbops/internal/motolab"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/rotate"
	"github.com/krbops/krbops/secretstore"
)

// rotLab is one lab realm with the files rotate needs: an allowlist with
// cluster "c1", a file secret store, a ledger and a journal directory.
type rotLab struct {
	r                                  *lab.Realm
	dir, store, ledger, journal, allow string
}

func newRotLab(t *testing.T) *rotLab { t.Helper(); return newRotLabOf(t, lab.MIT) }

// newRotLabOf is newRotLab on a realm of kind k.
func newRotLabOf(t *testing.T, k lab.Kind) *rotLab {
	t.Helper()
	r := lab.ForTest(t, lab.Options{Kind: k})
	dir := t.TempDir()
	l := &rotLab{r: r, dir: dir, store: "file://" + filepath.Join(dir, "store"), ledger: filepath.Join(dir, "ledger.db"),
		journal: filepath.Join(dir, "journal"), allow: filepath.Join(dir, "allow.txt")}
	if err := os.Mkdir(filepath.Join(dir, "store"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.allow, []byte("# clusters cleared for rotation\nc1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return l
}

// principal creates name with random keys and exports them to a keytab
// of its own: kvno 2 on MIT (ktadd randomizes again), the account's
// first kvno elsewhere (l.r.KVNO tells).
func (l *rotLab) principal(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	if err := l.r.AddPrincipal(ctx, name, ""); err != nil {
		t.Fatal(err)
	}
	kt := filepath.Join(l.dir, strings.NewReplacer("/", "_", "$", "_").Replace(name)+".keytab")
	if l.r.Kind == lab.MIT {
		if err := l.r.Keytab(ctx, name, kt); err != nil {
			t.Fatal(err)
		}
		return kt
	}
	if err := l.r.ExportKeytab(ctx, name, kt); err != nil {
		t.Fatal(err)
	}
	return kt
}

// args are the flags of a rotation in cluster c1 with limits off.
func (l *rotLab) args(name, kt, role, backend string, extra ...string) []string {
	a := []string{"rotate", "--principal", name, "--keytab", kt, "--role", role, "--backend", backend,
		"--cluster", "c1", "--allowlist", l.allow, "--secret-store", l.store, "--ledger", l.ledger,
		"--journal-dir", l.journal, "--kdc-log", l.r.KDCs[0].Log, "--max-per-window", "100000", "--yes"}
	if backend != rotate.BackendKpasswd {
		a = append(a, "--admin-principal", l.r.AdminPrincipal, "--admin-keytab", l.r.AdminKeytab)
	}
	if rotate.Role(role).LogsIn() {
		// The lab's principals never logged in: the last-login check
		// would fail closed (issue 10); these tests are about the
		// rotation itself.
		a = append(a, "--no-login-record-ok")
	}
	return append(a, extra...)
}

// kinit reports whether MIT kinit logs in as name with keytab kt.
func (l *rotLab) kinit(t *testing.T, name, kt string) bool {
	t.Helper()
	cc := "FILE:" + filepath.Join(t.TempDir(), "cc")
	return l.r.Command(context.Background(), "kinit", "-k", "-t", kt, "-c", cc, name).Run() == nil
}

func (l *rotLab) storeVersion(t *testing.T, name string, stage secretstore.Stage) ([]byte, bool) {
	t.Helper()
	st, err := secretstore.Open(context.Background(), l.store, secretstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := st.Get(context.Background(), name+"@"+l.r.Name, stage)
	if errors.Is(err, secretstore.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return v.Data, true
}

func kvnosOfFile(t *testing.T, path string) []uint32 {
	t.Helper()
	kt, err := kdcops.ReadKeytabFile(path, kdcops.KeytabOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return kdcops.KVNOs(kt.Entries)
}

// checkRotatedClient is the client must-show: kinit -k -t works with the
// new keytab and fails with the old; the store's current is the new one.
func (l *rotLab) checkRotatedClient(t *testing.T, name, kt string, oldKVNO uint32) {
	t.Helper()
	if got := fmt.Sprint(kvnosOfFile(t, kt)); got != fmt.Sprint([]uint32{oldKVNO + 1}) {
		t.Errorf("keytab kvnos %s, want [%d]", got, oldKVNO+1)
	}
	if !l.kinit(t, name, kt) {
		t.Errorf("kinit -k -t with the new keytab fails")
	}
	backup := rotate.BackupPath(kt, oldKVNO)
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup %s: %v %v, want 0600", backup, err, fi)
	}
	if l.kinit(t, name, backup) {
		t.Errorf("kinit -k -t with the old keytab still works")
	}
	cur, ok := l.storeVersion(t, name, secretstore.StageCurrent)
	file, _ := os.ReadFile(kt)
	if !ok || string(cur) != string(file) {
		t.Errorf("secret store current is not the new keytab (found %v)", ok)
	}
}

func TestRotateClientKpasswd(t *testing.T) {
	l := newRotLab(t)
	kt := l.principal(t, "batch1")
	rep, code, stderr := runKrbops(t, l.r, l.args("batch1", kt, "client", rotate.BackendKpasswd)...)
	if code != 0 {
		t.Fatalf("exit %d: %s %+v", code, stderr, rep)
	}
	l.checkRotatedClient(t, "batch1", kt, 2)
	if _, err := os.Stat(rotate.JournalPath(l.journal, "batch1@"+l.r.Name)); !os.IsNotExist(err) {
		t.Errorf("journal left behind after success: %v", err)
	}
	// A second rotation goes from 3 to 4: the kvno comes from the KDC.
	if _, code, stderr := runKrbops(t, l.r, l.args("batch1", kt, "client", rotate.BackendKpasswd)...); code != 0 {
		t.Fatalf("second rotation: exit %d: %s", code, stderr)
	}
	l.checkRotatedClient(t, "batch1", kt, 3)
}

func TestRotateClientKadmin(t *testing.T) {
	l := newRotLab(t)
	kt := l.principal(t, "batch2")
	if rep, code, stderr := runKrbops(t, l.r, l.args("batch2", kt, "client", rotate.BackendKadmin)...); code != 0 {
		t.Fatalf("exit %d: %s %+v", code, stderr, rep)
	}
	l.checkRotatedClient(t, "batch2", kt, 2)
}

func TestRotateClientKpasswdAdmin(t *testing.T) {
	l := newRotLab(t)
	kt := l.principal(t, "batch3")
	if rep, code, stderr := runKrbops(t, l.r, l.args("batch3", kt, "client", rotate.BackendKpasswdAdmin)...); code != 0 {
		t.Fatalf("exit %d: %s %+v", code, stderr, rep)
	}
	l.checkRotatedClient(t, "batch3", kt, 2)
}

// Server must-show: after phase 1 klist -k shows old and new kvno and a
// ticket issued before the rotation still decrypts; finish refuses before
// the ticket lifetime (exit 1) and with --force leaves only the new kvno.
func TestRotateServerTwoPhase(t *testing.T) {
	l := newRotLab(t)
	ctx := context.Background()
	svc := "HTTP/web1.krbops.test"
	kt := l.principal(t, svc)
	clientKT := l.principal(t, "client/web1")
	cc := filepath.Join(l.dir, "client.ccache")
	if out, err := l.r.Command(ctx, "kinit", "-k", "-t", clientKT, "-c", "FILE:"+cc, "client/web1").CombinedOutput(); err != nil {
		t.Fatalf("kinit: %v %s", err, out)
	}
	if out, err := l.r.Command(ctx, "kvno", "-c", "FILE:"+cc, svc).CombinedOutput(); err != nil || !strings.Contains(string(out), "kvno = 2") {
		t.Fatalf("kvno before rotation: %v %s", err, out)
	}
	rep, code, stderr := runKrbops(t, l.r, l.args(svc, kt, "server", rotate.BackendKpasswd)...)
	if code != 0 {
		t.Fatalf("phase 1: exit %d: %s %+v", code, stderr, rep)
	}
	out, err := l.r.Command(ctx, "klist", "-k", kt).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "   2 HTTP/web1") || !strings.Contains(string(out), "   3 HTTP/web1") {
		t.Fatalf("klist -k after phase 1 does not show kvno 2 and 3: %v\n%s", err, out)
	}
	checkOldTicketDecrypts(t, cc, svc+"@"+l.r.Name, kt, rotate.BackupPath(kt, 2))

	status, code, _ := runKrbops(t, l.r, "rotate", "status", "--ledger", l.ledger, "--journal-dir", l.journal)
	if st, ok := status.step("", "status."+svc+"@"+l.r.Name); code != 0 || !ok || !strings.Contains(st.Message, "awaiting phase 2") {
		t.Errorf("status: exit %d %+v", code, status)
	}

	fin := []string{"rotate", "finish", "--principal", svc, "--keytab", kt, "--secret-store", l.store, "--ledger", l.ledger, "--yes"}
	rep, code, _ = runKrbops(t, l.r, fin...)
	if st, _ := rep.step("", rotate.StepPhase2Wait); code != 1 || st.Status != "fail" {
		t.Fatalf("finish before the ticket lifetime: exit %d, step %+v; want exit 1", code, st)
	}
	if got := fmt.Sprint(kvnosOfFile(t, kt)); got != "[2 3]" {
		t.Fatalf("refused finish changed the keytab: kvnos %s", got)
	}
	if rep, code, stderr = runKrbops(t, l.r, append(fin, "--force")...); code != 0 {
		t.Fatalf("finish --force: exit %d %s %+v", code, stderr, rep)
	}
	out, err = l.r.Command(ctx, "klist", "-k", kt).CombinedOutput()
	if err != nil || strings.Contains(string(out), "   2 HTTP/web1") || !strings.Contains(string(out), "   3 HTTP/web1") {
		t.Fatalf("klist -k after finish --force: want kvno 3 only: %v\n%s", err, out)
	}
	cur, _ := l.storeVersion(t, svc, secretstore.StageCurrent)
	file, _ := os.ReadFile(kt)
	if string(cur) != string(file) {
		t.Errorf("store current differs from the phase-2 keytab")
	}
}

// Pre-checks refuse, with a reason: a cluster outside the allowlist, a
// window at its limit, a last login too close to TGT expiry. Nothing
// changes at the KDC: the old keytab still logs in.
func TestRotatePrechecksRefuse(t *testing.T) {
	l := newRotLab(t)
	kt := l.principal(t, "pre1")
	refused := func(step, want string, args ...string) {
		t.Helper()
		rep, code, stderr := runKrbops(t, l.r, args...)
		st, _ := rep.step("", step)
		if code != 1 || st.Status != "fail" || !strings.Contains(st.Message, want) || st.Hint == "" {
			t.Errorf("%s: exit %d, step %+v (%s); want exit 1, fail with %q and a hint", step, code, st, stderr, want)
		}
		if !l.kinit(t, "pre1", kt) {
			t.Errorf("%s: the refused rotation broke the keytab", step)
		}
	}
	a := l.args("pre1", kt, "client", rotate.BackendKpasswd)
	refused(rotate.StepAllowlist, "cluster c2 is not in the allowlist", replaceFlag(a, "--cluster", "c2")...)

	other := l.principal(t, "pre2")
	if _, code, stderr := runKrbops(t, l.r, l.args("pre2", other, "client", rotate.BackendKpasswd)...); code != 0 {
		t.Fatalf("rotation filling the window: exit %d %s", code, stderr)
	}
	refused(rotate.StepRate, "the window's limit of 1 is reached", replaceFlag(a, "--max-per-window", "1")...)

	// The KDC issues pre1 20m TGTs: a login now leaves less than the
	// default 30m. krbops measures the lifetime the KDC really issues
	// (issue 10), whatever --ticket-lifetime or krb5.conf say.
	if _, err := l.r.Kadmin(context.Background(), `modprinc -maxlife "20 minutes" pre1`); err != nil {
		t.Fatal(err)
	}
	if !l.kinit(t, "pre1", kt) {
		t.Fatal("kinit")
	}
	time.Sleep(1100 * time.Millisecond) // rotate ignores logins in its own first second
	refused(rotate.StepLastLogin, "less than --min-tgt-remaining 30m0s", a...)
}

func replaceFlag(args []string, flag, value string) []string {
	out := append([]string(nil), args...)
	for i := range out {
		if out[i] == flag {
			out[i+1] = value
		}
	}
	return out
}

// runBinary runs krbops with crashAt set; killed reports a SIGKILL.
func (l *rotLab) runBinary(t *testing.T, crashAt string, args ...string) (code int, killed bool, out string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, krbopsBin(t), append(args, "-o", "json")...)
	cmd.Env = append(os.Environ(), "KRB5_CONFIG="+l.r.Krb5Conf, "KRB5CCNAME=FILE:"+filepath.Join(l.dir, "none"), "KRBOPS_TEST_CRASH_AT="+crashAt)
	b, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return -1, true, string(b)
		}
		return ee.ExitCode(), false, string(b)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, false, string(b)
}

// checkNoLockout: the principal authenticates with the store's current
// or pending keytab, whatever the crash left.
func (l *rotLab) checkNoLockout(t *testing.T, name, kt, when string) {
	t.Helper()
	for _, stage := range []secretstore.Stage{secretstore.StageCurrent, secretstore.StagePending} {
		data, ok := l.storeVersion(t, name, stage)
		if !ok {
			continue
		}
		// MIT kinit picks its key by kvno from the AS-REP, so a keytab
		// with several kvnos is fine here (gokrb5's caveat does not apply).
		path := filepath.Join(t.TempDir(), string(stage)+".keytab")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if l.kinit(t, name, path) {
			return
		}
	}
	// Before anything is stored, the untouched keytab file is the store's
	// stand-in (the store is seeded from it in create.store).
	if _, ok := l.storeVersion(t, name, secretstore.StageCurrent); !ok && l.kinit(t, name, kt) {
		return
	}
	t.Errorf("%s: lockout: neither the store's current nor its pending keytab authenticates", when)
}

// Killed at each step boundary (and again during the resume), then
// --resume: completes every time, never a lockout.
func TestRotateCrashAtEveryStep(t *testing.T) { crashAtEveryStep(t, newRotLab(t)) }

// crashAtEveryStep kills a client rotation at every step boundary (and
// its resume one step later) and checks that the resume completes with
// the kvno raised by exactly one and no lockout in between.
func crashAtEveryStep(t *testing.T, l *rotLab) {
	crashes := 0
	lockIdx := 0
	for i, id := range rotate.StepIDs {
		if id == rotate.StepLock {
			lockIdx = i
		}
	}
	for i, id := range rotate.StepIDs {
		name := fmt.Sprintf("crash%02d", i)
		t.Run(id, func(t *testing.T) {
			kt := l.principal(t, name)
			old := l.kvno(t, name)
			_, killed, out := l.runBinary(t, id, l.args(name, kt, "client", rotate.BackendKpasswd)...)
			if !killed {
				t.Fatalf("not killed at %s:\n%s", id, out)
			}
			crashes++
			l.checkNoLockout(t, name, kt, "after a crash at "+id)
			resume := []string{"rotate", "--resume", "--principal", name, "--secret-store", l.store, "--ledger", l.ledger, "--journal-dir", l.journal, "--yes"}
			if i < lockIdx {
				// No journal yet: nothing to resume, and a fresh run works.
				if code, _, out := l.runBinary(t, "", resume...); code != 1 {
					t.Fatalf("resume without a journal: exit %d, want 1\n%s", code, out)
				}
				resume = l.args(name, kt, "client", rotate.BackendKpasswd)
			} else if i+1 < len(rotate.StepIDs) {
				// Crash the resume too, one step later.
				next := rotate.StepIDs[i+1]
				if _, killed, out := l.runBinary(t, next, resume...); !killed {
					t.Fatalf("resume not killed at %s:\n%s", next, out)
				}
				crashes++
				l.checkNoLockout(t, name, kt, "after a crash of --resume at "+next)
			}
			if code, _, out := l.runBinary(t, "", resume...); code != 0 {
				t.Fatalf("completion after a crash at %s: exit %d\n%s", id, code, out)
			}
			l.checkRotatedClient(t, name, kt, old)
		})
	}
	// The same with the admin backends, killed right after the key change
	// (the crash that must not be repeated) and before it.
	backends := []string{rotate.BackendKpasswdAdmin}
	if l.r.Kind == lab.MIT {
		backends = append(backends, rotate.BackendKadmin)
	}
	for bi, backend := range backends {
		for ii, id := range []string{rotate.StepPutPending, rotate.StepSet} {
			// Short: an AD account name (sAMAccountName) has 20 characters.
			name := fmt.Sprintf("crashb%d%d", bi, ii)
			t.Run(backend+"/"+id, func(t *testing.T) {
				kt := l.principal(t, name)
				old := l.kvno(t, name)
				if _, killed, out := l.runBinary(t, id, l.args(name, kt, "client", backend)...); !killed {
					t.Fatalf("not killed at %s:\n%s", id, out)
				}
				crashes++
				l.checkNoLockout(t, name, kt, "after a crash at "+id)
				resume := []string{"rotate", "--resume", "--principal", name, "--secret-store", l.store, "--ledger", l.ledger,
					"--journal-dir", l.journal, "--admin-principal", l.r.AdminPrincipal, "--admin-keytab", l.r.AdminKeytab, "--yes"}
				if code, _, out := l.runBinary(t, "", resume...); code != 0 {
					t.Fatalf("resume: exit %d\n%s", code, out)
				}
				// One kvno up exactly: the key change was not repeated.
				l.checkRotatedClient(t, name, kt, old)
			})
		}
	}
	t.Logf("crash points tried: %d", crashes)
}

// The awssm store against moto_server: a client rotation, and crashes
// around the token-guarded PutPending and the key change, resumed.
func TestRotateClientAWSSM(t *testing.T) {
	srv := motolab.ForTest(t, motolab.Options{})
	// The CLI signs with the default credential chain, as in production.
	t.Setenv("AWS_ACCESS_KEY_ID", motolab.DummyAccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", motolab.DummySecretAccessKey)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	l := newRotLab(t)
	l.store = "awssm://krbops?region=" + srv.Region + "&endpoint=" + srv.Endpoint
	sm := secretsmanager.NewFromConfig(srv.Config())
	for i, crashAt := range []string{"", rotate.StepPutPending, rotate.StepSet} {
		name := fmt.Sprintf("sm%d", i)
		kt := l.principal(t, name)
		// awssm needs the secret to exist; krbops seeds its first version.
		if _, err := sm.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{Name: aws.String("krbops/" + name + "@" + l.r.Name)}); err != nil {
			t.Fatal(err)
		}
		args := l.args(name, kt, "client", rotate.BackendKpasswd)
		if crashAt == "" {
			if code, _, out := l.runBinary(t, "", args...); code != 0 {
				t.Fatalf("exit %d\n%s", code, out)
			}
		} else {
			if _, killed, out := l.runBinary(t, crashAt, args...); !killed {
				t.Fatalf("not killed at %s\n%s", crashAt, out)
			}
			l.checkNoLockout(t, name, kt, "awssm, after a crash at "+crashAt)
			resume := []string{"rotate", "--resume", "--principal", name, "--secret-store", l.store, "--ledger", l.ledger, "--journal-dir", l.journal, "--yes"}
			if code, _, out := l.runBinary(t, "", resume...); code != 0 {
				t.Fatalf("resume after %s: exit %d\n%s", crashAt, code, out)
			}
		}
		l.checkRotatedClient(t, name, kt, 2)
	}
}

// Killed at random moments, not only at step boundaries (inside a store
// write, a kpasswd exchange, a journal fsync): resume, or start again when
// the kill came before the journal, and the rotation completes.
func TestRotateKilledAtRandomTimes(t *testing.T) {
	l := newRotLab(t)
	bin := krbopsBin(t)
	for i := range 8 {
		name := fmt.Sprintf("random%d", i)
		kt := l.principal(t, name)
		// Spread over a whole rotation (about 150-250 ms here).
		delay := time.Duration(rand.Int64N(int64(300 * time.Millisecond)))
		cmd := exec.Command(bin, append(l.args(name, kt, "client", rotate.BackendKpasswd), "-o", "json")...)
		cmd.Env = append(os.Environ(), "KRB5_CONFIG="+l.r.Krb5Conf, "KRB5CCNAME=FILE:"+filepath.Join(l.dir, "none"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		l.checkNoLockout(t, name, kt, fmt.Sprintf("after a kill at %s", delay))
		resume := []string{"rotate", "--resume", "--principal", name, "--secret-store", l.store, "--ledger", l.ledger, "--journal-dir", l.journal, "--yes"}
		code, _, out := l.runBinary(t, "", resume...)
		if code == 1 && strings.Contains(out, "no rotation of") {
			// Killed before the journal existed: nothing changed, start again.
			code, _, out = l.runBinary(t, "", l.args(name, kt, "client", rotate.BackendKpasswd)...)
		}
		if code != 0 {
			t.Fatalf("kill at %s: completion exit %d\n%s", delay, code, out)
		}
		l.checkRotatedClient(t, name, kt, 2)
	}
}
