package lab

// An AD realm is a Samba AD domain controller whose only service is the
// KDC (Samba's bundled Heimdal, with kpasswd on UDP and TCP), started from
// a copy of a provisioned template (ad_template.go) on free loopback ports:
//
//	Dir/samba/          the DC's tree (etc/smb.conf, private/sam.ldb, ...)
//	Dir/kdc.log         samba's log: KDC request and auth-audit lines
//	Dir/kdc.out         samba's stdout and stderr
//	Dir/krb5.conf       MIT-style, for kinit, kvno, kpasswd and gokrb5
//	Dir/admin.keytab    Administrator's keys
//
// samba runs as `samba -F -M single`: in the foreground, one process,
// logging at "log level = 1 kerberos:3 auth_audit:3" to its log file in
// the format of a real DC's log.samba: a "[date time, level] source" header
// line, then one "Kerberos: AS-REQ ..."/"TGS-REQ ..." line per request and
// one "Auth: ..." line per authentication — the lab's stand-in for a
// Windows DC's Security events 4768/4769. (`samba -i` would log to stdout,
// but without the timestamps a last-login check needs.) Its stdin is
// /dev/null; spawn's parent-death signal ends it with the test binary. It
// runs as the invoking user (root here; provisioning needs root).
//
// Accounts are changed with Samba's Python bindings (ad_samdb.go) so that
// no password is ever in argv; keytabs come from `samba-tool domain
// exportkeytab`. The password policy is relaxed (no complexity, history or
// age limits) unless Options.ADComplexity keeps AD's complexity rule.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/krbops/krbops/internal/spawn"
)

// ADInstallCommand installs what an AD realm needs on Debian 12
// (samba-vfs-modules: provisioning fails without acl_xattr.so).
const ADInstallCommand = "apt-get install -y --no-install-recommends samba samba-dsdb-modules samba-ad-provision samba-vfs-modules"

// adStartTimeout bounds ForTest's start of an AD realm: provisioning the
// template takes 8 s on a quiet machine and 30 s on a loaded one, and a
// test binary may first wait for another one's provisioning.
const adStartTimeout = 3 * time.Minute

// adRequired are the files an AD realm needs, by the package that has them.
var adRequired = []struct{ glob, what string }{
	{"/usr/sbin/samba", "samba"},
	{"/usr/bin/samba-tool", "samba-tool (samba-common-bin)"},
	{"/usr/lib/python3/dist-packages/samba/samdb.py", "python3-samba"},
	{"/usr/share/samba/setup/provision.ldif", "samba-ad-provision"},
	{"/usr/lib/*/samba/ldb/samba_dsdb.so", "samba-dsdb-modules"},
	{"/usr/lib/*/samba/vfs/acl_xattr.so", "samba-vfs-modules"},
}

// MissingAD reports what an AD realm needs and is not installed; print
// ADInstallCommand when it is not empty. An AD realm also needs the MIT
// client tools Missing checks (kinit, klist, kvno).
func MissingAD() []string {
	var miss []string
	for _, r := range adRequired {
		if m, _ := filepath.Glob(r.glob); len(m) == 0 {
			miss = append(miss, r.what)
		}
	}
	return miss
}

// adRealm is what an AD realm holds beyond Realm's common fields.
type adRealm struct {
	tree          string // the DC's directory, a copy of the template
	conf          string // its smb.conf
	adminPassword string
}

// adRealmName: the realm is also the DNS domain, and its dots-free form
// (at most 15 characters) the NetBIOS domain.
var adRealmName = regexp.MustCompile(`^[A-Z][A-Z0-9-]*(\.[A-Z][A-Z0-9-]*)+$`)

func adNetbiosDomain(realm string) string {
	d := strings.ReplaceAll(realm, ".", "")
	return d[:min(len(d), 15)]
}

