package lab_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/faultproxy"
	"github.com/krbops/krbops/internal/lab"
)

// kinitKeytab logs in as principal from kt with MIT kinit, in a ccache of
// its own so no cached ticket hides a refused key.
func kinitKeytab(t *testing.T, r *lab.Realm, kt, principal string) (string, error) {
	t.Helper()
	return runConf(t, r, r.Krb5Conf, "", "kinit", "-k", "-t", kt, principal)
}

func TestADRealm(t *testing.T) {
	r := lab.ForTest(t, lab.Options{Kind: lab.AD})
	ctx := t.Context()

	if r.Kind != lab.AD || r.Name != lab.DefaultADRealm || len(r.KDCs) != 1 || r.KpasswdAddr == "" {
		t.Fatalf("realm %s %q with %d KDCs, kpasswd %q", r.Kind, r.Name, len(r.KDCs), r.KpasswdAddr)
	}
	if r.AdminPrincipal != "Administrator@AD.TEST" || r.AdminPassword() == "" {
		t.Fatalf("admin %q (password set: %v)", r.AdminPrincipal, r.AdminPassword() != "")
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.KDCs[0].PID())); err == nil {
		for _, l := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				t.Logf("samba %s", strings.Join(strings.Fields(l), " "))
			}
		}
	}
	if out, err := kinitKeytab(t, r, r.AdminKeytab, r.AdminPrincipal); err != nil {
		t.Fatalf("kinit -k Administrator: %v\n%s", err, out)
	}
	if out, err := runConf(t, r, r.Krb5Conf, r.AdminPassword()+"\n", "kinit", r.AdminPrincipal); err != nil {
		t.Fatalf("kinit Administrator with AdminPassword: %v\n%s", err, out)
	}

	t.Run("user account keytab", func(t *testing.T) {
		const user = "svc-web"
		if err := r.AddPrincipal(ctx, user, ""); err != nil {
			t.Fatal(err)
		}
		if err := r.AddSPN(ctx, user, "HTTP/web.ad.test"); err != nil {
			t.Fatal(err)
		}
		kt := filepath.Join(t.TempDir(), "svc.keytab")
		if err := r.ExportKeytab(ctx, user+"@"+r.Name, kt); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, r, "", "klist", "-ke", kt)
		for _, e := range []string{"aes256-cts-hmac-sha1-96", "aes128-cts-hmac-sha1-96", "arcfour-hmac"} {
			if err != nil || !strings.Contains(out, e) {
				t.Fatalf("klist -ke: %v, want %s in:\n%s", err, e, out)
			}
		}
		if out, err := kinitKeytab(t, r, kt, user+"@"+r.Name); err != nil {
			t.Fatalf("kinit -k %s: %v\n%s", user, err, out)
		}
		// The SPN resolves to the account: a service ticket for it is
		// issued at the account's kvno.
		kvno, err := r.KVNO(ctx, "HTTP/web.ad.test@"+r.Name)
		if err != nil {
			t.Fatal(err)
		}
		if own, err := r.KVNO(ctx, user); err != nil || own != kvno {
			t.Fatalf("kvno of %s = %d (%v), of its SPN = %d", user, own, err, kvno)
		}
	})

	// A service keytab as adcli/msktutil write it: the account's keys
	// under its SPNs too (an acceptor that looks keys up by the ticket's
	// server name, as gokrb5 does, needs those; MIT's also tries every
	// entry), and MIT kvno -k verifies a ticket for the SPN with it.
	t.Run("service keytab", func(t *testing.T) {
		const user, spn = "svc-api", "HTTP/api.ad.test"
		if err := r.AddPrincipal(ctx, user, ""); err != nil {
			t.Fatal(err)
		}
		if err := r.AddSPN(ctx, user, spn); err != nil {
			t.Fatal(err)
		}
		svc := filepath.Join(t.TempDir(), "svc.keytab")
		if err := r.ExportServiceKeytab(ctx, user, svc); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, r, "", "klist", "-ke", svc)
		for _, want := range []string{user + "@AD.TEST (aes256-cts-hmac-sha1-96)", spn + "@AD.TEST (aes256-cts-hmac-sha1-96)", spn + "@AD.TEST (DEPRECATED:arcfour-hmac)"} {
			if err != nil || !strings.Contains(out, want) {
				t.Fatalf("klist -ke: %v, want %q in:\n%s", err, want, out)
			}
		}
		cc := "FILE:" + filepath.Join(t.TempDir(), "cc")
		if out, err := run(t, r, "", "kinit", "-k", "-t", svc, "-c", cc, user); err != nil {
			t.Fatalf("kinit -k %s from the service keytab: %v\n%s", user, err, out)
		}
		if out, err := run(t, r, "", "kvno", "-c", cc, "-k", svc, spn); err != nil || !strings.Contains(out, "keytab entry valid") {
			t.Fatalf("kvno -k with the service keytab: %v\n%s", err, out)
		}
	})

	t.Run("computer account keytab", func(t *testing.T) {
		p, err := r.AddComputer(ctx, "HOST1")
		if err != nil || p != "HOST1$@AD.TEST" {
			t.Fatalf("AddComputer = %q, %v", p, err)
		}
		kt := filepath.Join(t.TempDir(), "host1.keytab")
		if err := r.ExportKeytab(ctx, p, kt); err != nil {
			t.Fatal(err)
		}
		if out, err := kinitKeytab(t, r, kt, p); err != nil {
			t.Fatalf("kinit -k %s: %v\n%s", p, err, out)
		}
		// As after a domain join, tickets for host/host1.<domain> are
		// issued in the computer account's keys.
		cc := "FILE:" + filepath.Join(t.TempDir(), "cc")
		if out, err := run(t, r, "", "kinit", "-k", "-t", kt, "-c", cc, p); err != nil {
			t.Fatalf("kinit -k %s: %v\n%s", p, err, out)
		}
		want, err := r.KVNO(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := run(t, r, "", "kvno", "-c", cc, "host/host1.ad.test@"+r.Name); err != nil || !strings.Contains(out, fmt.Sprintf("kvno = %d", want)) {
			t.Fatalf("kvno host/host1.ad.test: %v, want kvno %d:\n%s", err, want, out)
		}
	})

	t.Run("set password raises kvno by one", func(t *testing.T) {
		const user = "svc-rot"
		if err := r.AddPrincipal(ctx, user, ""); err != nil {
			t.Fatal(err)
		}
		old := filepath.Join(t.TempDir(), "old.keytab")
		if err := r.ExportKeytab(ctx, user, old); err != nil {
			t.Fatal(err)
		}
		before, err := r.KVNO(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.SetPassword(ctx, user, ""); err != nil {
			t.Fatal(err)
		}
		after, err := r.KVNO(ctx, user)
		if err != nil || after != before+1 {
			t.Fatalf("kvno %d after SetPassword, was %d (%v)", after, before, err)
		}
		if out, err := kinitKeytab(t, r, old, user); err == nil {
			t.Fatalf("kinit with the keytab from before the change succeeded:\n%s", out)
		}
		cur := filepath.Join(t.TempDir(), "new.keytab")
		if err := r.ExportKeytab(ctx, user, cur); err != nil {
			t.Fatal(err)
		}
		if out, err := kinitKeytab(t, r, cur, user); err != nil {
			t.Fatalf("kinit with the new keytab: %v\n%s", err, out)
		}
	})

	// MIT kpasswd (1.20) tries TCP first and UDP only when no server takes
	// a TCP connection: pointed at a UDP-only relay it must get samba's
	// kpasswd answer over UDP, pointed at samba itself it talks TCP. Each
	// self change raises the kvno (relaxed policy: no minimum age, no
	// history).
	t.Run("kpasswd over UDP and TCP", func(t *testing.T) {
		const user = "svc-kp"
		pw := "Start-pw-1"
		if err := r.AddPrincipal(ctx, user, pw); err != nil {
			t.Fatal(err)
		}
		relay := faultproxy.ForTest(t, faultproxy.Options{Upstream: r.KpasswdAddr, Network: "udp"})
		udpConf := filepath.Join(t.TempDir(), "krb5-udp.conf")
		if err := r.WriteKrb5ConfWith(udpConf, lab.Krb5ConfOptions{KDCs: []string{r.KDCs[0].Addr}, KpasswdServer: relay.Addr()}); err != nil {
			t.Fatal(err)
		}
		for i, tc := range []struct{ conf, wire, addr string }{{udpConf, "dgram", relay.Addr()}, {r.Krb5Conf, "stream", r.KpasswdAddr}} {
			before, err := r.KVNO(ctx, user)
			if err != nil {
				t.Fatal(err)
			}
			next := pw + string(rune('a'+i))
			cmd := r.Command(ctx, "kpasswd", user)
			cmd.Env = append(cmd.Env, "KRB5_CONFIG="+tc.conf, "KRB5CCNAME=FILE:"+filepath.Join(t.TempDir(), "cc"), "KRB5_TRACE=/dev/stderr")
			cmd.Stdin = strings.NewReader(pw + "\n" + next + "\n" + next + "\n")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Received answer") || !strings.Contains(string(out), tc.wire+" "+tc.addr) {
				t.Fatalf("kpasswd: %v, want an answer over %s from %s:\n%s", err, tc.wire, tc.addr, out)
			}
			if after, err := r.KVNO(ctx, user); err != nil || after != before+1 {
				t.Fatalf("kvno %d after kpasswd over %s, was %d (%v)", after, tc.wire, before, err)
			}
			pw = next
		}
		if st := relay.Stats(); st.Delivered == 0 {
			t.Errorf("the UDP relay delivered no kpasswd reply: %+v", st)
		}
	})

	t.Run("kdc log has requests and audit lines", func(t *testing.T) {
		log, err := os.ReadFile(r.KDCLog())
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"AS-REQ SUCCESS", "svc-web@AD.TEST krbtgt/AD.TEST@AD.TEST", "Auth: [Kerberos KDC"} {
			if !strings.Contains(string(log), want) {
				t.Errorf("samba output has no %q", want)
			}
		}
	})

	// A second samba on the same domain database, its clock moved by
	// libfaketime: it knows the accounts created before and after it.
	t.Run("second KDC with fake time", func(t *testing.T) {
		k, err := r.StartKDC(ctx, lab.KDCOptions{FakeTime: "+420s"})
		if err != nil {
			t.Fatal(err)
		}
		if d := k.Offset - 420*time.Second; d < -2*time.Second || d > 2*time.Second {
			t.Fatalf("second KDC's clock off by %v, want 420s", k.Offset)
		}
		p, err := r.AddComputer(ctx, "HOST2")
		if err != nil {
			t.Fatal(err)
		}
		kt := filepath.Join(t.TempDir(), "host2.keytab")
		if err := r.ExportKeytab(ctx, p, kt); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(t.TempDir(), "krb5.conf")
		if err := r.WriteKrb5Conf(conf, k.Addr); err != nil {
			t.Fatal(err)
		}
		if out, err := runConf(t, r, conf, "", "kinit", "-k", "-t", kt, p); err != nil {
			t.Fatalf("kinit -k %s at the second KDC: %v\n%s", p, err, out)
		}
		if log, _ := os.ReadFile(k.Log); !strings.Contains(string(log), "AS-REQ SUCCESS") {
			t.Errorf("the second KDC's log %s has no AS-REQ line", k.Log)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		if err := r.AddPrincipal(ctx, "HTTP/x.ad.test", ""); err == nil {
			t.Error("AddPrincipal of an SPN: no error")
		}
		if err := r.AddPrincipal(ctx, "svc-web@OTHER.TEST", ""); err == nil {
			t.Error("AddPrincipal in another realm: no error")
		}
		if _, err := r.KVNO(ctx, "nobody"); err == nil {
			t.Error("KVNO of a missing account: no error")
		}
	})
}

