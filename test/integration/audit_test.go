package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/lab"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/audit"
)

// udpRelay forwards Kerberos datagrams to kdc from the local address
// from (127.0.0.x): the KDC then logs that address as the client's, as
// it would log three hosts sharing one principal. It returns the relay's
// own address for a krb5.conf.
func udpRelay(t *testing.T, kdc, from string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	up, err := net.ResolveUDPAddr("udp", kdc)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, client, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req := slices.Clone(buf[:n])
			go func() {
				c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, up)
				if err != nil {
					return
				}
				defer c.Close()
				// A hang guard only: the KDC on loopback answers at once.
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				if _, err := c.Write(req); err != nil {
					return
				}
				rb := make([]byte, 65535)
				n, err := c.Read(rb)
				if err == nil {
					pc.WriteTo(rb[:n], client)
				}
			}()
		}
	}()
	return pc.LocalAddr().String()
}

// auditLab drives the traffic of the audit test against one MIT realm.
type auditLab struct {
	t   *testing.T
	r   *lab.Realm
	ctx context.Context
	dir string
}

func newAuditLab(t *testing.T, o lab.Options) *auditLab {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return &auditLab{t: t, r: lab.ForTest(t, o), ctx: ctx, dir: t.TempDir()}
}

// run runs an MIT tool against the realm, through krb5.conf conf when set.
func (a *auditLab) run(conf string, wantOK bool, name string, args ...string) {
	a.t.Helper()
	cmd := a.r.Command(a.ctx, name, args...)
	if conf != "" {
		cmd.Env = append(cmd.Env, "KRB5_CONFIG="+conf)
	}
	out, err := cmd.CombinedOutput()
	if (err == nil) != wantOK {
		a.t.Fatalf("%s %s: %v (want ok=%v)\n%s", name, strings.Join(args, " "), err, wantOK, out)
	}
}

// conf writes a krb5.conf whose only KDC is addr.
func (a *auditLab) conf(name, addr string) string {
	a.t.Helper()
	p := filepath.Join(a.dir, name+".conf")
	if err := a.r.WriteKrb5Conf(p, addr); err != nil {
		a.t.Fatal(err)
	}
	return p
}

// afterSecond waits until the wall clock is past t's second: logs and
// keytab timestamps have a resolution of one second, and the test needs
// a key change strictly after a keytab was written.
func afterSecond(t time.Time) {
	for time.Now().Unix() <= t.Unix() {
		time.Sleep(10 * time.Millisecond)
	}
}

