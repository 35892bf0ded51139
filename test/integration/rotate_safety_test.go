package integration

// Issue 10 must-shows on the real binary and the real MIT KDC: a planted
// journal never leads to a key change; a keytab owned by its service
// account stays readable by it; concurrent rotations; the last-login check
// fails closed; --role both; the deny-list; keys re-derived after a
// change that gave the principal the realm's enctypes. Ownership cases use
// a second real Unix user (nobody, uid 65534, through setpriv).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/spawn"
	"github.com/krbops/krbops/rotate"
)

const nobody = 65534

// asNobody runs a command as uid/gid 65534 with no supplementary groups.
func asNobody(t *testing.T, l *rotLab, name string, args ...string) ([]byte, error) {
	t.Helper()
	if os.Geteuid() != 0 {
		spawn.Require(t, "root", errors.New("acting as a second Unix user with setpriv needs root"), true)
	}
	_, err := exec.LookPath("setpriv")
	spawn.Require(t, "setpriv (util-linux)", err, true)
	// nobody must reach the test's files: the temp directories are 0700,
	// and the lab's krb5.conf lives in the lab's private directory.
	for _, d := range []string{filepath.Dir(l.dir), l.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(l.dir, "nobody.krb5.conf")
	b, err := os.ReadFile(l.r.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, b, 0o644); err != nil {
		t.Fatal(err)
	}
	full := append([]string{fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody), "--clear-groups", name}, args...)
	cmd := l.r.Command(context.Background(), "setpriv", full...)
	cmd.Env = append(cmd.Env, "KRB5_CONFIG="+conf, "KRB5CCNAME=MEMORY:nobody")
	return cmd.CombinedOutput()
}

