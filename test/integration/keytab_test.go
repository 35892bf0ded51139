package integration

// Issue 13 must-shows for the host side of a rotation, on the real binary
// and the real MIT KDC: keytab pull installs a rotated client keytab on a
// second "host" (a directory of its own) keeping the service account's
// owner and mode, and a second pull changes nothing; keytab prune --keep 1
// after a server rotation leaves the current kvno only and refuses to
// remove it.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/rotate"
	"github.com/krbops/krbops/secretstore"
)

// runCLI runs the real krbops binary with args as given (no -o added) and
// returns its exit code, stdout and stderr.
func (l *rotLab) runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // hang guard
	defer cancel()
	cmd := exec.CommandContext(ctx, krbopsBin(t), args...)
	cmd.Env = append(os.Environ(), "KRB5_CONFIG="+l.r.Krb5Conf, "KRB5CCNAME=FILE:"+filepath.Join(l.dir, "none"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String(), errOut.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errOut.String()
}

func (l *rotLab) runJSON(t *testing.T, args ...string) (verifyReport, int, string) {
	t.Helper()
	code, out, errOut := l.runCLI(t, append(args, "-o", "json")...)
	var rep verifyReport
	if out != "" {
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("report is not JSON: %v\n%s", err, out)
		}
	}
	return rep, code, errOut
}

