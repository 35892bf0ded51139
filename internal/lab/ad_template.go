package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/internal/readcap"
)

// The AD template: `samba-tool domain provision` takes 8–30 s, so the lab
// provisions a domain once per machine, Samba version and realm name into
// a template directory and every realm starts from a copy of it (33 MB,
// well under a second). A provisioned tree holds absolute paths only in
// etc/smb.conf, and the lab writes its own smb.conf per copy, so a copy
// runs anywhere.
//
// The template lives in os.TempDir() as
// krbops-ad-<uid>-<samba version>-<realm>-v<adTemplateFormat>. Test binaries
// run in parallel (go test ./...), so a flock on "<template>.lock" makes
// exactly one of them provision while the others wait; the provisioning
// goes to "<template>.tmp-<pid>" and is renamed into place only when done,
// so a template that exists is complete. A test binary killed while
// provisioning leaves a .tmp- directory the next provisioner removes.
// A template directory not owned by the invoking user, or writable by
// others, is refused rather than used: it would decide every key in the
// realm.

// adTemplateFormat changes whenever what the template holds changes, so an
// old template is never reused by new code.
const adTemplateFormat = "1"

// adNetbiosName, adHostName: the DC's names in every AD realm of the lab.
const (
	adNetbiosName = "DC1"
	adHostName    = "dc1"
)

// adAdminPassFile holds the template's Administrator password (0600); the
// password is never in argv, so it is kept beside the database.
const adAdminPassFile = "adminpass"

// adTemplate is a provisioned, relaxed-policy domain to copy.
type adTemplate struct {
	dir           string
	realm         string
	adminPassword string
}

var (
	adTemplatesMu sync.Mutex
	adTemplates   = map[string]*adTemplate{} // by realm
)

// adTemplateFor returns the template for realm, provisioning it unless
// this process or an earlier one already did. A failure is not cached: the
// next realm tries again.
func adTemplateFor(ctx context.Context, realm string, logf func(string, ...any)) (*adTemplate, error) {
	adTemplatesMu.Lock()
	defer adTemplatesMu.Unlock()
	if t := adTemplates[realm]; t != nil {
		return t, nil
	}
	ver, err := sambaVersion(ctx)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("krbops-ad-%d-%s-%s-v%s", os.Getuid(), ver, strings.ToLower(realm), adTemplateFormat))
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()

	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		began := time.Now()
		if err := provisionADTemplate(ctx, dir, realm); err != nil {
			return nil, err
		}
		logf("lab: AD template %s provisioned in %v", dir, time.Since(began).Round(time.Millisecond))
	} else if err != nil {
		return nil, err
	}
	if err := durable.TrustDir(dir); err != nil {
		return nil, fmt.Errorf("lab: AD template: %w (remove it to provision a new one)", err)
	}
	pw, err := readcap.ReadFile(filepath.Join(dir, adAdminPassFile), 1024)
	if err != nil {
		return nil, fmt.Errorf("lab: AD template %s: %w (remove it to provision a new one)", dir, err)
	}
	t := &adTemplate{dir: dir, realm: realm, adminPassword: strings.TrimSpace(string(pw))}
	adTemplates[realm] = t
	return t, nil
}

// lockFile takes an exclusive flock on path, polling so ctx can end the
// wait; the returned func releases it. The kernel drops the lock when the
// holder dies, so a killed provisioner never blocks the next one.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := durable.OpenPrivateAppend(path)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	for {
		busy, err := durable.TryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lab: lock %s: %w", path, err)
		}
		if !busy {
			return func() { _ = durable.Unlock(f); f.Close() }, nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lab: waiting for %s (another test binary is provisioning the AD template): %w", path, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var sambaVersionRE = regexp.MustCompile(`Version\s+([0-9A-Za-z.+~-]+)`)

// sambaVersion is `samba --version`'s version, e.g. "4.17.12-Debian".
func sambaVersion(ctx context.Context) (string, error) {
	out, _, err := runTool(ctx, labEnv(), "", "", "samba", "--version")
	if err != nil {
		return "", err
	}
	m := sambaVersionRE.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("lab: samba --version: no version in %q", strings.TrimSpace(out))
	}
	return m[1], nil
}

// provisionADTemplate provisions realm's domain into dir: a DC whose only
// service is the KDC (with kpasswd), no DNS, an Administrator password only
// the template's adminpass file knows, and the lab's relaxed password
// policy.
func provisionADTemplate(ctx context.Context, dir, realm string) error {
	parent := filepath.Dir(dir)
	if old, _ := filepath.Glob(dir + ".tmp-*"); len(old) > 0 {
		for _, o := range old {
			_ = os.RemoveAll(o)
		}
	}
	tmp := fmt.Sprintf("%s.tmp-%d", dir, os.Getpid())
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(tmp)
		}
	}()
	domain, _, _ := strings.Cut(realm, ".")
	// No --adminpass: it would be in argv. Provisioning sets a random one,
	// replaced below through stdin.
	args := []string{"domain", "provision", "--targetdir=" + tmp,
		"--realm=" + realm, "--domain=" + domain, "--server-role=dc",
		"--dns-backend=NONE", "--host-name=" + adHostName, "--quiet"}
	for _, o := range adServerOptions(tmp, filepath.Join(tmp, "run"), filepath.Join(tmp, "log", "samba.log")) {
		args = append(args, "--option="+o)
	}
	if _, _, err := runTool(ctx, labEnv(), tmp, "", "samba-tool", args...); err != nil {
		return err
	}
	conf := filepath.Join(tmp, "etc", "smb.conf")
	// The lab's policy: no complexity, history, minimum or maximum age, so
	// a test can change a password as often as it likes (Options.ADComplexity
	// turns complexity back on per realm).
	if _, _, err := runTool(ctx, labEnv(), tmp, "", "samba-tool", "domain", "passwordsettings", "set", "-s", conf,
		"--complexity=off", "--history-length=0", "--min-pwd-age=0", "--max-pwd-age=0"); err != nil {
		return err
	}
	pw, err := randomADPassword()
	if err != nil {
		return err
	}
	if _, err := samdb(ctx, conf, pw, "setpassword", "Administrator"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, adAdminPassFile), []byte(pw+"\n"), 0o600); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	ok = true
	return durable.SyncDir(parent)
}

// adServerOptions are the smb.conf settings of a lab DC living in dir with
// its pid file and sockets in run and its log in log, for provisioning and
// (with ports) for each realm's own smb.conf. The log is never rotated
// (samba's default moves it aside at 1 MB): it is the realm's login
// record.
func adServerOptions(dir, run, log string) []string {
	return []string{
		"server services = kdc",
		"interfaces = 127.0.0.1",
		"bind interfaces only = yes",
		"pid directory = " + run,
		"log file = " + log,
		"max log size = 0",
		"winbindd socket directory = " + filepath.Join(run, "winbindd"),
		"ntp signd socket directory = " + filepath.Join(run, "ntp_signd"),
	}
}

// copyTree copies the regular files, directories and symbolic links under
// src to dst (which must not exist), keeping modes. Extended attributes
// (sysvol's NT ACLs) are not copied: a KDC-only DC never reads them.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(to, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, to)
		case d.Type().IsRegular():
			return copyFile(path, to, info.Mode().Perm())
		}
		return fmt.Errorf("lab: copy %s: unexpected %s", path, readcap.DescribeMode(info.Mode()))
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
