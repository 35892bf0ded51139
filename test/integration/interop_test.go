package integration

// Issue 11: every command against the three KDC families operators run.
// Each test runs once per lab.Kind on a real realm of that kind; under
// CI=true a kind whose binaries are missing fails (lab.ForTest).

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/krbops/krbops/internal/lab"
	"github.com/krbops/krbops/rotate"
)

// forKinds runs run as a subtest per KDC kind, in parallel: a Samba AD
// realm spends most of its start-up waiting, and the kinds share nothing.
func forKinds(t *testing.T, run func(t *testing.T, k lab.Kind)) {
	t.Helper()
	for _, k := range lab.Kinds() {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			run(t, k)
		})
	}
}

// kindNames are the principals of the must-shows on one kind. AD has no
// multi-component user principals: a service is a user account with an
// SPN, and rotate rotates the account (its keys are the SPN's).
type kindNames struct {
	client  string // rotated as a client
	account string // the service's account, rotated as a server
	spn     string // the service principal clients ask tickets for
}

func namesFor(r *lab.Realm, tag string) kindNames {
	if r.Kind == lab.AD {
		return kindNames{client: "cl-" + tag, account: "svc-" + tag, spn: "HTTP/" + tag + "." + strings.ToLower(r.Name)}
	}
	spn := "HTTP/" + tag + "." + strings.ToLower(r.Name)
	return kindNames{client: "client/" + tag, account: spn, spn: spn}
}

// service creates the service of n with random keys and exports its keytab.
func (l *rotLab) service(t *testing.T, n kindNames) string {
	t.Helper()
	kt := l.principal(t, n.account)
	if l.r.Kind == lab.AD {
		if err := l.r.AddSPN(context.Background(), n.account, n.spn); err != nil {
			t.Fatal(err)
		}
	}
	return kt
}

