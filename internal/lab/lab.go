// Package lab runs a throwaway MIT Kerberos realm on loopback: the one
// harness behind krbops' Go tests ([ForTest]) and `make demo`
// (cmd/krbops-lab). There is no other copy; extend this one.
//
// [Start] creates a database with kdb5_util in a private directory, writes
// kdc.conf, kadm5.acl and krb5.conf there, and runs krb5kdc and kadmind in
// the foreground on free loopback ports. Every MIT tool the lab spawns gets
// KRB5_CONFIG and KRB5_KDC_PROFILE pointing into that directory, so the
// host's /etc/krb5.conf and /etc/krb5kdc are never read or written.
//
// [Realm.StartKDC] adds more KDCs for the same database, optionally with a
// clock shifted by libfaketime; [Realm.DownAddr] gives an address where no
// KDC answers; [Realm.WriteKrb5Conf] writes a krb5.conf listing any of them
// in any order.
//
// Options.Kind = Heimdal runs Heimdal's kdc and kpasswdd instead (see
// heimdal.go): the same Realm fields, KDCs and StartKDC, with the binaries
// `make deps-heimdal` unpacked into .cache/heimdal. Options.Kind = AD runs
// a Samba AD domain controller started from a once-provisioned template
// (see ad.go and ad_template.go).
//
// Daemons run in their own process group with a parent-death signal
// (Linux), so even a test binary that panics or is killed leaves no KDC
// behind; [Realm.Close] stops them with SIGTERM, then SIGKILL.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/krbops/krbops/internal/spawn"
)

// DefaultRealm is the realm name when Options.Realm is empty.
const DefaultRealm = "KRBOPS.TEST"

// readyTimeout bounds how long a daemon may take to answer after it starts.
const readyTimeout = 15 * time.Second

// Options configure Start.
type Options struct {
	// Kind is the KDC implementation: MIT (the default), Heimdal or AD.
	Kind Kind
	// Realm is the realm name; DefaultRealm when empty (AD: DefaultADRealm).
	Realm string
	// Dir holds the database, configuration, logs and keytabs. When empty a
	// temporary directory is created and Close removes it.
	Dir string
	// Logf, when set, receives the harness's progress messages.
	Logf func(format string, a ...any)
	// ADComplexity keeps AD's password complexity rule (upper, lower,
	// digit, symbol) on in an AD realm; by default the lab relaxes it.
	ADComplexity bool
}

// KDCOptions configure one extra KDC.
type KDCOptions struct {
	// FakeTime shifts the KDC's clock with libfaketime (LD_PRELOAD), in
	// libfaketime's FAKETIME syntax: "+420s", "-10m", "+2h", "+1d". A
	// relative offset is verified after start-up: StartKDC fails unless the
	// KDC's clock really is off by that much.
	FakeTime string
}

// Realm is a running lab realm. Its fields are read-only for callers.
type Realm struct {
	Kind       Kind   // MIT, Heimdal or AD
	Name       string // realm name, e.g. "KRBOPS.TEST"
	Dir        string // everything lives here
	Krb5Conf   string // krb5.conf listing the primary KDC (KDCs[0])
	KDCProfile string // kdc.conf of the primary KDC, also used by kadmind and kadmin.local (Heimdal: its one configuration file; AD: the DC's smb.conf)
	CCache     string // "FILE:<Dir>/ccache", the default ccache of Env
	KDCs       []*KDC // started KDCs, primary first; see Realm.KDCList for concurrent use

	// AdminPrincipal ("admin/admin@REALM") may do anything over kadmind
	// (kadm5.acl grants "*/admin@REALM *"); its keys are in AdminKeytab.
	// On AD it is "Administrator@REALM" (password: AdminPassword).
	AdminPrincipal string
	AdminKeytab    string
	KadminAddr     string // kadmind, TCP; empty on Heimdal and AD (no MIT-protocol admin server)
	KpasswdAddr    string // kpasswd, UDP and TCP (Heimdal: UDP only)

	logf      func(string, ...any)
	heimdal   heimdalInstall // the unpacked Heimdal a Heimdal realm runs
	ownDir    bool
	mu        sync.Mutex
	procs     []*spawn.Process
	kadmind   *spawn.Process
	closed    bool
	closeOnce sync.Once
	closeErr  error
	ad        *adRealm // AD realms only
}

