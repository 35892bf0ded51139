package lab_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/lab"
)

// heimdalForTest is lab.ForTest for a Heimdal realm.
func heimdalForTest(t *testing.T, realm string) *lab.Realm {
	t.Helper()
	return lab.ForTest(t, lab.Options{Kind: lab.Heimdal, Realm: realm})
}

// keytabKVNOs lists the kvnos MIT's `klist -k` shows for principal in kt.
func keytabKVNOs(t *testing.T, r *lab.Realm, kt, principal string) []int {
	t.Helper()
	out, err := run(t, r, "", "klist", "-k", kt)
	if err != nil {
		t.Fatalf("klist -k %s: %v\n%s", kt, err, out)
	}
	var kvnos []int
	for _, m := range regexp.MustCompile(`(?m)^\s*(\d+)\s+(\S+)\s*$`).FindAllStringSubmatch(out, -1) {
		if m[2] != principal {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		if !slices.Contains(kvnos, n) {
			kvnos = append(kvnos, n)
		}
	}
	slices.Sort(kvnos)
	return kvnos
}

func TestHeimdalRealmIssuesTickets(t *testing.T) {
	began := time.Now()
	r := heimdalForTest(t, "")
	t.Logf("Heimdal realm started in %v", time.Since(began).Round(time.Millisecond))
	ctx := t.Context()
	if r.Kind != lab.Heimdal || r.Name != lab.DefaultRealm || r.KpasswdAddr == "" || len(r.KDCs) != 1 {
		t.Fatalf("realm %+v: want a Heimdal realm with one KDC and kpasswdd", r)
	}
	if r.KadminAddr != "" {
		t.Errorf("KadminAddr = %q: a Heimdal realm runs no admin server", r.KadminAddr)
	}
	if r.KDCs[0].Log != r.KDCLog() || r.KDCs[0].Profile != r.KDCProfile {
		t.Errorf("KDCs[0] log %s profile %s, want KDCLog %s and KDCProfile %s", r.KDCs[0].Log, r.KDCs[0].Profile, r.KDCLog(), r.KDCProfile)
	}
	conf, err := os.ReadFile(r.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), "kpasswd_server = "+r.KpasswdAddr) || strings.Contains(string(conf), "admin_server") {
		t.Errorf("krb5.conf should name kpasswd_server %s and no admin_server:\n%s", r.KpasswdAddr, conf)
	}

	t.Run("admin keytab", func(t *testing.T) {
		if out, err := run(t, r, "", "kinit", "-k", "-t", r.AdminKeytab, r.AdminPrincipal); err != nil {
			t.Fatalf("kinit -k admin: %v\n%s", err, out)
		}
	})

	t.Run("keytab kinit and kvno", func(t *testing.T) {
		p := "HTTP/web.krbops.test@" + r.Name
		if err := r.AddPrincipal(ctx, p, ""); err != nil {
			t.Fatal(err)
		}
		kt := filepath.Join(r.Dir, "web.keytab")
		if err := r.ExportKeytab(ctx, p, kt); err != nil {
			t.Fatal(err)
		}
		if got := keytabKVNOs(t, r, kt, p); !slices.Equal(got, []int{1}) {
			t.Fatalf("fresh keytab kvnos %v, want [1]", got)
		}
		if out, err := run(t, r, "", "kinit", "-k", "-t", kt, p); err != nil {
			t.Fatalf("MIT kinit -k -t against Heimdal: %v\n%s", err, out)
		}
		// A TGS-REQ for the service itself, so the log has both kinds.
		out, err := run(t, r, "", "kvno", p)
		if err != nil || !strings.Contains(out, "kvno = 1") {
			t.Fatalf("MIT kvno: %v\n%s", err, out)
		}
		log, err := os.ReadFile(r.KDCLog())
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"AS-REQ " + p + " from IPv4:127.0.0.1", "TGS-REQ " + p + " from IPv4:127.0.0.1"} {
			if !strings.Contains(string(log), want) {
				t.Errorf("KDC log %s lacks %q", r.KDCLog(), want)
			}
		}
	})

	t.Run("password kinit", func(t *testing.T) {
		// Quotes, backslashes and spaces: what `kadmin -l`'s own command
		// parser would mangle.
		pw := `p"q\ r'\"s `
		if err := r.AddPrincipal(ctx, "alice", pw); err != nil {
			t.Fatal(err)
		}
		if out, err := run(t, r, pw+"\n", "kinit", "alice"); err != nil {
			t.Fatalf("kinit alice: %v\n%s", err, out)
		}
		if out, err := run(t, r, "wrong\n", "kinit", "alice"); err == nil {
			t.Fatalf("kinit with a wrong password succeeded:\n%s", out)
		}
		if err := r.AddPrincipal(ctx, "bob", "two\nlines"); err == nil {
			t.Error("AddPrincipal with a newline in the password succeeded")
		}
	})

	t.Run("MIT-only helpers refuse", func(t *testing.T) {
		if _, err := r.Kadmin(ctx, "getprinc alice"); err == nil || !strings.Contains(err.Error(), "only for mit") {
			t.Errorf("Kadmin on Heimdal: %v, want a refusal", err)
		}
	})
}