func (l *rotLab) kvno(t *testing.T, name string) uint32 {
	t.Helper()
	v, err := l.r.KVNO(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// clock-check reads each implementation's KRB-ERROR stime/susec: against
// a KDC on this host the offset is within ±1 s of zero, and against one
// whose clock libfaketime moved by 420 s within ±1 s of that.
func TestInteropClockCheck(t *testing.T) {
	forKinds(t, func(t *testing.T, k lab.Kind) {
		r := lab.ForTest(t, lab.Options{Kind: k})
		skewed, err := r.StartKDC(context.Background(), lab.KDCOptions{FakeTime: "+420s"})
		if err != nil {
			t.Fatalf("skewed %s KDC: %v", k, err)
		}
		for _, c := range []struct {
			addr  string
			truth float64
		}{{r.KDCs[0].Addr, 0}, {skewed.Addr, skewed.Offset.Seconds()}} {
			rep, code, stderr := runKrbops(t, r, "clock-check", "--realm", r.Name, "--kdc", c.addr)
			st, ok := rep.step("", "clock.kdc-offset:"+c.addr)
			if !ok {
				t.Fatalf("%s: no offset step (exit %d, %s) %+v", c.addr, code, stderr, rep)
			}
			off, _ := st.Evidence["offset_seconds"].(float64)
			if math.Abs(off-c.truth) > 1 {
				t.Errorf("%s KDC %s: offset %.3fs, truth %.3fs", k, c.addr, off, c.truth)
			}
		}
	})
}

// verify passes on every kind: AS per kvno, TGS, and AP (with AD's PAC).
// On AD the service is an account with an SPN; its keytab names the
// account and, as adcli and msktutil write it, the SPN too. A keytab
// naming the account alone still decrypts (MIT's acceptor takes it) but
// AP warns that acceptors looking keys up by service name refuse it; and
// AD keytabs always carry an rc4 key, which klist-lint's KT006 warns of.
func TestInteropVerify(t *testing.T) {
	forKinds(t, func(t *testing.T, k lab.Kind) {
		l := newRotLabOf(t, k)
		n := namesFor(l.r, "vfy")
		kt := l.service(t, n)
		args := []string{"verify", "--keytab", kt, "--principal", n.account}
		if k != lab.AD {
			rep, code, stderr := runKrbops(t, l.r, args...)
			if code != 0 {
				t.Fatalf("verify on %s: exit %d (%s) %+v", k, code, stderr, rep)
			}
			for _, s := range rep.Steps {
				if s.Status != "pass" {
					t.Errorf("%s: step %s %s: %s", k, s.ID, s.Status, s.Message)
				}
			}
			return
		}
		check := func(what, keytab, apStatus string) {
			t.Helper()
			rep, code, stderr := runKrbops(t, l.r, "verify", "--keytab", keytab, "--principal", n.account, "--service", n.spn)
			if code != 0 {
				t.Fatalf("%s: exit %d (%s) %+v", what, code, stderr, rep)
			}
			for _, s := range rep.Steps {
				want := "pass"
				switch s.ID {
				case "ap":
					want = apStatus
				case "keytab":
					want = s.Status // rc4 (KT006): a warning, checked below
				}
				if s.Status != want {
					t.Errorf("%s: step %s %s (%s), want %s", what, s.ID, s.Status, s.Message, want)
				}
			}
			if ks, _ := rep.step("", "keytab"); ks.Status != "pass" && !strings.Contains(ks.Message+fmt.Sprint(ks.Evidence), "KT006") {
				t.Errorf("%s: keytab step %s for another reason than rc4: %s %v", what, ks.Status, ks.Message, ks.Evidence)
			}
			if ap, _ := rep.step("", "ap"); apStatus == "warn" && !strings.Contains(ap.Hint, n.spn) {
				t.Errorf("%s: ap warning does not say which entry to add: %+v", what, ap)
			}
		}
		check("account-only keytab", kt, "warn")
		svcKT := filepath.Join(l.dir, "svc-vfy-spn.keytab")
		if err := l.r.ExportServiceKeytab(context.Background(), n.account, svcKT); err != nil {
			t.Fatal(err)
		}
		check("keytab with the SPN's entries", svcKT, "pass")
	})
}

// klist-lint --online finds no kvno or key problem on a fresh keytab.
func TestInteropKlistLintOnline(t *testing.T) {
	forKinds(t, func(t *testing.T, k lab.Kind) {
		l := newRotLabOf(t, k)
		n := namesFor(l.r, "lint")
		kt := l.principal(t, n.client)
		if err := os.Chmod(kt, 0o600); err != nil {
			t.Fatal(err)
		}
		rep, code, stderr := runKrbops(t, l.r, "klist-lint", "--keytab", kt, "--online", "--max-age", "0")
		if code != 0 {
			t.Errorf("klist-lint --online on %s: exit %d (%s) %+v", k, code, stderr, rep)
		}
	})
}

// Client rotation with kpasswd (a self change): MIT kinit -k -t accepts
// the new keytab and refuses the old; the KDC's kvno rose by one.
func TestInteropRotateClientKpasswd(t *testing.T) {
	forKinds(t, func(t *testing.T, k lab.Kind) {
		l := newRotLabOf(t, k)
		n := namesFor(l.r, "rc1")
		kt := l.principal(t, n.client)
		old := l.kvno(t, n.client)
		if rep, code, stderr := runKrbops(t, l.r, l.args(n.client, kt, "client", rotate.BackendKpasswd)...); code != 0 {
			t.Fatalf("rotate on %s: exit %d: %s %+v", k, code, stderr, rep)
		}
		l.checkRotatedClient(t, n.client, kt, old)
		if got := l.kvno(t, n.client); got != old+1 {
			t.Errorf("%s: KDC kvno %d after the rotation, want %d", k, got, old+1)
		}
	})
}

// Server rotation keeps both kvnos in the keytab and a ticket issued
// before the change still decrypts with it.
func TestInteropRotateServer(t *testing.T) {
	forKinds(t, func(t *testing.T, k lab.Kind) {
		l := newRotLabOf(t, k)
		ctx := context.Background()
		n := namesFor(l.r, "rs1")
		kt := l.service(t, n)
		clientKT := l.principal(t, n.client)
		old := l.kvno(t, n.account)
		cc := filepath.Join(l.dir, "client.ccache")
		if out, err := l.r.Command(ctx, "kinit", "-k", "-t", clientKT, "-c", "FILE:"+cc, n.client).CombinedOutput(); err != nil {
			t.Fatalf("kinit: %v %s", err, out)
		}
		if out, err := l.r.Command(ctx, "kvno", "-c", "FILE:"+cc, n.spn).CombinedOutput(); err != nil || !strings.Contains(string(out), fmt.Sprintf("kvno = %d", old)) {
			t.Fatalf("kvno %s before rotation: %v %s", n.spn, err, out)
		}
		if rep, code, stderr := runKrbops(t, l.r, l.args(n.account, kt, "server", rotate.BackendKpasswd)...); code != 0 {
			t.Fatalf("phase 1 on %s: exit %d: %s %+v", k, code, stderr, rep)
		}
		if got := fmt.Sprint(kvnosOfFile(t, kt)); got != fmt.Sprint([]uint32{old, old + 1}) {
			t.Errorf("%s: keytab kvnos after phase 1 %s, want [%d %d]", k, got, old, old+1)
		}
		checkOldTicketDecryptsAt(t, cc, n.spn+"@"+l.r.Name, old, kt, rotate.BackupPath(kt, old))
		if got := l.kvno(t, n.account); got != old+1 {
			t.Errorf("%s: KDC kvno %d after phase 1, want %d", k, got, old+1)
		}
	})
}

// Admin set-password rotation (kpasswd-admin, RFC 3244 with targname) as
// the realm's administrator: admin/admin on MIT and Heimdal,
// Administrator on AD.
func TestInteropRotateKpasswdAdmin(t *testing.T) {
	forKinds(t, func(t *testing.T, k lab.Kind) {
		l := newRotLabOf(t, k)
		n := namesFor(l.r, "ra1")
		kt := l.principal(t, n.client)
		old := l.kvno(t, n.client)
		if rep, code, stderr := runKrbops(t, l.r, l.args(n.client, kt, "client", rotate.BackendKpasswdAdmin)...); code != 0 {
			t.Fatalf("rotate on %s: exit %d: %s %+v", k, code, stderr, rep)
		}
		l.checkRotatedClient(t, n.client, kt, old)
	})
}

// AD: self rotation of a computer account (HOST1$, its own salt rule).
func TestInteropADComputerAccount(t *testing.T) {
	l := newRotLabOf(t, lab.AD)
	ctx := context.Background()
	p, err := l.r.AddComputer(ctx, "HOST1")
	if err != nil {
		t.Fatal(err)
	}
	name, _, _ := strings.Cut(p, "@")
	kt := filepath.Join(l.dir, "host1.keytab")
	if err := l.r.ExportKeytab(ctx, name, kt); err != nil {
		t.Fatal(err)
	}
	old := l.kvno(t, name)
	if rep, code, stderr := runKrbops(t, l.r, l.args(name, kt, "client", rotate.BackendKpasswd)...); code != 0 {
		t.Fatalf("rotate %s: exit %d: %s %+v", name, code, stderr, rep)
	}
	l.checkRotatedClient(t, name, kt, old)
	if got := l.kvno(t, name); got != old+1 {
		t.Errorf("KDC kvno %d after the rotation, want %d", got, old+1)
	}
}

// The kadmin backend speaks MIT's kadmin protocol only: on the other
// kinds it is refused with the reason before anything changes.
func TestInteropKadminBackendRefusedOffMIT(t *testing.T) {
	for _, k := range []lab.Kind{lab.Heimdal, lab.AD} {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			l := newRotLabOf(t, k)
			n := namesFor(l.r, "kad")
			kt := l.principal(t, n.client)
			old := l.kvno(t, n.client)
			rep, code, stderr := runKrbops(t, l.r, l.args(n.client, kt, "client", rotate.BackendKadmin)...)
			if code == 0 {
				t.Fatalf("kadmin backend on %s: exit 0 %+v", k, rep)
			}
			if !strings.Contains(stderr+fmt.Sprint(rep), "MIT") {
				t.Errorf("kadmin backend on %s: the refusal does not say it needs MIT's kadmind: %s %+v", k, stderr, rep)
			}
			if got := l.kvno(t, n.client); got != old {
				t.Errorf("refused rotation changed the kvno: %d → %d", old, got)
			}
			if !l.kinit(t, n.client, kt) {
				t.Errorf("refused rotation broke the keytab")
			}
		})
	}
}

// Crash-and-resume of a client rotation at every step boundary against
// Heimdal and AD too (MIT: TestRotateCrashAtEveryStep).
func TestInteropRotateCrashAtEveryStep(t *testing.T) {
	for _, k := range []lab.Kind{lab.Heimdal, lab.AD} {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			crashAtEveryStep(t, newRotLabOf(t, k))
		})
	}
}