// KDC is one running krb5kdc of a Realm.
type KDC struct {
	Addr     string        // 127.0.0.1:port, UDP and TCP
	FakeTime string        // FAKETIME given to libfaketime, "" for the real clock
	Offset   time.Duration // the KDC's clock minus ours, measured at start-up
	Log      string        // this KDC's own log file (AS_REQ/TGS_REQ lines)
	Profile  string        // its kdc.conf
	Output   string        // its stdout/stderr

	p       *spawn.Process
	kpasswd string // AD: the kpasswd address of this KDC's samba
}

// PID is the krb5kdc process id.
func (k *KDC) PID() int { return k.p.PID() }

// Running reports whether the krb5kdc process has not exited.
func (k *KDC) Running() bool { return !k.p.Exited() }

// Stop stops this KDC (spawn.Process.Stop: SIGTERM, then SIGKILL); its
// address then refuses requests. Close stops it anyway; calling both is
// fine.
func (k *KDC) Stop() error { return k.p.Stop() }

// Start creates and starts a realm: database, primary KDC, kadmind (with
// kpasswd) and an admin principal with a keytab. It returns once every
// daemon answers. ctx bounds start-up only; the daemons run until Close.
func Start(ctx context.Context, opts Options) (*Realm, error) {
	switch opts.Kind {
	case "", MIT:
		return startMIT(ctx, opts)
	case Heimdal:
		return startHeimdal(ctx, opts)
	case AD:
		return startAD(ctx, opts)
	}
	return nil, fmt.Errorf("lab: unknown KDC kind %q (want %s)", opts.Kind, kindList())
}

func startMIT(ctx context.Context, opts Options) (_ *Realm, err error) {
	began := time.Now()
	for _, b := range []string{"kdb5_util", "kadmin.local", "krb5kdc", "kadmind"} {
		if _, err := lookBin(b); err != nil {
			return nil, err
		}
	}
	r, err := newRealm(MIT, opts, DefaultRealm)
	if err != nil {
		return nil, err
	}
	defer r.closeOnError(&err)

	r.AdminPrincipal = "admin/admin@" + r.Name
	r.AdminKeytab = filepath.Join(r.Dir, "admin.keytab")
	if err := r.pickAdminPorts(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "kadm5.acl"), []byte("*/admin@"+r.Name+" *\n"), 0o600); err != nil {
		return nil, err
	}
	// The primary KDC's port is only known once it runs; until then the
	// profile carries a placeholder (kdb5_util and kadmin.local ignore it).
	if err := os.WriteFile(r.KDCProfile, []byte(r.kdcConf(0, filepath.Join(r.Dir, "kdc.log"))), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(r.Krb5Conf, []byte(r.krb5Conf([]string{"127.0.0.1:88"})), 0o644); err != nil {
		return nil, err
	}

	master := make([]byte, 16)
	if _, err := rand.Read(master); err != nil {
		return nil, err
	}
	args := []string{"-r", r.Name, "create", "-s", "-P", hex.EncodeToString(master), "-W"}
	if _, _, err := runTool(ctx, r.env(r.KDCProfile), r.Dir, "", "kdb5_util", args...); err != nil {
		return nil, err
	}
	if err := r.AddPrincipal(ctx, r.AdminPrincipal, ""); err != nil {
		return nil, err
	}
	if err := r.KeytabWith(ctx, r.AdminPrincipal, r.AdminKeytab, KeytabOptions{}); err != nil {
		return nil, err
	}
	r.logf("lab: realm %s: database created in %s", r.Name, r.Dir)

	if _, err := r.startKDC(ctx, KDCOptions{}); err != nil {
		return nil, err
	}
	if err := r.WriteKrb5Conf(r.Krb5Conf, r.KDCs[0].Addr); err != nil {
		return nil, err
	}
	if err := r.startKadmind(ctx); err != nil {
		return nil, err
	}
	r.logf("lab: realm %s up in %v: KDC %s, kadmind %s, kpasswd %s",
		r.Name, time.Since(began).Round(time.Millisecond), r.KDCs[0].Addr, r.KadminAddr, r.KpasswdAddr)
	return r, nil
}

// newRealm checks the realm name and makes the realm's directory: opts.Dir,
// or a temporary one Close removes.
func newRealm(kind Kind, opts Options, defaultName string) (*Realm, error) {
	name := opts.Realm
	if name == "" {
		name = defaultName
	}
	if strings.ContainsAny(name, " \t\n{}=\"'@/") {
		return nil, fmt.Errorf("lab: bad realm name %q", name)
	}
	r := &Realm{Kind: kind, Name: name, logf: opts.Logf}
	if r.logf == nil {
		r.logf = func(string, ...any) {}
	}
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "krbops-lab-")
		if err != nil {
			return nil, err
		}
		r.Dir, r.ownDir = d, true
	} else {
		d, err := filepath.Abs(opts.Dir)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		r.Dir = d
	}
	r.Krb5Conf = filepath.Join(r.Dir, "krb5.conf")
	r.KDCProfile = filepath.Join(r.Dir, "kdc.conf")
	r.CCache = "FILE:" + filepath.Join(r.Dir, "ccache")
	return r, nil
}

