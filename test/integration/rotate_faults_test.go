package integration

// Issue 10 §9: faults at the KDC side of the key change, on the real MIT
// kadmind behind internal/faultproxy. In each case krbops cannot know from
// the reply whether the change was applied; it must ask the KDC (the
// pending and the current keytab) before anything else, never send a
// second key change, and leave the principal able to authenticate with
// the keytab the store marks current or pending.

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/krbops/krbops/internal/faultproxy"
	"github.com/krbops/krbops/internal/lab"
	"github.com/krbops/krbops/rotate"
)

// proxiedConf writes a krb5.conf whose kpasswd_server is a fault proxy in
// front of the lab's kadmind, over TCP only ("tcp/host:port"): each case
// faults the one key-change exchange, and no transport fallback (whose
// own safety is in kpasswd_test.go) adds a second.
func (l *rotLab) proxiedConf(t *testing.T, name string) (*faultproxy.Proxy, string) {
	t.Helper()
	p := faultproxy.ForTest(t, faultproxy.Options{Upstream: l.r.KpasswdAddr, Logf: t.Logf})
	conf := filepath.Join(l.dir, name+".krb5.conf")
	if err := l.r.WriteKrb5ConfWith(conf, lab.Krb5ConfOptions{KDCs: []string{l.r.KDCs[0].Addr}, KpasswdServer: "tcp/" + p.Addr()}); err != nil {
		t.Fatal(err)
	}
	return p, conf
}

func TestRotateReplyLostOrReset(t *testing.T) {
	l := newRotLab(t)
	for _, tc := range []struct {
		name  string
		fault faultproxy.Fault
	}{
		{"reply-dropped", faultproxy.Fault{Kind: faultproxy.DropReplyClose}},
		{"reset-mid-reply", faultproxy.Fault{Kind: faultproxy.ResetMidReply, N: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "fault-" + tc.name
			kt := l.principal(t, name)
			p, conf := l.proxiedConf(t, name)
			// The proxy serves the preflight reachability check too: the
			// fault applies to the first kpasswd exchange only.
			p.Once(tc.fault, 1)
			rep, code, stderr := runKrbops(t, l.r, append(l.args(name, kt, "client", rotate.BackendKpasswd), "--krb5-config", conf)...)
			set, _ := rep.step("", rotate.StepSet)
			if code != 0 || !strings.Contains(set.Message, "applied the key change although") {
				t.Fatalf("exit %d, set.kdc %q; want the lost reply found out and the run complete\n%s", code, set.Message, stderr)
			}
			if s := p.Stats(); s.Forwarded != 1 {
				t.Errorf("%d key-change requests reached kadmind, want exactly 1 (%+v)", s.Forwarded, s)
			}
			l.checkRotatedClient(t, name, kt, 2)
		})
	}
}

// The request is held beyond krbops' --timeout and reaches kadmind only
// after krbops gave up: the run asks the KDC, finds the old key still in
// place, stops with exit 3 and sends nothing more. The change then lands;
// --resume finds the new key working and does not repeat it.
func TestRotateChangeLandsAfterTimeout(t *testing.T) {
	l := newRotLab(t)
	name := "fault-late"
	kt := l.principal(t, name)
	p, conf := l.proxiedConf(t, name)
	p.Once(faultproxy.Fault{Kind: faultproxy.Delay}, 1) // held until Release
	args := append(l.args(name, kt, "client", rotate.BackendKpasswd), "--krb5-config", conf, "--timeout", "2s")
	rep, code, stderr := runKrbops(t, l.r, args...)
	set, _ := rep.step("", rotate.StepSet)
	if code != 3 || set.Status != "error" || !strings.Contains(set.Message, "still holds kvno 2") {
		t.Fatalf("exit %d, set.kdc %s %q; want exit 3 with the old key found in place\n%s", code, set.Status, set.Message, stderr)
	}
	l.checkNoLockout(t, name, kt, "after the timeout")
	// The held request now reaches kadmind, long after krbops gave up.
	p.Release()
	if _, err := p.Wait(context.Background(), func(s faultproxy.Stats) bool { return s.Forwarded == 1 && s.Done >= 1 }); err != nil {
		t.Fatal(err)
	}
	resume := []string{"rotate", "--resume", "--principal", name, "--secret-store", l.store, "--ledger", l.ledger,
		"--journal-dir", l.journal, "--krb5-config", conf, "--yes"}
	rep, code, stderr = runKrbops(t, l.r, resume...)
	set, _ = rep.step("", rotate.StepSet)
	if code != 0 || !strings.Contains(set.Message, "not repeated") {
		t.Fatalf("resume: exit %d, set.kdc %q\n%s", code, set.Message, stderr)
	}
	if s := p.Stats(); s.Forwarded != 1 {
		t.Errorf("%d key-change requests reached kadmind, want exactly 1 (%+v)", s.Forwarded, s)
	}
	l.checkRotatedClient(t, name, kt, 2)
}