func statOf(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// checkKeytabFile: path holds kvno only, and is nobody's with mode.
func checkKeytabFile(t *testing.T, path string, kvno uint32, mode uint32) {
	t.Helper()
	if got := kvnosOfFile(t, path); len(got) != 1 || got[0] != kvno {
		t.Errorf("%s holds kvno %v, want [%d]", path, got, kvno)
	}
	st := statOf(t, path)
	if st.Uid != nobody || st.Gid != nobody || st.Mode&0o7777 != mode {
		t.Errorf("%s is %d:%d %04o, want %d:%d %04o", path, st.Uid, st.Gid, st.Mode&0o7777, nobody, nobody, mode)
	}
}

// pullLab is a lab principal with its keytab, and the path its keytab
// has on a second host: a directory of its own in the lab's.
func pullLab(t *testing.T, name string, hostMode os.FileMode) (l *rotLab, principal, kt, remote string) {
	t.Helper()
	l = newRotLab(t)
	kt = l.principal(t, name)
	host2 := filepath.Join(l.dir, "host2")
	if err := os.Mkdir(host2, hostMode); err != nil {
		t.Fatal(err)
	}
	return l, name + "@" + l.r.Name, kt, filepath.Join(host2, name+".keytab")
}

func TestKeytabPullAfterClientRotation(t *testing.T) {
	name := "pull1"
	// The second host holds the keytab as its service account has it
	// before the rotation: nobody:nobody 0600.
	l, principal, kt, remote := pullLab(t, name, 0o755)
	old, err := os.ReadFile(kt)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(remote, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(remote, nobody, nobody); err != nil {
		t.Fatal(err)
	}

	if code, _, out := l.runBinary(t, "", l.args(name, kt, "client", rotate.BackendKpasswd)...); code != 0 {
		t.Fatalf("rotate: exit %d\n%s", code, out)
	}
	if out, err := asNobody(t, l, "kinit", "-k", "-t", remote, principal); err == nil {
		t.Fatalf("the old keytab still logs in after the rotation: %s", out)
	}

	pull := []string{"keytab", "pull", "--secret-store", l.store, "--secret", principal, "--keytab", remote}
	// Quiet by default: a pull that installs prints nothing.
	code, stdout, stderr := l.runCLI(t, pull...)
	if code != 0 || stdout != "" || stderr != "" {
		t.Fatalf("pull: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	checkKeytabFile(t, remote, 3, 0o600)
	// The service, as its own user, logs in with the new kvno.
	if out, err := asNobody(t, l, "kinit", "-k", "-t", remote, principal); err != nil {
		t.Errorf("kinit -k -t as nobody with the pulled keytab: %v\n%s", err, out)
	}
	backup := rotate.BackupPath(remote, 2)
	if b, err := os.ReadFile(backup); err != nil || !bytes.Equal(b, old) {
		t.Errorf("backup %s: %v (equal to the old file: %v)", backup, err, bytes.Equal(b, old))
	}

	// A second pull: "already current", nothing written.
	before := statOf(t, remote)
	rep, code, stderr := l.runJSON(t, pull...)
	if code != 0 {
		t.Fatalf("second pull: exit %d %s %+v", code, stderr, rep)
	}
	if s, ok := rep.step("", "pull.fetch"); !ok || !strings.Contains(s.Message, "already current") {
		t.Errorf("second pull does not say already current: %+v", rep)
	}
	if s, ok := rep.step("", "pull.install"); !ok || s.Status != "skip" {
		t.Errorf("second pull's install step: %+v", s)
	}
	after := statOf(t, remote)
	if after.Ino != before.Ino || after.Mtim != before.Mtim || after.Ctim != before.Ctim {
		t.Errorf("second pull changed the file: inode %d -> %d, mtime %v -> %v", before.Ino, after.Ino, before.Mtim, after.Mtim)
	}
	if _, err := os.Lstat(backup + ".1"); !os.IsNotExist(err) {
		t.Errorf("second pull made another backup: %v", err)
	}
	// Humans see it with -o plain.
	if code, stdout, _ := l.runCLI(t, append(pull, "-o", "plain")...); code != 0 || !strings.Contains(stdout, "already current") {
		t.Errorf("-o plain: exit %d\n%s", code, stdout)
	}
}

// A new host gets its keytab created; a link, an untrusted directory and
// a secret that does not exist are refused; a pending version is
// installed only with --pending; a current version whose newest kvno the
// KDC does not accept is never installed.
func TestKeytabPullPendingAndUnproved(t *testing.T) {
	name := "pull2"
	l, principal, kt, remote := pullLab(t, name, 0o700)
	host2 := filepath.Dir(remote)
	// First install on a new host: the file is created 0600.
	if code, out, errOut := l.runCLI(t, "keytab", "pull", "--secret-store", l.store, "--secret", principal, "--keytab", remote); code != 2 || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("pull of a secret that does not exist: exit %d %s %s", code, out, errOut)
	}
	if _, err := os.Lstat(remote); !os.IsNotExist(err) {
		t.Fatalf("a failed pull left %s: %v", remote, err)
	}
	if code, _, out := l.runBinary(t, "", l.args(name, kt, "client", rotate.BackendKpasswd)...); code != 0 {
		t.Fatalf("rotate: exit %d\n%s", code, out)
	}
	if code, out, errOut := l.runCLI(t, "keytab", "pull", "--secret-store", l.store, "--secret", principal, "--keytab", remote, "--mode", "0640"); code != 0 {
		t.Fatalf("first pull: exit %d %s %s", code, out, errOut)
	}
	if fi, err := os.Stat(remote); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("new keytab: %v %v, want mode 0640", err, fi)
	}
	// A link at --keytab is refused, never followed.
	link := filepath.Join(host2, "link.keytab")
	if err := os.Symlink(remote, link); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := l.runCLI(t, "keytab", "pull", "--secret-store", l.store, "--secret", principal, "--keytab", link); code != 2 || !strings.Contains(errOut, "hint:") {
		t.Errorf("pull through a link: exit %d %s", code, errOut)
	}
	// --pending with no rotation in phase 1 says so.
	if code, _, errOut := l.runCLI(t, "keytab", "pull", "--pending", "--secret-store", l.store, "--secret", principal, "--keytab", remote); code != 1 || !strings.Contains(errOut, "no pending version") {
		t.Errorf("--pending without a pending version: exit %d %s", code, errOut)
	}

	// Phase 1 of a change: the pending version holds the KDC's kvno 3 and
	// a kvno 4 the KDC does not have yet. Only --pending installs it.
	ctx := context.Background()
	st, err := secretstore.Open(ctx, l.store, secretstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := st.Get(ctx, principal, secretstore.StageCurrent)
	if err != nil {
		t.Fatal(err)
	}
	curKT, err := kdcops.ParseKeytab(cur.Data, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	ahead, err := kdcops.DeriveKeytab(l.r.Name, []string{name}, []kdcops.KDCKey{{Enctype: 18, Salt: l.r.Name + name, DefaultSalt: true}}, "not-at-the-kdc", 4, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	phase1, err := kdcops.MarshalKeytab(append(curKT.Entries, ahead...))
	if err != nil {
		t.Fatal(err)
	}
	pending, err := st.PutPending(ctx, principal, phase1, secretstore.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := l.runCLI(t, "keytab", "pull", "--secret-store", l.store, "--secret", principal, "--keytab", remote, "-o", "plain"); code != 0 || !strings.Contains(out, "already current") {
		t.Errorf("pull without --pending while a version is pending: exit %d %s %s", code, out, errOut)
	}
	if code, out, errOut := l.runCLI(t, "keytab", "pull", "--pending", "--secret-store", l.store, "--secret", principal, "--keytab", remote); code != 0 {
		t.Errorf("pull --pending: exit %d %s %s", code, out, errOut)
	}
	if got := kvnosOfFile(t, remote); len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Errorf("after pull --pending the keytab holds kvno %v, want [3 4]", got)
	}
	// Promoted without the KDC ever changing: the current version's newest
	// kvno does not log in, and a new host gets nothing.
	if err := st.Promote(ctx, principal, pending.ID); err != nil {
		t.Fatal(err)
	}
	host3 := filepath.Join(l.dir, "host3", "pull2.keytab")
	os.Mkdir(filepath.Dir(host3), 0o700)
	code, _, errOut := l.runCLI(t, "keytab", "pull", "--secret-store", l.store, "--secret", principal, "--keytab", host3)
	if code != 1 || !strings.Contains(errOut, "pull.as") || !strings.Contains(errOut, "not version") || !strings.Contains(errOut, "hint:") {
		t.Errorf("pull of a current version ahead of the KDC: exit %d %s", code, errOut)
	}
	if _, err := os.Lstat(host3); !os.IsNotExist(err) {
		t.Errorf("an unproved version was installed: %v", err)
	}
	// A world-writable directory is not trusted.
	shared := filepath.Join(l.dir, "shared")
	os.Mkdir(shared, 0o777)
	os.Chmod(shared, 0o1777)
	if code, _, errOut := l.runCLI(t, "keytab", "pull", "--secret-store", l.store, "--secret", principal, "--keytab", filepath.Join(shared, "k")); code != 2 || !strings.Contains(errOut, "not trusted") {
		t.Errorf("pull into a world-writable directory: exit %d %s", code, errOut)
	}
}

func TestKeytabPruneAfterServerRotation(t *testing.T) {
	l := newRotLab(t)
	svc := "HTTP/prune1.krbops.test"
	kt := l.principal(t, svc)
	if code, _, out := l.runBinary(t, "", l.args(svc, kt, "server", rotate.BackendKpasswd)...); code != 0 {
		t.Fatalf("rotate phase 1: exit %d\n%s", code, out)
	}
	if got := kvnosOfFile(t, kt); len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Fatalf("phase 1 keytab holds kvno %v, want [2 3]", got)
	}
	if err := os.Chown(kt, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(kt, 0o640); err != nil {
		t.Fatal(err)
	}
	phase1, _ := os.ReadFile(kt)

	// Removing the kvno the KDC issues tickets under is refused.
	rep, code, _ := l.runJSON(t, "keytab", "prune", "--keytab", kt, "--kvno", "3")
	s, ok := rep.step("", "prune.guard")
	if code != 1 || !ok || s.Status != "fail" || !strings.Contains(s.Message, "kvno 3") || !strings.Contains(s.Message, "KDC's current kvno") || s.Hint == "" {
		t.Errorf("prune --kvno 3 (current): exit %d %+v", code, s)
	}
	if b, _ := os.ReadFile(kt); !bytes.Equal(b, phase1) {
		t.Error("a refused prune changed the keytab")
	}
	// --dry-run lists kvno 2 and changes nothing.
	rep, code, _ = l.runJSON(t, "keytab", "prune", "--keytab", kt, "--keep", "1", "--dry-run")
	if s, ok := rep.step("", "prune.write"); code != 0 || !ok || !strings.Contains(s.Message, "would remove") || !strings.Contains(s.Message, "kvno 2") {
		t.Errorf("--dry-run: exit %d %+v", code, rep)
	}
	if b, _ := os.ReadFile(kt); !bytes.Equal(b, phase1) {
		t.Error("--dry-run changed the keytab")
	}

	// --keep 1 leaves the current kvno only, owner and mode kept.
	rep, code, stderr := l.runJSON(t, "keytab", "prune", "--keytab", kt, "--keep", "1")
	if code != 0 {
		t.Fatalf("prune --keep 1: exit %d %s %+v", code, stderr, rep)
	}
	checkKeytabFile(t, kt, 3, 0o640)
	if out, err := asNobody(t, l, "kinit", "-k", "-t", kt, svc+"@"+l.r.Name); err != nil {
		t.Errorf("kinit -k -t as nobody after the prune: %v\n%s", err, out)
	}
	// The last kvno of a principal is never removed.
	if code, out, _ := l.runCLI(t, "keytab", "prune", "--keytab", kt, "--kvno", "3", "--offline", "-o", "plain"); code != 1 || !strings.Contains(out, "no key") {
		t.Errorf("prune of the only kvno: exit %d\n%s", code, out)
	}

	// --offline protects the file's newest kvno without asking the KDC.
	copyKT := filepath.Join(l.dir, "phase1-copy.keytab")
	if err := os.WriteFile(copyKT, phase1, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := l.runCLI(t, "keytab", "prune", "--keytab", copyKT, "--kvno", "3", "--offline", "-o", "plain"); code != 1 || !strings.Contains(out, "newest kvno") || !strings.Contains(out, "keep kvno 3") {
		t.Errorf("prune --offline of the newest kvno: exit %d\n%s", code, out)
	}
	if code, out, _ := l.runCLI(t, "keytab", "prune", "--keytab", copyKT, "--kvno", "2", "--offline", "-o", "plain"); code != 0 {
		t.Errorf("prune --offline --kvno 2: exit %d\n%s", code, out)
	}
	if got := kvnosOfFile(t, copyKT); len(got) != 1 || got[0] != 3 {
		t.Errorf("after prune --offline --kvno 2 the keytab holds kvno %v, want [3]", got)
	}
}