// closeOnError closes a realm whose start-up failed (*err != nil), after
// logging the tail of its KDC log, which usually says why.
func (r *Realm) closeOnError(err *error) {
	if *err == nil {
		return
	}
	if out := spawn.Tail(r.KDCLog(), 1024); out != "" {
		r.logf("lab: %s:\n%s", filepath.Base(r.KDCLog()), out)
	}
	r.Close()
}

func (r *Realm) pickAdminPorts() error {
	ka, err := spawn.FreePort()
	if err != nil {
		return err
	}
	kp, err := spawn.FreePort()
	if err != nil {
		return err
	}
	r.KadminAddr, r.KpasswdAddr = loopback(ka), loopback(kp)
	return nil
}

// env is the full environment for an MIT tool or daemon of this realm.
func (r *Realm) env(profile string, extra ...string) []string {
	e := r.Env()
	for i, kv := range e {
		if strings.HasPrefix(kv, "KRB5_KDC_PROFILE=") {
			e[i] = "KRB5_KDC_PROFILE=" + profile
		}
	}
	return labEnv(append(e, extra...)...)
}

// Env returns the variables that point MIT tools (kinit, klist, kvno, kadmin,
// ...) at this realm: KRB5_CONFIG, KRB5_KDC_PROFILE, KRB5CCNAME=FILE:<Dir>/ccache
// and a default keytab and replay-cache directory inside Dir. It holds only
// those; use append(os.Environ(), r.Env()...) for a child's cmd.Env (later
// entries win), or Command.
func (r *Realm) Env() []string {
	return []string{
		"KRB5_CONFIG=" + r.Krb5Conf,
		"KRB5_KDC_PROFILE=" + r.KDCProfile,
		"KRB5CCNAME=" + r.CCache,
		"KRB5_KTNAME=FILE:" + filepath.Join(r.Dir, "default.keytab"),
		"KRB5_CLIENT_KTNAME=FILE:" + filepath.Join(r.Dir, "client.keytab"),
		"KRB5RCACHEDIR=" + r.Dir,
	}
}

// Command returns an *exec.Cmd running the MIT tool name (looked up in
// $PATH and the sbin directories) against this realm: the caller's
// environment stripped of Kerberos variables plus Env, its own process
// group, killed with that group when ctx ends.
func (r *Realm) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	bin, err := lookBin(name)
	if err != nil {
		bin = name // Run reports the error
	}
	cmd := spawn.CommandContext(ctx, bin, args...)
	cmd.Env = r.env(r.KDCProfile)
	cmd.Dir = r.Dir
	return cmd
}

// KDCLog is the log file of the primary KDC ([logging] kdc = FILE:...).
// Each KDC has its own; see KDC.Log.
func (r *Realm) KDCLog() string { return filepath.Join(r.Dir, "kdc.log") }

// KDCList returns a snapshot of the started KDCs, safe to call while
// another goroutine runs StartKDC.
func (r *Realm) KDCList() []*KDC {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*KDC(nil), r.KDCs...)
}

// PIDs lists the process ids of every daemon this realm started.
func (r *Realm) PIDs() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var pids []int
	for _, p := range r.procs {
		pids = append(pids, p.PID())
	}
	return pids
}

// StartKDC starts one more krb5kdc for this realm's database on its own free
// port and log file (AD: one more KDC-only samba on the domain database,
// with its own smb.conf, ports and pid directory). With o.FakeTime its clock is shifted by libfaketime
// (LD_PRELOAD; the faketime wrapper does not daemonize cleanly) and the
// shift is measured before StartKDC returns.
func (r *Realm) StartKDC(ctx context.Context, o KDCOptions) (*KDC, error) {
	return r.startKDC(ctx, o)
}