func startAD(ctx context.Context, opts Options) (_ *Realm, err error) {
	began := time.Now()
	if miss := MissingAD(); len(miss) > 0 {
		return nil, fmt.Errorf("lab: an AD realm needs %s (install: %s)", strings.Join(miss, ", "), ADInstallCommand)
	}
	name := opts.Realm
	if name == "" {
		name = DefaultADRealm
	}
	if !adRealmName.MatchString(name) {
		return nil, fmt.Errorf("lab: bad AD realm name %q: want an upper-case DNS domain such as %s", name, DefaultADRealm)
	}
	r, err := newRealm(AD, opts, DefaultADRealm)
	if err != nil {
		return nil, err
	}
	defer r.closeOnError(&err)

	tmpl, err := adTemplateFor(ctx, name, r.logf)
	if err != nil {
		return nil, err
	}
	copied := time.Now()
	tree := filepath.Join(r.Dir, "samba")
	if err := copyTree(tmpl.dir, tree); err != nil {
		return nil, fmt.Errorf("lab: copying the AD template: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(tree, "log"), 0o700); err != nil {
		return nil, err
	}
	r.ad = &adRealm{tree: tree, conf: filepath.Join(tree, "etc", "smb.conf"), adminPassword: tmpl.adminPassword}
	r.KDCProfile = r.ad.conf
	r.AdminPrincipal = "Administrator@" + r.Name
	r.AdminKeytab = filepath.Join(r.Dir, "admin.keytab")
	if err := os.WriteFile(r.ad.conf, []byte(r.adSmbConf(0, 0, filepath.Join(tree, "run"), r.KDCLog())), 0o600); err != nil {
		return nil, err
	}
	if opts.ADComplexity {
		if err := r.sambaTool(ctx, "domain", "passwordsettings", "set", "--complexity=on"); err != nil {
			return nil, err
		}
	}
	r.logf("lab: realm %s: AD template copied in %v", r.Name, time.Since(copied).Round(time.Millisecond))

	k, err := r.startKDC(ctx, KDCOptions{})
	if err != nil {
		return nil, err
	}
	r.KpasswdAddr = k.kpasswd
	if err := r.WriteKrb5Conf(r.Krb5Conf, r.KDCs[0].Addr); err != nil {
		return nil, err
	}
	if err := r.adExportKeytab(ctx, r.AdminPrincipal, r.AdminKeytab); err != nil {
		return nil, err
	}
	r.logf("lab: realm %s (AD) up in %v: KDC %s, kpasswd %s, samba pid %d",
		r.Name, time.Since(began).Round(time.Millisecond), r.KDCs[0].Addr, r.KpasswdAddr, r.KDCs[0].PID())
	return r, nil
}

// adSmbConf renders the DC's smb.conf: the template's domain, every path
// inside this realm's tree, the given ports, pid directory and log file.
func (r *Realm) adSmbConf(kdcPort, kpasswdPort int, run, log string) string {
	d := r.ad.tree
	lines := []string{
		"netbios name = " + adNetbiosName,
		"workgroup = " + adNetbiosDomain(r.Name),
		"realm = " + r.Name,
		"server role = active directory domain controller",
		"private dir = " + filepath.Join(d, "private"),
		"lock directory = " + d,
		"state directory = " + filepath.Join(d, "state"),
		"cache directory = " + filepath.Join(d, "cache"),
		"binddns dir = " + filepath.Join(d, "bind-dns"),
		fmt.Sprintf("krb5 port = %d", kdcPort),
		fmt.Sprintf("kpasswd port = %d", kpasswdPort),
		"log level = 1 kerberos:3 auth_audit:3",
	}
	lines = append(lines, adServerOptions(d, run, log)...)
	return "# written by krbops internal/lab; throwaway AD test realm\n[global]\n\t" + strings.Join(lines, "\n\t") + "\n"
}

// sambaKDCCommand writes the smb.conf of KDC number n (1: the realm's
// own, etc/smb.conf; later ones etc/smb-<n>.conf with their own pid
// directory) for kdcPort and a free kpasswd port, and returns the command
// that runs samba with it. Every samba of a realm serves the same domain
// database, as a prefork DC's processes do.
func (r *Realm) sambaKDCCommand(k *KDC, n, kdcPort int, extraEnv []string) (spawn.Command, error) {
	bin, err := lookBin("samba")
	if err != nil {
		return spawn.Command{}, err
	}
	kpPort, err := spawn.FreePort()
	if err != nil {
		return spawn.Command{}, err
	}
	k.kpasswd = loopback(kpPort)
	run := filepath.Join(r.ad.tree, "run")
	k.Profile = r.ad.conf
	if n > 1 {
		k.Profile = filepath.Join(r.ad.tree, "etc", fmt.Sprintf("smb-%d.conf", n))
		run = filepath.Join(r.ad.tree, fmt.Sprintf("run-%d", n))
	}
	if err := os.MkdirAll(run, 0o700); err != nil {
		return spawn.Command{}, err
	}
	if err := os.WriteFile(k.Profile, []byte(r.adSmbConf(kdcPort, kpPort, run, k.Log)), 0o600); err != nil {
		return spawn.Command{}, err
	}
	return spawn.Command{Path: bin, Args: []string{"-F", "-M", "single", "-s", k.Profile},
		Env: labEnv(extraEnv...), Dir: r.ad.tree, Log: k.Output}, nil
}

// waitKpasswd waits until k's samba answers kpasswd requests over UDP and
// over TCP.
func (r *Realm) waitKpasswd(ctx context.Context, k *KDC) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err := k.p.WaitReady(ctx, func(ctx context.Context) error {
		pctx, pcancel := context.WithTimeout(ctx, 250*time.Millisecond)
		defer pcancel()
		if err := ProbeKpasswd(pctx, "udp", k.kpasswd); err != nil {
			return err
		}
		return ProbeKpasswd(pctx, "tcp", k.kpasswd)
	})
	if err != nil {
		return fmt.Errorf("lab: samba's kpasswd on %s: %w\n%s", k.kpasswd, err, spawn.Tail(k.Log, 1024))
	}
	return nil
}

// sambaKDCFailed reports whether samba logged that its KDC task could not
// start (a port taken): samba itself may keep running without it.
func sambaKDCFailed(k *KDC) bool {
	return strings.Contains(k.p.Tail(4096)+spawn.Tail(k.Log, 4096), "kdc failed to setup interfaces")
}

