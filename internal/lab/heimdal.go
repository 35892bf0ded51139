package lab

// A Heimdal realm runs Heimdal 7.8's kdc and kpasswdd from Debian's
// packages, unpacked (never installed: they conflict with MIT's) into
// .cache/heimdal by `make deps-heimdal`. The binaries have no RPATH, so
// every one runs with LD_LIBRARY_PATH pointing at the unpacked libraries.
//
// Differences from an MIT realm that tests see:
//   - kpasswdd answers on UDP only (no TCP listener), and a password it
//     changes keeps the old keys: ExportKeytab then writes the new and the
//     previous kvno. SetPassword keeps them too (cpw --keepold), as
//     Heimdal's own kpasswdd does.
//   - No admin server runs: Heimdal's kadmind speaks Heimdal's kadmin
//     protocol, not MIT's, so krbops' MIT kadmin backend could not use it,
//     and it binds every interface (it has no --addresses). KadminAddr is
//     empty and krb5.conf names no admin_server.
//   - The KDC writes each log line twice, start-up lines before the fork
//     included: Heimdal 7.8's kdc opens its log destination twice, with
//     [logging] kdc as with [kdc] logging, so a production one does too.
//   - Run as root, kdc and kpasswdd write /run/kdc.pid and
//     /run/kpasswdd.pid whatever their flags (as another user they
//     cannot, and carry on). Parallel realms overwrite each other's file,
//     the first to exit cleanly removes it, and a killed one leaves it
//     behind; the lab never reads them, so realms do not disturb each
//     other (TestHeimdalParallelRealmsAndClose).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/krbops/krbops/internal/readcap"
	"github.com/krbops/krbops/internal/spawn"
)

// HeimdalDirEnv names the environment variable that points the lab at an
// unpacked Heimdal tree instead of the module's .cache/heimdal.
const HeimdalDirEnv = "KRBOPS_HEIMDAL_DIR"

// HeimdalInstallCommand unpacks Heimdal where HeimdalDir looks; run it as
// root from the repository's root.
const HeimdalInstallCommand = "make deps-heimdal"

// The programs a Heimdal realm runs, relative to HeimdalDir.
const (
	heimdalKDC      = "usr/lib/heimdal-servers/kdc"
	heimdalKpasswdd = "usr/lib/heimdal-servers/kpasswdd"
	heimdalKstash   = "usr/sbin/kstash"
	heimdalKadmin   = "usr/bin/kadmin.heimdal"
)

// heimdalInstall is an unpacked Heimdal: its root and the directory of
// its shared libraries.
type heimdalInstall struct {
	root, libDir string
}

// HeimdalDir is where the lab looks for Heimdal: $KRBOPS_HEIMDAL_DIR, else
// .cache/heimdal in the krbops module's root, found from the working
// directory upwards (tests run in package directories, `make demo` in the
// root). It is "" when neither is set or found.
func HeimdalDir() string {
	if d := os.Getenv(HeimdalDirEnv); d != "" {
		return d
	}
	if root := moduleRoot(); root != "" {
		return filepath.Join(root, ".cache", "heimdal")
	}
	return ""
}

var krbopsModule = regexp.MustCompile(`(?m)^module\s+github\.com/krbops/krbops\s*$`)

// moduleRoot is the nearest directory at or above the working directory
// whose go.mod declares the krbops module, or "".
func moduleRoot() string {
	d, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if b, err := readcap.ReadFile(filepath.Join(d, "go.mod"), 64<<10); err == nil && krbopsModule.Match(b) {
			return d
		}
		up := filepath.Dir(d)
		if up == d {
			return ""
		}
		d = up
	}
}