func (r *Realm) startKDC(ctx context.Context, o KDCOptions) (*KDC, error) {
	var fakeEnv []string
	if o.FakeTime != "" {
		lib := LibFaketime()
		if lib == "" {
			return nil, fmt.Errorf("lab: FakeTime %q needs libfaketime (install: %s)", o.FakeTime, InstallCommand)
		}
		fakeEnv = []string{
			"LD_PRELOAD=" + lib,
			"FAKETIME=" + o.FakeTime,
			// Leave CLOCK_MONOTONIC alone: krb5kdc's event loop times out
			// with it, not with the wall clock Kerberos messages carry.
			"DONT_FAKE_MONOTONIC=1",
			"FAKETIME_DONT_FAKE_MONOTONIC=1",
			"FAKETIME_DONT_RESET=1",
		}
	}

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("lab: realm is closed")
	}
	n := len(r.KDCs) + 1
	r.mu.Unlock()
	base := "kdc"
	if n > 1 {
		base = "kdc-" + strconv.Itoa(n)
	}
	k := &KDC{
		FakeTime: o.FakeTime,
		Log:      filepath.Join(r.Dir, base+".log"),
		Profile:  filepath.Join(r.Dir, base+".conf"),
		Output:   filepath.Join(r.Dir, base+".out"),
	}

	for attempt := 1; ; attempt++ {
		port, err := spawn.FreePort()
		if err != nil {
			return nil, err
		}
		k.Addr = loopback(port)
		cmd, err := r.kdcCommand(k, n, port, fakeEnv)
		if err != nil {
			return nil, err
		}
		cmd.Name = base
		p, err := spawn.Start(cmd)
		if err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		r.track(p)
		k.p = p
		err = r.waitKDC(ctx, k)
		if err == nil && k.kpasswd != "" {
			err = r.waitKpasswd(ctx, k)
		}
		if err == nil {
			break
		}
		_ = p.Stop()
		if attempt < 3 && addrInUse(p, k.Log) {
			r.logf("lab: %s: port %d taken meanwhile, retrying", base, port)
			continue
		}
		return nil, err
	}

	if o.FakeTime != "" {
		_, off, err := KDCTime(ctx, k.Addr, r.Name)
		if err != nil {
			_ = k.p.Stop()
			return nil, fmt.Errorf("lab: %s: measuring its clock: %w", base, err)
		}
		k.Offset = off
		if want, ok := parseFakeTime(o.FakeTime); ok && absDur(off-want) > 3*time.Second {
			_ = k.p.Stop()
			return nil, fmt.Errorf("lab: %s: FAKETIME=%s did not take: its clock is off by %v, want %v", base, o.FakeTime, off.Round(time.Millisecond), want)
		}
	}

	r.mu.Lock()
	r.KDCs = append(r.KDCs, k)
	r.mu.Unlock()
	if o.FakeTime != "" {
		r.logf("lab: %s on %s (pid %d), FAKETIME=%s, clock offset %v", base, k.Addr, k.PID(), o.FakeTime, k.Offset.Round(time.Millisecond))
	} else {
		r.logf("lab: %s on %s (pid %d)", base, k.Addr, k.PID())
	}
	return k, nil
}

// kdcCommand writes k.Profile for KDC number n (1: the primary) of this
// realm listening on port and logging to k.Log, and returns the command
// that runs it in the foreground with extraEnv (libfaketime).
func (r *Realm) kdcCommand(k *KDC, n, port int, extraEnv []string) (spawn.Command, error) {
	switch r.Kind {
	case Heimdal:
		return r.heimdalKDCCommand(k, port, extraEnv)
	case AD:
		return r.sambaKDCCommand(k, n, port, extraEnv)
	}
	bin, err := lookBin("krb5kdc")
	if err != nil {
		return spawn.Command{}, err
	}
	if err := os.WriteFile(k.Profile, []byte(r.kdcConf(port, k.Log)), 0o600); err != nil {
		return spawn.Command{}, err
	}
	return spawn.Command{Path: bin, Args: []string{"-n", "-r", r.Name},
		Env: r.env(k.Profile, extraEnv...), Dir: r.Dir, Log: k.Output}, nil
}

func (r *Realm) track(p *spawn.Process) {
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
}

// waitKDC waits until k answers an AS-REQ over UDP and over TCP.
func (r *Realm) waitKDC(ctx context.Context, k *KDC) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err := k.p.WaitReady(ctx, func(ctx context.Context) error {
		if r.Kind == AD && sambaKDCFailed(k) {
			// samba keeps running without its KDC task: stop waiting.
			cancel()
			return errors.New("samba's KDC task failed")
		}
		pctx, pcancel := context.WithTimeout(ctx, 250*time.Millisecond)
		defer pcancel()
		if _, err := Probe(pctx, "udp", k.Addr, r.Name, ""); err != nil {
			return err
		}
		_, err := Probe(pctx, "tcp", k.Addr, r.Name, "")
		return err
	})
	if err != nil {
		return fmt.Errorf("lab: %s KDC on %s: %w\n%s", r.Kind, k.Addr, err, spawn.Tail(k.Log, 1024))
	}
	return nil
}