// A journal planted by another user in a world-writable journal
// directory: --resume refuses it (exit 2) without reading it; nothing
// reaches the KDC; the principal still logs in with its real keytab.
func TestRotatePlantedJournalRefused(t *testing.T) {
	l := newRotLab(t)
	name := "planted"
	kt := l.principal(t, name)
	shared := filepath.Join(l.dir, "shared-journals")
	if err := os.Mkdir(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(shared, 0o1777)
	j := map[string]any{"format": 1, "id": "attacker00000000", "principal": name + "@" + l.r.Name, "role": "client",
		"backend": "kpasswd", "cluster": "c1", "keytab": kt, "secret": name + "@" + l.r.Name,
		"old_kvno": 2, "new_kvno": 3, "password": "chosen-by-the-attacker", "state": 3}
	b, _ := json.Marshal(j)
	path := rotate.JournalPath(shared, name+"@"+l.r.Name)
	if out, err := asNobody(t, l, "sh", "-c", `umask 077; cat > "$1"`, "sh", path); err != nil {
		t.Fatalf("plant as nobody: %v %s", err, out)
	}
	// nobody's file, written through the shell above: fill it now that it
	// exists and is nobody's (root may write it; ownership stays).
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	resume := []string{"rotate", "--resume", "--principal", name, "--secret-store", l.store, "--ledger", l.ledger, "--journal-dir", shared, "--yes"}
	code, _, out := l.runBinary(t, "", resume...)
	if code != 2 || !strings.Contains(out, "not trusted") {
		t.Errorf("--resume with a planted journal: exit %d, want 2 naming it untrusted\n%s", code, out)
	}
	// Even in a private directory, a journal owned by another user is
	// refused.
	private := filepath.Join(l.dir, "private-journals")
	os.Mkdir(private, 0o700)
	path2 := rotate.JournalPath(private, name+"@"+l.r.Name)
	os.WriteFile(path2, b, 0o600)
	os.Chown(path2, nobody, nobody)
	resume[len(resume)-2] = private
	if code, _, out := l.runBinary(t, "", resume...); code != 2 || !strings.Contains(out, "belongs to uid 65534") {
		t.Errorf("--resume with another user's journal: exit %d\n%s", code, out)
	}
	if !l.kinit(t, name, kt) {
		t.Error("the principal no longer logs in with its real keytab")
	}
	if got := l.kvnoOf(t, name); got != 2 {
		t.Errorf("kvno %d, want 2: a key change happened", got)
	}
}

var vnoLine = regexp.MustCompile(`(?m)^Key: vno (\d+), (\S+)`)

// kvnoOf is the principal's current kvno (kadmin.local getprinc).
func (l *rotLab) kvnoOf(t *testing.T, name string) uint32 {
	t.Helper()
	var v uint32
	for _, m := range vnoLine.FindAllStringSubmatch(l.getprinc(t, name), -1) {
		var n uint32
		fmt.Sscan(m[1], &n)
		v = max(v, n)
	}
	return v
}

func (l *rotLab) getprinc(t *testing.T, name string) string {
	t.Helper()
	out, err := l.r.Kadmin(context.Background(), "getprinc "+name)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A keytab owned by the service account (nobody:nobody 0640) keeps its
// owner, group and mode, and that account can still read it and log in.
func TestRotateKeepsKeytabOwnership(t *testing.T) {
	l := newRotLab(t)
	name := "owned"
	kt := l.principal(t, name)
	if err := os.Chown(kt, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	os.Chmod(kt, 0o640)
	if out, err := asNobody(t, l, "kinit", "-k", "-t", kt, name); err != nil {
		t.Fatalf("before: nobody cannot log in with its keytab: %v %s", err, out)
	}
	code, _, out := l.runBinary(t, "", l.args(name, kt, "server", rotate.BackendKpasswd)...)
	if code != 0 {
		t.Fatalf("rotate: exit %d\n%s", code, out)
	}
	fi, err := os.Stat(kt)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != nobody || st.Gid != nobody || fi.Mode().Perm() != 0o640 {
		t.Errorf("after rotation: uid %d gid %d mode %04o, want %d %d 0640", st.Uid, st.Gid, fi.Mode().Perm(), nobody, nobody)
	}
	if out, err := asNobody(t, l, "kinit", "-k", "-t", kt, name); err != nil {
		t.Errorf("after: nobody cannot log in with its rotated keytab: %v %s", err, out)
	}
	// The backup keeps them too, and the report names it.
	bak := rotate.BackupPath(kt, 2)
	if bfi, err := os.Stat(bak); err != nil || bfi.Sys().(*syscall.Stat_t).Uid != nobody || bfi.Mode().Perm() != 0o640 {
		t.Errorf("backup %s: %v", bak, err)
	}
	if !strings.Contains(out, bak) {
		t.Errorf("the report does not name the backup %s", bak)
	}
}

// Two identical rotations started at once, ten times: afterwards the
// keytab always logs in and the next plain rotation completes.
func TestRotateConcurrentPairs(t *testing.T) {
	l := newRotLab(t)
	for i := range 10 {
		name := fmt.Sprintf("pair%d", i)
		kt := l.principal(t, name)
		var wg sync.WaitGroup
		codes := make([]int, 2)
		outs := make([]string, 2)
		for k := range 2 {
			wg.Go(func() {
				codes[k], _, outs[k] = l.runBinary(t, "", l.args(name, kt, "client", rotate.BackendKpasswd)...)
			})
		}
		wg.Wait()
		if !slices.Contains(codes, 0) {
			t.Fatalf("round %d: neither rotation completed: %v\n%s\n---\n%s", i, codes, outs[0], outs[1])
		}
		if !l.kinit(t, name, kt) {
			t.Errorf("round %d: the keytab does not log in (exit codes %v)", i, codes)
		}
		if code, _, out := l.runBinary(t, "", l.args(name, kt, "client", rotate.BackendKpasswd)...); code != 0 {
			t.Errorf("round %d: the next rotation: exit %d\n%s", i, code, out)
		}
		if !l.kinit(t, name, kt) {
			t.Errorf("round %d: after the next rotation the keytab does not log in", i)
		}
	}
}

// The last-login check fails closed; --role both rotates end to end;
// krbtgt is refused before anything is read.
func TestRotateLoginRecordRoleBothDeny(t *testing.T) {
	l := newRotLab(t)
	name := "nologin"
	kt := l.principal(t, name)
	args := slices.DeleteFunc(l.args(name, kt, "client", rotate.BackendKpasswd), func(a string) bool { return a == "--no-login-record-ok" })
	code, _, out := l.runBinary(t, "", args...)
	if code != 1 || !strings.Contains(out, "no login of") {
		t.Errorf("client without a login record: exit %d, want 1\n%s", code, out)
	}
	if !l.kinit(t, name, kt) { // also the login the next run finds
		t.Fatal("kinit")
	}
	both := "both-role"
	bkt := l.principal(t, both)
	if !l.kinit(t, both, bkt) {
		t.Fatal("kinit")
	}
	// rotate ignores logins in its own first second (MIT logs whole
	// seconds; its own preflight logins come then): let one pass. This
	// orders events, it asserts nothing about time.
	time.Sleep(1100 * time.Millisecond)
	bargs := slices.DeleteFunc(l.args(both, bkt, "both", rotate.BackendKpasswd), func(a string) bool { return a == "--no-login-record-ok" })
	if code, _, out := l.runBinary(t, "", bargs...); code != 0 || !strings.Contains(out, "phase 1 done") {
		t.Fatalf("--role both: exit %d\n%s", code, out)
	}
	if got := fmt.Sprint(kvnosOfFile(t, bkt)); got != "[2 3]" {
		t.Errorf("--role both keytab kvnos %s, want [2 3] (phase 1 keeps the old kvno)", got)
	}
	if !l.kinit(t, both, bkt) {
		t.Error("--role both: the phase-1 keytab does not log in")
	}
	code, _, out = l.runBinary(t, "", l.args("krbtgt/"+l.r.Name, kt, "server", rotate.BackendKpasswd)...)
	if code != 2 || !strings.Contains(out, "matches the deny pattern krbtgt/*") {
		t.Errorf("krbtgt: exit %d, want 2\n%s", code, out)
	}
}

// A principal with only aes256 keys, rotated by kpasswd: MIT gives the
// new key the realm's enctypes; the keytab holds every one getprinc lists.
func TestRotateAES256OnlyGetsEveryEnctype(t *testing.T) {
	l := newRotLab(t)
	name := "aes256only"
	ctx := context.Background()
	if _, err := l.r.Kadmin(ctx, "addprinc -randkey -e aes256-cts-hmac-sha1-96:normal "+name); err != nil {
		t.Fatal(err)
	}
	kt := filepath.Join(l.dir, name+".keytab")
	if err := l.r.Keytab(ctx, name, kt, "aes256-cts-hmac-sha1-96:normal"); err != nil {
		t.Fatal(err)
	}
	code, _, out := l.runBinary(t, "", l.args(name, kt, "client", rotate.BackendKpasswd)...)
	if code != 0 {
		t.Fatalf("rotate: exit %d\n%s", code, out)
	}
	var want []string
	for _, m := range vnoLine.FindAllStringSubmatch(l.getprinc(t, name), -1) {
		if m[1] == "3" {
			want = append(want, strings.TrimSuffix(m[2], ","))
		}
	}
	klist, err := l.r.Command(ctx, "klist", "-k", "-e", kt).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, et := range want {
		if !strings.Contains(string(klist), et) {
			t.Errorf("getprinc lists %s at kvno 3; the keytab does not:\n%s", et, klist)
		}
	}
	if len(want) < 2 {
		t.Errorf("getprinc lists %v at kvno 3: the realm should have given more than aes256", want)
	}
	if !l.kinit(t, name, kt) {
		t.Error("kinit with the rotated keytab")
	}
}