// Two AD realms run side by side from one template (each on its own
// ports), one with AD's complexity rule kept; Close leaves no samba.
func TestADRealmsInParallelAndClose(t *testing.T) {
	var (
		mu   sync.Mutex
		pids []int
	)
	t.Run("group", func(t *testing.T) {
		for _, complexity := range []bool{false, true} {
			name := "relaxed"
			if complexity {
				name = "complexity"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				r := lab.ForTest(t, lab.Options{Kind: lab.AD, ADComplexity: complexity})
				mu.Lock()
				pids = append(pids, r.PIDs()...)
				mu.Unlock()
				if out, err := kinitKeytab(t, r, r.AdminKeytab, r.AdminPrincipal); err != nil {
					t.Fatalf("kinit -k Administrator: %v\n%s", err, out)
				}
				err := r.AddPrincipal(t.Context(), "weak", "password1")
				if complexity != (err != nil) {
					t.Fatalf("complexity %v: a password of lower-case letters and digits gave %v", complexity, err)
				}
				if err := r.AddPrincipal(t.Context(), "strong", ""); err != nil {
					t.Fatalf("a random password: %v", err)
				}
			})
		}
	})
	if len(pids) != 2 {
		t.Fatalf("samba pids %v, want one per realm", pids)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("samba pid %d still there after Close (kill 0: %v)", pid, err)
		}
	}
}