// findHeimdal locates the unpacked Heimdal and lists what is missing.
func findHeimdal() (heimdalInstall, []string) {
	h := heimdalInstall{root: HeimdalDir()}
	var miss []string
	for _, rel := range []string{heimdalKDC, heimdalKpasswdd, heimdalKstash, heimdalKadmin} {
		if h.root == "" || !isExecutable(filepath.Join(h.root, rel)) {
			miss = append(miss, "heimdal "+filepath.Base(rel))
		}
	}
	if h.root != "" {
		if libs, _ := filepath.Glob(filepath.Join(h.root, "usr", "lib", "*", "libkrb5.so.26")); len(libs) > 0 {
			h.libDir = filepath.Dir(libs[0])
		}
	}
	if h.libDir == "" {
		miss = append(miss, "heimdal libkrb5.so.26")
	}
	return h, miss
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func startHeimdal(ctx context.Context, opts Options) (_ *Realm, err error) {
	began := time.Now()
	h, miss := findHeimdal()
	if len(miss) > 0 {
		return nil, fmt.Errorf("lab: Heimdal realm needs %s (looked in %q); install with: sudo %s", strings.Join(miss, ", "), h.root, HeimdalInstallCommand)
	}
	r, err := newRealm(Heimdal, opts, DefaultRealm)
	if err != nil {
		return nil, err
	}
	defer r.closeOnError(&err)
	r.heimdal = h
	r.AdminPrincipal = "admin/admin@" + r.Name
	r.AdminKeytab = filepath.Join(r.Dir, "admin.keytab")
	kp, err := spawn.FreePort()
	if err != nil {
		return nil, err
	}
	r.KpasswdAddr = loopback(kp)

	if err := os.WriteFile(filepath.Join(r.Dir, "kadmind.acl"), []byte(r.AdminPrincipal+" all\n"), 0o600); err != nil {
		return nil, err
	}
	// Until the primary KDC runs, its port is a placeholder; kstash and
	// kadmin -l ignore it.
	if err := os.WriteFile(r.KDCProfile, []byte(r.heimdalConf(0, r.KDCLog())), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(r.Krb5Conf, []byte(r.krb5Conf([]string{"127.0.0.1:88"})), 0o644); err != nil {
		return nil, err
	}
	if _, err := r.runHeimdal(ctx, "", heimdalKstash, "--random-key", "--key-file="+filepath.Join(r.Dir, "m-key")); err != nil {
		return nil, err
	}
	if _, err := r.heimdalKadmin(ctx, "", "init", "--realm-max-ticket-life=unlimited", "--realm-max-renewable-life=unlimited", r.Name); err != nil {
		return nil, err
	}
	if err := r.AddPrincipal(ctx, r.AdminPrincipal, ""); err != nil {
		return nil, err
	}
	if err := r.ExportKeytab(ctx, r.AdminPrincipal, r.AdminKeytab); err != nil {
		return nil, err
	}
	r.logf("lab: Heimdal realm %s: database created in %s", r.Name, r.Dir)

	if _, err := r.startKDC(ctx, KDCOptions{}); err != nil {
		return nil, err
	}
	if err := r.WriteKrb5Conf(r.Krb5Conf, r.KDCs[0].Addr); err != nil {
		return nil, err
	}
	if err := r.startKpasswdd(ctx); err != nil {
		return nil, err
	}
	r.logf("lab: Heimdal realm %s up in %v: KDC %s, kpasswdd %s (UDP)",
		r.Name, time.Since(began).Round(time.Millisecond), r.KDCs[0].Addr, r.KpasswdAddr)
	return r, nil
}

// heimdalConf renders Heimdal's own configuration (KRB5_CONFIG of kdc,
// kpasswdd, kstash and kadmin -l) for a KDC on kdcPort logging to kdcLog.
// Heimdal ignores a one-line realm block, so it spans several lines.
func (r *Realm) heimdalConf(kdcPort int, kdcLog string) string {
	d := r.Dir
	return fmt.Sprintf(`# written by krbops internal/lab; throwaway Heimdal test realm
[libdefaults]
	default_realm = %[1]s
	dns_lookup_kdc = false
	dns_lookup_realm = false

[realms]
	%[1]s = {
		kdc = %[2]s
		kpasswd_server = %[3]s
	}

[kdc]
	database = {
		realm = %[1]s
		dbname = sqlite:%[4]s
		mkey_file = %[5]s
		acl_file = %[6]s
		log_file = %[7]s
	}
	num-kdc-processes = 1

[kadmin]
	default_keys = aes256-cts-hmac-sha1-96:pw-salt aes128-cts-hmac-sha1-96:pw-salt

[logging]
	kdc = FILE:%[8]s
	kpasswdd = FILE:%[9]s
	default = FILE:%[10]s
`, r.Name, loopback(kdcPort), r.KpasswdAddr,
		filepath.Join(d, "heimdal.db"), filepath.Join(d, "m-key"), filepath.Join(d, "kadmind.acl"),
		filepath.Join(d, "iprop.log"), // the binary log of changes, not a text log
		kdcLog, filepath.Join(d, "kpasswdd.log"), filepath.Join(d, "heimdal.log"))
}

// heimdalEnv is the environment of a Heimdal program reading profile.
func (r *Realm) heimdalEnv(profile string, extra ...string) []string {
	return labEnv(append([]string{"KRB5_CONFIG=" + profile, "LD_LIBRARY_PATH=" + r.heimdal.libDir}, extra...)...)
}

// heimdalKDCCommand is kdcCommand for a Heimdal realm. The kdc forks a
// worker into its process group; spawn's Stop signals the whole group.
func (r *Realm) heimdalKDCCommand(k *KDC, port int, extraEnv []string) (spawn.Command, error) {
	if err := os.WriteFile(k.Profile, []byte(r.heimdalConf(port, k.Log)), 0o600); err != nil {
		return spawn.Command{}, err
	}
	return spawn.Command{
		Path: filepath.Join(r.heimdal.root, heimdalKDC),
		Args: []string{"--config-file=" + k.Profile, "--addresses=127.0.0.1", fmt.Sprintf("--ports=%d", port)},
		Env:  r.heimdalEnv(k.Profile, extraEnv...), Dir: r.Dir, Log: k.Output,
	}, nil
}

// startKpasswdd runs kpasswdd on r.KpasswdAddr (UDP: it has no TCP
// listener) and waits until it answers.
func (r *Realm) startKpasswdd(ctx context.Context) error {
	out := filepath.Join(r.Dir, "kpasswdd.out")
	for attempt := 1; ; attempt++ {
		p, err := spawn.Start(spawn.Command{Name: "kpasswdd", Path: filepath.Join(r.heimdal.root, heimdalKpasswdd),
			Args: []string{"--config-file=" + r.KDCProfile, "--addresses=127.0.0.1",
				fmt.Sprintf("--port=%d", portOf(r.KpasswdAddr)), "--realm=" + r.Name},
			Env: r.heimdalEnv(r.KDCProfile), Dir: r.Dir, Log: out})
		if err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		r.track(p)
		wctx, cancel := context.WithTimeout(ctx, readyTimeout)
		err = p.WaitReady(wctx, func(ctx context.Context) error {
			pctx, pcancel := context.WithTimeout(ctx, 250*time.Millisecond)
			defer pcancel()
			return ProbeKpasswd(pctx, "udp", r.KpasswdAddr)
		})
		cancel()
		if err == nil {
			return nil
		}
		_ = p.Stop()
		if attempt < 3 && addrInUse(p, filepath.Join(r.Dir, "kpasswdd.log")) {
			r.logf("lab: kpasswdd port taken meanwhile, retrying")
			kp, err := spawn.FreePort()
			if err != nil {
				return err
			}
			r.KpasswdAddr = loopback(kp)
			if err := r.WriteKrb5Conf(r.Krb5Conf, r.KDCs[0].Addr); err != nil {
				return err
			}
			continue
		}
		return fmt.Errorf("lab: kpasswdd on %s (UDP): %w\n%s", r.KpasswdAddr, err, spawn.Tail(filepath.Join(r.Dir, "kpasswdd.log"), 1024))
	}
}

// runHeimdal runs the Heimdal program rel (relative to the unpacked tree)
// with this realm's Heimdal configuration.
func (r *Realm) runHeimdal(ctx context.Context, stdin, rel string, args ...string) (string, error) {
	stdout, _, err := runPath(ctx, r.heimdalEnv(r.KDCProfile), r.Dir, stdin, filepath.Join(r.heimdal.root, rel), filepath.Base(rel), args...)
	return stdout, err
}

// heimdalKadmin runs one `kadmin -l` command on the database. It exits
// non-zero when the command fails.
func (r *Realm) heimdalKadmin(ctx context.Context, stdin string, args ...string) (string, error) {
	return r.runHeimdal(ctx, stdin, heimdalKadmin, append([]string{"-l", "-c", r.KDCProfile}, args...)...)
}

// heimdalKadminPassword runs `kadmin -l` command args, which prompts for a
// password and its confirmation, and types password into both prompts.
// Heimdal reads a password from /dev/tty when the process has a
// controlling terminal (a developer's shell) and from stdin otherwise, so
// kadmin runs in a session of its own (setsid --wait) and never has one.
// The password is never in argv: kadmin has no password-file option, and
// its --password, fed as a command on stdin instead, mangles quotes and
// backslashes (its command-line splitter skips the character after an
// escaped one).
func (r *Realm) heimdalKadminPassword(ctx context.Context, password string, args ...string) error {
	if strings.ContainsAny(password, "\r\n") {
		return errors.New("password contains a newline")
	}
	setsid, err := lookBin("setsid")
	if err != nil {
		return err
	}
	kadmin := filepath.Join(r.heimdal.root, heimdalKadmin)
	argv := append([]string{"--wait", kadmin, "-l", "-c", r.KDCProfile}, args...)
	_, _, err = runPath(ctx, r.heimdalEnv(r.KDCProfile), r.Dir, password+"\n"+password+"\n", setsid, "kadmin -l", argv...)
	return err
}

// heimdalAddPrincipal creates name with the realm's default attributes
// (pre-authentication required) and aes256+aes128 keys from password, or
// random keys when it is empty.
func (r *Realm) heimdalAddPrincipal(ctx context.Context, name, password string) error {
	return r.heimdalSetKeys(ctx, "AddPrincipal", name, password, "add", "--use-defaults")
}

// heimdalSetKeys runs the kadmin -l command cmd (add, cpw) for principal:
// with --random-key when password is empty, else typing password into
// its prompts.
func (r *Realm) heimdalSetKeys(ctx context.Context, what, principal, password string, cmd ...string) error {
	if err := checkWord("principal", principal); err != nil {
		return err
	}
	if password == "" {
		_, err := r.heimdalKadmin(ctx, "", append(cmd, "--random-key", principal)...)
		return err
	}
	if err := r.heimdalKadminPassword(ctx, password, append(cmd, principal)...); err != nil {
		return fmt.Errorf("lab: %s %s: %w", what, principal, err)
	}
	return nil
}

// heimdalExportKeytab appends every key the database holds for principal,
// the kept old kvnos included, to the keytab at path.
func (r *Realm) heimdalExportKeytab(ctx context.Context, principal, path string) error {
	if err := checkWord("principal", principal); err != nil {
		return err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	_, err = r.heimdalKadmin(ctx, "", "ext_keytab", "--keytab=FILE:"+abs, principal)
	return err
}

// heimdalKvno matches `kadmin -l get`'s "                 Kvno: 3".
var heimdalKvno = regexp.MustCompile(`(?m)^\s*Kvno:\s*(\d+)\s*$`)

func (r *Realm) heimdalKVNO(ctx context.Context, principal string) (uint32, error) {
	if err := checkWord("principal", principal); err != nil {
		return 0, err
	}
	out, err := r.heimdalKadmin(ctx, "", "get", principal)
	if err != nil {
		return 0, err
	}
	return kvnoIn(out, heimdalKvno, principal)
}

// heimdalSetPassword changes principal's keys (kvno + 1), keeping the old
// ones as Heimdal's kpasswdd does.
func (r *Realm) heimdalSetPassword(ctx context.Context, principal, password string) error {
	return r.heimdalSetKeys(ctx, "SetPassword", principal, password, "cpw", "--keepold")
}