func TestHeimdalSetPasswordKeepsOldKVNO(t *testing.T) {
	r := heimdalForTest(t, "HIST.TEST")
	ctx := t.Context()
	p := "svc-hist@" + r.Name
	if err := r.AddPrincipal(ctx, p, ""); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(r.Dir, "old.keytab")
	if err := r.ExportKeytab(ctx, p, old); err != nil {
		t.Fatal(err)
	}
	for i, pw := range []string{"", "Fresh-Pass-2"} {
		before, err := r.KVNO(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.SetPassword(ctx, p, pw); err != nil {
			t.Fatal(err)
		}
		after, err := r.KVNO(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if after != before+1 {
			t.Fatalf("change %d: kvno %d -> %d, want +1", i+1, before, after)
		}
		kt := filepath.Join(r.Dir, "after-"+strconv.Itoa(i+1)+".keytab")
		if err := r.ExportKeytab(ctx, p, kt); err != nil {
			t.Fatal(err)
		}
		got := keytabKVNOs(t, r, kt, p)
		if !slices.Contains(got, int(after)) || !slices.Contains(got, int(before)) {
			t.Fatalf("change %d: exported kvnos %v, want both %d and %d (Heimdal keeps key history)", i+1, got, before, after)
		}
		if out, err := run(t, r, "", "kinit", "-k", "-t", kt, p); err != nil {
			t.Fatalf("change %d: kinit with the new keytab: %v\n%s", i+1, err, out)
		}
	}
	if out, err := run(t, r, "Fresh-Pass-2\n", "kinit", p); err != nil {
		t.Fatalf("kinit with the password SetPassword set: %v\n%s", err, out)
	}
	// The KDC keeps the old keys for tickets already issued, not for
	// logging in: the keytab from before the changes is refused.
	if out, err := run(t, r, "", "kinit", "-k", "-t", old, p); err == nil {
		t.Fatalf("kinit with the keytab from before the changes succeeded:\n%s", out)
	}
}

// Heimdal's kpasswdd has no TCP listener: the reason krbops' kpasswd
// client must speak UDP (issue 11).
func TestHeimdalKpasswdAnswersOnlyUDP(t *testing.T) {
	r := heimdalForTest(t, "")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := lab.ProbeKpasswd(ctx, "udp", r.KpasswdAddr); err != nil {
		t.Fatalf("kpasswdd over UDP: %v", err)
	}
	err := lab.ProbeKpasswd(ctx, "tcp", r.KpasswdAddr)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("kpasswdd over TCP: %v, want connection refused", err)
	}
}

// The MIT realm's kpasswd (inside kadmind) answers both, so the probe
// itself is not what refuses TCP above.
func TestMITKpasswdAnswersUDPAndTCP(t *testing.T) {
	r := lab.ForTest(t, lab.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, network := range []string{"udp", "tcp"} {
		if err := lab.ProbeKpasswd(ctx, network, r.KpasswdAddr); err != nil {
			t.Errorf("MIT kpasswd over %s: %v", network, err)
		}
	}
}

// Two realms run side by side (both kdc's write /run/kdc.pid as root);
// closing one leaves the other working, and Close leaves no process of
// its own, the kdc's forked worker included.
func TestHeimdalParallelRealmsAndClose(t *testing.T) {
	if miss := lab.MissingFor(lab.Heimdal); len(miss) > 0 {
		heimdalForTest(t, "") // skips, or fails under CI
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	type started struct {
		r   *lab.Realm
		err error
	}
	ch := make(chan started, 2)
	for _, name := range []string{"ONE.TEST", "TWO.TEST"} {
		go func() {
			r, err := lab.Start(ctx, lab.Options{Kind: lab.Heimdal, Realm: name, Logf: t.Logf})
			ch <- started{r, err}
		}()
	}
	var realms []*lab.Realm
	for range 2 {
		s := <-ch
		if s.err != nil {
			t.Fatal(s.err)
		}
		t.Cleanup(func() { s.r.Close() })
		realms = append(realms, s.r)
	}
	one, two := realms[0], realms[1]
	for _, r := range realms {
		if out, err := run(t, r, "", "kinit", "-k", "-t", r.AdminKeytab, r.AdminPrincipal); err != nil {
			t.Fatalf("%s: kinit: %v\n%s", r.Name, err, out)
		}
	}

	if _, err := one.StartKDC(ctx, lab.KDCOptions{}); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, k := range one.KDCList() {
		members := groupPIDs(k.PID())
		if len(members) < 2 {
			t.Fatalf("KDC %s group %d has %v, want the kdc and its worker", k.Addr, k.PID(), members)
		}
		pids = append(pids, members...)
	}
	pids = append(pids, one.PIDs()...)
	if err := one.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if !gone(pid) {
			t.Errorf("pid %d of realm %s still runs after Close", pid, one.Name)
		}
	}
	if _, err := os.Stat(one.Dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s not removed: %v", one.Dir, err)
	}

	if out, err := run(t, two, "", "kinit", "-k", "-t", two.AdminKeytab, two.AdminPrincipal); err != nil {
		t.Fatalf("%s after %s closed: kinit: %v\n%s", two.Name, one.Name, err, out)
	}
	if err := lab.ProbeKpasswd(ctx, "udp", two.KpasswdAddr); err != nil {
		t.Fatalf("%s after %s closed: kpasswdd: %v", two.Name, one.Name, err)
	}
}

// A second Heimdal KDC with a clock shifted by libfaketime, as the
// clock-check tests need; it logs to a file of its own.
func TestHeimdalFakeTimeKDC(t *testing.T) {
	r := heimdalForTest(t, "")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	k, err := r.StartKDC(ctx, lab.KDCOptions{FakeTime: "-300s"})
	if err != nil {
		t.Fatal(err)
	}
	if d := k.Offset + 300*time.Second; d < -3*time.Second || d > 3*time.Second {
		t.Fatalf("faked KDC offset %v, want about -5m", k.Offset)
	}
	if k.Log == r.KDCLog() {
		t.Fatalf("second KDC logs to the primary's %s", k.Log)
	}
	conf := filepath.Join(r.Dir, "faked.conf")
	if err := r.WriteKrb5Conf(conf, k.Addr); err != nil {
		t.Fatal(err)
	}
	// MIT's kinit corrects for a KDC clock within clockskew (5 min).
	if out, err := runConf(t, r, conf, "", "kinit", "-k", "-t", r.AdminKeytab, r.AdminPrincipal); err != nil {
		t.Fatalf("kinit via the faked KDC: %v\n%s", err, out)
	}
	log, err := os.ReadFile(k.Log)
	if err != nil || !strings.Contains(string(log), "AS-REQ "+r.AdminPrincipal) {
		t.Fatalf("faked KDC log %s lacks the AS-REQ (%v)", k.Log, err)
	}
}

func TestForTestMissingHeimdal(t *testing.T) {
	t.Setenv(lab.HeimdalDirEnv, filepath.Join(t.TempDir(), "no-heimdal"))
	miss := lab.MissingFor(lab.Heimdal)
	if !slices.Contains(miss, "heimdal kdc") || !slices.Contains(miss, "heimdal kpasswdd") {
		t.Fatalf("MissingFor(Heimdal) = %v, want the kdc and kpasswdd listed", miss)
	}
	if !strings.Contains(lab.InstallCommandFor(lab.Heimdal), "make deps") {
		t.Fatalf("InstallCommandFor(Heimdal) = %q", lab.InstallCommandFor(lab.Heimdal))
	}
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		f := forTestWithout(t, lab.Heimdal)
		msg := f.skipped + f.failed
		if (ci == "true") != (f.failed != "") || !strings.Contains(msg, lab.InstallCommandFor(lab.Heimdal)) {
			t.Errorf("CI=%q: skipped=%q failed=%q, want a %s with the install command", ci, f.skipped, f.failed,
				map[bool]string{true: "failure", false: "skip"}[ci == "true"])
		}
	}
	if _, err := lab.Start(t.Context(), lab.Options{Kind: lab.Heimdal}); err == nil || !strings.Contains(err.Error(), lab.HeimdalInstallCommand) {
		t.Errorf("Start without Heimdal: %v, want the install command", err)
	}
}

// A real kpasswd client (MIT's, which falls back to UDP) changes a
// password through the realm's kpasswdd: the kvno rises by one and, as
// Heimdal keeps key history, the exported keytab holds both kvnos.
func TestHeimdalKpasswdChangesPassword(t *testing.T) {
	r := heimdalForTest(t, "")
	ctx := t.Context()
	p := "carol@" + r.Name
	if err := r.AddPrincipal(ctx, p, "Old-Pass-1"); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, r, "Old-Pass-1\nNew-Pass-2\nNew-Pass-2\n", "kpasswd", p); err != nil {
		t.Fatalf("MIT kpasswd against Heimdal's kpasswdd: %v\n%s", err, out)
	}
	if v, err := r.KVNO(ctx, p); err != nil || v != 2 {
		t.Fatalf("kvno after kpasswd: %d, %v; want 2", v, err)
	}
	kt := filepath.Join(r.Dir, "carol.keytab")
	if err := r.ExportKeytab(ctx, p, kt); err != nil {
		t.Fatal(err)
	}
	if got := keytabKVNOs(t, r, kt, p); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("keytab after kpasswd holds kvnos %v, want [1 2]", got)
	}
	if out, err := run(t, r, "New-Pass-2\n", "kinit", p); err != nil {
		t.Fatalf("kinit with the new password: %v\n%s", err, out)
	}
	if log, err := os.ReadFile(filepath.Join(r.Dir, "kpasswdd.log")); err != nil || !strings.Contains(string(log), "Changing password for "+p) {
		t.Errorf("kpasswdd.log lacks the change (%v)", err)
	}
}