// sambaTool runs samba-tool against this realm's DC; args hold no secret.
func (r *Realm) sambaTool(ctx context.Context, args ...string) error {
	_, _, err := runTool(ctx, labEnv(), r.ad.tree, "", "samba-tool", append(args, "-s", r.ad.conf)...)
	return err
}

// adAccount turns a principal ("svc-web", "svc-web@AD.TEST",
// "HTTP/web.ad.test@AD.TEST") into its name without the realm, refusing
// another realm.
func (r *Realm) adAccount(principal string) (string, error) {
	name, realm := principal, ""
	if i := strings.LastIndexByte(principal, '@'); i >= 0 {
		name, realm = principal[:i], principal[i+1:]
	}
	if realm != "" && realm != r.Name {
		return "", fmt.Errorf("lab: %s is not in realm %s", principal, r.Name)
	}
	if name == "" || strings.ContainsFunc(name, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
		return "", fmt.Errorf("lab: bad AD account name %q", principal)
	}
	return name, nil
}

func (r *Realm) adAddPrincipal(ctx context.Context, name, password string) error {
	acct, err := r.adAccount(name)
	if err != nil {
		return err
	}
	switch {
	case strings.Contains(acct, "/"):
		return fmt.Errorf("lab: %s is a service principal name; on AD create a user account and give it the SPN with AddSPN", name)
	case strings.HasSuffix(acct, "$"):
		return fmt.Errorf("lab: %s is a computer account; on AD use AddComputer", name)
	}
	if password == "" {
		if password, err = randomADPassword(); err != nil {
			return err
		}
	}
	_, err = samdb(ctx, r.ad.conf, password, "user", acct)
	return err
}

// adAddComputer: a trailing "$" on name is dropped; the account gets the
// SPNs a domain join registers (HOST/HOST1, HOST/host1.<domain>) and a
// random password, which matters: a new computer account has no keys and
// exportkeytab would write nothing for it.
func (r *Realm) adAddComputer(ctx context.Context, name string) (string, error) {
	acct, err := r.adAccount(strings.TrimSuffix(name, "$"))
	if err != nil {
		return "", err
	}
	if strings.ContainsAny(acct, "/$") || len(acct) > 15 {
		return "", fmt.Errorf("lab: bad computer name %q: want a NetBIOS name such as HOST1", name)
	}
	pw, err := randomADPassword()
	if err != nil {
		return "", err
	}
	if _, err := samdb(ctx, r.ad.conf, pw, "computer", acct); err != nil {
		return "", err
	}
	return acct + "$@" + r.Name, nil
}

// adAddSPN: spn may carry the realm; account is a user or computer
// account ("svc-web", "HOST1$"). A keytab exported for an SPN holds only
// the rc4 key (Samba 4.17), so log in as the account and serve the SPN.
func (r *Realm) adAddSPN(ctx context.Context, account, spn string) error {
	acct, err := r.adAccount(account)
	if err != nil {
		return err
	}
	s, err := r.adAccount(spn)
	if err != nil {
		return err
	}
	if !strings.Contains(s, "/") {
		return fmt.Errorf("lab: AddSPN %s: %q is not a service principal name (service/host)", account, spn)
	}
	_, err = samdb(ctx, r.ad.conf, "", "spn", acct, s)
	return err
}

// AdminPassword is the AD realm's Administrator password (for an admin
// set-password as Administrator); "" on other kinds. Never log it.
func (r *Realm) AdminPassword() string {
	if r.ad == nil {
		return ""
	}
	return r.ad.adminPassword
}

func (r *Realm) adExportKeytab(ctx context.Context, principal, path string) error {
	acct, err := r.adAccount(principal)
	if err != nil {
		return err
	}
	if !filepath.IsAbs(path) {
		if path, err = filepath.Abs(path); err != nil {
			return err
		}
	}
	if err := r.sambaTool(ctx, "domain", "exportkeytab", path, "--principal="+acct+"@"+r.Name); err != nil {
		return err
	}
	// exportkeytab exits 0 and writes nothing for an account without keys.
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		return errors.Join(fmt.Errorf("lab: exportkeytab wrote no keys for %s", principal), err)
	}
	return nil
}

func (r *Realm) adKVNO(ctx context.Context, principal string) (uint32, error) {
	acct, err := r.adAccount(principal)
	if err != nil {
		return 0, err
	}
	out, err := samdb(ctx, r.ad.conf, "", "kvno", acct)
	if err != nil {
		return 0, err
	}
	return kvnoIn(out, adKVNOLine, principal)
}

var adKVNOLine = regexp.MustCompile(`^(\d+)$`)

func (r *Realm) adSetPassword(ctx context.Context, principal, password string) error {
	acct, err := r.adAccount(principal)
	if err != nil {
		return err
	}
	if password == "" {
		if password, err = randomADPassword(); err != nil {
			return err
		}
	}
	_, err = samdb(ctx, r.ad.conf, password, "setpassword", acct)
	return err
}