// Issue 14, must show: on a lab realm whose traffic a script drives, every
// principal is classified with its evidence, from rotated and gzipped
// logs of two KDCs (and kadmind's) merged by time; garbage lines are
// counted, not fatal.
func TestAuditLabTraffic(t *testing.T) {
	a := newAuditLab(t, lab.Options{})
	r, ctx, realm := a.r, a.ctx, "@"+a.r.Name
	const (
		cli     = "audit-cli"
		svc     = "host/audit-svc.krbops.test"
		shared  = "audit-shared"
		never   = "audit-never"
		rotated = "audit-rotated"
	)
	inv := filepath.Join(a.dir, "keytabs")
	kt := map[string]string{
		cli: filepath.Join(inv, "east", "cli.keytab"), svc: filepath.Join(inv, "east", "svc.keytab"),
		shared: filepath.Join(inv, "west", "shared.keytab"), never: filepath.Join(inv, "never.keytab"),
		rotated: filepath.Join(inv, "west", "rotated-old.keytab"),
	}
	for _, d := range []string{"east", "west"} {
		if err := os.MkdirAll(filepath.Join(inv, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for p, path := range kt {
		if err := r.AddPrincipal(ctx, p, ""); err != nil {
			t.Fatal(err)
		}
		if err := r.ExportKeytab(ctx, p, path); err != nil {
			t.Fatal(err)
		}
	}
	keytabsWritten := time.Now()
	primary := r.KDCs[0]
	kdc2, err := r.StartKDC(ctx, lab.KDCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	viaKDC2 := a.conf("kdc2", kdc2.Addr)
	var hosts []string
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		hosts = append(hosts, a.conf("host-"+ip, udpRelay(t, primary.Addr, ip)))
	}
	staleHost := a.conf("stale", udpRelay(t, primary.Addr, "127.0.0.5"))

	// Phase 1, logged by the primary KDC into what becomes kdc.log.1.gz:
	// the client logs in and asks for the service; the shared principal
	// logs in from three hosts; the principal about to rotate logs in.
	a.run("", true, "kinit", "-k", "-t", kt[cli], cli)
	a.run("", true, "kvno", svc)
	for _, h := range hosts {
		a.run(h, true, "kinit", "-k", "-t", kt[shared], "-c", "FILE:"+filepath.Join(a.dir, "shared.cc"), shared)
	}
	a.run("", true, "kinit", "-k", "-t", kt[rotated], "-c", "FILE:"+filepath.Join(a.dir, "rot.cc"), rotated)

	// Rotate the primary's log as logrotate's copytruncate does, gzip
	// it, and slip three lines of garbage into it.
	live := primary.Log
	old, err := os.ReadFile(live)
	if err != nil {
		t.Fatal(err)
	}
	garbage := "\x00\x01\x02 binary noise\n" + strings.Repeat("z", 70<<10) + "\nDec 99 99:99:99 not a date\n"
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(append([]byte(garbage), old...))
	zw.Close()
	rotatedLog := live + ".1.gz"
	if err := os.WriteFile(rotatedLog, gz.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(live, 0); err != nil {
		t.Fatal(err)
	}

	// Phase 2: the client logs in at the second KDC; the principal's key
	// changes over kadmind (logged there), and a host that kept the old
	// keytab keeps trying.
	a.run(viaKDC2, true, "kinit", "-k", "-t", kt[cli], "-c", "FILE:"+filepath.Join(a.dir, "cli2.cc"), cli)
	afterSecond(keytabsWritten)
	a.run("", true, "kadmin", "-k", "-t", r.AdminKeytab, "-p", r.AdminPrincipal, "-q", "cpw -randkey "+rotated)
	for range 2 {
		a.run(staleHost, false, "kinit", "-k", "-t", kt[rotated], "-c", "FILE:"+filepath.Join(a.dir, "stale.cc"), rotated)
	}

	logs := []string{live, kdc2.Log, filepath.Join(r.Dir, "kadmind.log"), rotatedLog}
	check := audit.Check{Logs: logs, Dirs: []string{inv}, Since: 90 * 24 * time.Hour, MaxAge: 90 * 24 * time.Hour, MaxHosts: 2}
	rep := runbook.Run(ctx, runbook.Runbook{Command: "audit", Steps: check.Steps()}, runbook.Options{})

	find := func(rule, principal string) runbook.Finding {
		t.Helper()
		for _, f := range rep.Findings {
			if f.Rule == rule && f.Principal == principal+realm {
				return f
			}
		}
		t.Fatalf("no %s finding for %s; findings:\n%s", rule, principal, describeFindings(rep.Findings))
		return runbook.Finding{}
	}
	none := func(rule, principal string) {
		t.Helper()
		for _, f := range rep.Findings {
			if f.Rule == rule && f.Principal == principal+realm {
				t.Errorf("unexpected %s for %s: %s", rule, principal, f.Message)
			}
		}
	}

	// The client: two logins, one in the gzipped rotated log of the
	// primary, one in the second KDC's log.
	f := find("AU002", cli)
	if f.Evidence["as"] != int64(2) || f.Evidence["role"] != "client" {
		t.Errorf("client evidence %v, want 2 AS from two KDCs' logs", f.Evidence)
	}
	// The service: asked for, never logged in.
	f = find("AU003", svc)
	if f.Evidence["tgs"] != int64(1) || f.Evidence["as"] != int64(0) {
		t.Errorf("service evidence %v", f.Evidence)
	}
	// The shared principal: three addresses.
	f = find("AU005", shared)
	if got := fmt.Sprint(f.Evidence["addresses"]); got != "[127.0.0.2 127.0.0.3 127.0.0.4]" {
		t.Errorf("shared principal's addresses %s", got)
	}
	none("AU005", cli)
	// Never used: a keytab nobody's KDC saw.
	f = find("AU007", never)
	if f.File != kt[never] {
		t.Errorf("AU007 file %q", f.File)
	}
	for _, p := range []string{cli, svc, shared, rotated} {
		none("AU007", p)
	}
	// Rotated while an old keytab keeps trying: the refused logins after
	// the key change name the stale host, and the keytab on disk is stale.
	f = find("AU006", rotated)
	if f.Evidence["failed_since_key_change"] != int64(2) || fmt.Sprint(f.Evidence["failed_since_addresses"]) != "[127.0.0.5]" {
		t.Errorf("rotated evidence %v", f.Evidence)
	}
	find("AU002", rotated) // it did log in, before the change
	f = find("AU008", rotated)
	if f.File != kt[rotated] {
		t.Errorf("AU008 file %q", f.File)
	}
	for _, p := range []string{cli, svc, shared, never} {
		none("AU008", p)
		none("AU006", p)
	}
	// Garbage lines: counted (three), sampled, not fatal.
	var bad *runbook.Finding
	for i := range rep.Findings {
		if rep.Findings[i].Rule == "AU010" {
			bad = &rep.Findings[i]
		}
	}
	if bad == nil || bad.Evidence["bad"] != int64(3) {
		t.Fatalf("AU010 = %+v, want 3 bad lines", bad)
	}
	if res, _ := stepResult(rep, audit.StepLogs); res.Status != runbook.Pass {
		t.Errorf("audit.logs %s: %s", res.Status, res.Message)
	}

	// A hundred days later every principal is unused and every keytab due.
	check.Now = func() time.Time { return time.Now().Add(100 * 24 * time.Hour) }
	rep = runbook.Run(ctx, runbook.Runbook{Command: "audit", Steps: check.Steps()}, runbook.Options{})
	for _, p := range []string{cli, svc, shared, rotated} {
		find("AU001", p)
	}
	for _, p := range []string{cli, svc, shared, never, rotated} {
		f := find("AU009", p)
		if f.Evidence["keytab"] != kt[p] {
			t.Errorf("AU009 %s keytab %v", p, f.Evidence["keytab"])
		}
	}
	if c := find("AU009", shared).Evidence["cluster"]; c != "west" {
		t.Errorf("cluster of the shared keytab %v, want west", c)
	}
}

func stepResult(rep *runbook.Report, id string) (runbook.StepResult, error) {
	for _, s := range rep.Steps {
		if s.ID == id {
			return s, nil
		}
	}
	return runbook.StepResult{}, errors.New("no step " + id)
}

func describeFindings(fs []runbook.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  %s %s %s: %s\n", f.Rule, f.Principal, f.File, f.Message)
	}
	return b.String()
}

// The same classification from a Heimdal realm's logs: its kdc log (one
// request over several lines, each written twice) and kpasswdd's record
// of a password change made over kpasswd.
func TestAuditHeimdalLab(t *testing.T) {
	a := newAuditLab(t, lab.Options{Kind: lab.Heimdal})
	r, ctx, realm := a.r, a.ctx, "@"+a.r.Name
	const (
		cli     = "haudit-cli"
		svc     = "host/haudit-svc.krbops.test"
		rotated = "haudit-rotated"
	)
	kt := map[string]string{cli: filepath.Join(a.dir, "cli.keytab"), svc: filepath.Join(a.dir, "svc.keytab"), rotated: filepath.Join(a.dir, "rotated.keytab")}
	for p, path := range kt {
		pw := ""
		if p == rotated {
			pw = "Old-pass-1x"
		}
		if err := r.AddPrincipal(ctx, p, pw); err != nil {
			t.Fatal(err)
		}
		if err := r.ExportKeytab(ctx, p, path); err != nil {
			t.Fatal(err)
		}
	}
	stale := a.conf("stale", udpRelay(t, r.KDCs[0].Addr, "127.0.0.6"))
	a.run("", true, "kinit", "-k", "-t", kt[cli], cli)
	a.run("", true, "kvno", svc)
	a.run("", true, "kinit", "-k", "-t", kt[rotated], "-c", "FILE:"+filepath.Join(a.dir, "rot.cc"), rotated)
	// A self change over kpasswd (MIT's client; Heimdal's kpasswdd logs it).
	cmd := r.Command(ctx, "kpasswd", rotated)
	cmd.Stdin = strings.NewReader("Old-pass-1x\nNew-pass-2y\nNew-pass-2y\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kpasswd: %v\n%s", err, out)
	}
	a.run(stale, false, "kinit", "-k", "-t", kt[rotated], "-c", "FILE:"+filepath.Join(a.dir, "stale.cc"), rotated)

	check := audit.Check{Logs: []string{r.KDCLog(), filepath.Join(r.Dir, "kpasswdd.log")}, Since: 90 * 24 * time.Hour, MaxHosts: 2}
	rep := runbook.Run(ctx, runbook.Runbook{Command: "audit", Steps: check.Steps()}, runbook.Options{})
	byRule := map[string]runbook.Finding{}
	for _, f := range rep.Findings {
		byRule[f.Rule+" "+f.Principal] = f
	}
	want := func(rule, principal string) runbook.Finding {
		t.Helper()
		f, ok := byRule[rule+" "+principal+realm]
		if !ok {
			t.Fatalf("no %s for %s; findings:\n%s", rule, principal, describeFindings(rep.Findings))
		}
		return f
	}
	if f := want("AU002", cli); f.Evidence["as"] != int64(1) {
		t.Errorf("client evidence %v: the doubled log lines counted twice?", f.Evidence)
	}
	if f := want("AU003", svc); f.Evidence["tgs"] != int64(1) {
		t.Errorf("service evidence %v", f.Evidence)
	}
	f := want("AU006", rotated)
	if fmt.Sprint(f.Evidence["failed_since_addresses"]) != "[127.0.0.6]" || f.Evidence["key_changes"] != int64(1) {
		t.Errorf("rotated evidence %v", f.Evidence)
	}
	if res, _ := stepResult(rep, audit.StepLogs); res.Evidence["bad"] != int64(0) {
		t.Errorf("a Heimdal log line not understood: %v", res.Evidence["samples"])
	}
}