func (r *Realm) startKadmind(ctx context.Context) error {
	bin, err := lookBin("kadmind")
	if err != nil {
		return err
	}
	out := filepath.Join(r.Dir, "kadmind.out")
	for attempt := 1; ; attempt++ {
		p, err := spawn.Start(spawn.Command{Name: "kadmind", Path: bin, Args: []string{"-nofork", "-r", r.Name},
			Env: r.env(r.KDCProfile), Dir: r.Dir, Log: out})
		if err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		r.track(p)
		err = r.waitTCP(ctx, p, r.KadminAddr, r.KpasswdAddr)
		if err == nil {
			r.mu.Lock()
			r.kadmind = p
			r.mu.Unlock()
			return nil
		}
		_ = p.Stop()
		if attempt < 3 && addrInUse(p, filepath.Join(r.Dir, "kadmind.log")) {
			r.logf("lab: kadmind ports taken meanwhile, retrying")
			if err := r.pickAdminPorts(); err != nil {
				return err
			}
			if err := os.WriteFile(r.KDCProfile, []byte(r.kdcConf(portOf(r.KDCs[0].Addr), r.KDCs[0].Log)), 0o600); err != nil {
				return err
			}
			if err := r.WriteKrb5Conf(r.Krb5Conf, r.KDCs[0].Addr); err != nil {
				return err
			}
			continue
		}
		return err
	}
}

// waitTCP waits until p accepts TCP connections on every one of addrs.
func (r *Realm) waitTCP(ctx context.Context, p *spawn.Process, addrs ...string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err := p.WaitReady(ctx, func(ctx context.Context) error {
		for _, a := range addrs {
			var d net.Dialer
			dctx, dcancel := context.WithTimeout(ctx, 250*time.Millisecond)
			c, err := d.DialContext(dctx, "tcp", a)
			dcancel()
			if err != nil {
				return err
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("lab: %s on %s: %w\n%s", p.Name(), strings.Join(addrs, ", "), err, spawn.Tail(filepath.Join(r.Dir, p.Name()+".log"), 1024))
	}
	return nil
}

// addrInUse reports whether a daemon that failed to start says its port
// was taken, in its output or its log.
func addrInUse(p *spawn.Process, log string) bool {
	out := p.Tail(2048) + spawn.Tail(log, 2048)
	return strings.Contains(out, "in use") || strings.Contains(out, "ADDRESS_ALREADY_ASSOCIATED")
}

func portOf(addr string) int {
	_, ps, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(ps)
	return n
}

// parseFakeTime turns a relative FAKETIME ("+420s", "-2h", "+1.5d", "30")
// into a duration; ok is false for absolute or unknown forms.
func parseFakeTime(s string) (time.Duration, bool) {
	s = strings.TrimSpace(s)
	if s == "" || (s[0] != '+' && s[0] != '-') {
		return 0, false
	}
	unit := time.Second
	num := s
	switch s[len(s)-1] {
	case 's':
		num = s[:len(s)-1]
	case 'm':
		unit, num = time.Minute, s[:len(s)-1]
	case 'h':
		unit, num = time.Hour, s[:len(s)-1]
	case 'd':
		unit, num = 24*time.Hour, s[:len(s)-1]
	case 'y':
		unit, num = 365*24*time.Hour, s[:len(s)-1]
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return time.Duration(f * float64(unit)), true
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// Close stops every process the realm started (spawn.Process.Stop:
// SIGTERM, then SIGKILL after a few seconds) and removes Dir if Start
// created it. It is idempotent and safe to call on a partly started realm.
func (r *Realm) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		procs := append([]*spawn.Process(nil), r.procs...)
		r.mu.Unlock()
		var errs []error
		for i := len(procs) - 1; i >= 0; i-- {
			if err := procs[i].Stop(); err != nil {
				errs = append(errs, err)
			}
		}
		if r.ownDir && r.Dir != "" {
			if err := os.RemoveAll(r.Dir); err != nil {
				errs = append(errs, err)
			}
		}
		r.closeErr = errors.Join(errs...)
		r.logf("lab: realm %s closed", r.Name)
	})
	return r.closeErr
}
