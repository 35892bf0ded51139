package integration

// krbops exec against the lab's MIT KDC with MIT's own kvno and klist as
// the child: the ticket stays fresh through tickets far shorter than the
// job, the cache is MIT's format, signals reach the job, and the cache is
// gone afterwards.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/credentials"

	"github.com/krbops/krbops/internal/lab"
	"github.com/krbops/krbops/internal/shquote"
	"github.com/krbops/krbops/internal/spawn"
)

type execRig struct {
	realm  *lab.Realm
	dir    string
	keytab string
	ccdir  string
	log    string
	// ownGroup starts krbops in a process group of its own, as a shell
	// starts a job, so a test can signal the whole job as a terminal or a
	// service manager does.
	ownGroup bool
}

// newExecRig makes principal svc-exec with tickets of maxlife (not
// renewable, so every refresh is a login from the keytab) and its keytab.
func newExecRig(t *testing.T, maxlife string) *execRig {
	return newExecRigRenew(t, maxlife, "0")
}

func newExecRigRenew(t *testing.T, maxlife, maxrenew string) *execRig {
	t.Helper()
	for _, b := range []string{"kvno", "klist"} {
		_, err := exec.LookPath(b)
		spawn.Require(t, b, err, err != nil)
	}
	realm := lab.ForTest(t, lab.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := realm.AddPrincipal(ctx, "svc-exec", ""); err != nil {
		t.Fatal(err)
	}
	if maxlife != "" {
		if _, err := realm.Kadmin(ctx, fmt.Sprintf(`modprinc -maxlife "%s" -maxrenewlife "%s" svc-exec`, maxlife, maxrenew)); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	r := &execRig{realm: realm, dir: dir, keytab: filepath.Join(dir, "svc-exec.keytab"), ccdir: filepath.Join(dir, "cc"),
		log: filepath.Join(dir, "forensic.jsonl")}
	if err := realm.Keytab(ctx, "svc-exec", r.keytab); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(r.ccdir, 0o700); err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs krbops exec with the job script as the child.
func (r *execRig) start(t *testing.T, script string, extra ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	args := append([]string{"exec", "--keytab", r.keytab, "--principal", "svc-exec", "--ccache-dir", r.ccdir,
		"--log-file", r.log, "--correlation-id", "exec-1"}, extra...)
	args = append(args, "--", "sh", "-c", script)
	cmd := exec.Command(krbopsBin(t), args...)
	cmd.Dir = r.dir
	cmd.Env = append(rqEnv(r.realm.Env()...), "JOB_DIR="+r.dir, "REALM="+r.realm.Name)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if r.ownGroup {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, &out
}

// records reads the forensic log's records.
func (r *execRig) records(t *testing.T) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(r.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var recs []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			recs = append(recs, m)
		}
	}
	return recs
}

func count(recs []map[string]any, msg string, match func(map[string]any) bool) int {
	n := 0
	for _, m := range recs {
		if m["msg"] == msg && (match == nil || match(m)) {
			n++
		}
	}
	return n
}

// awaitLog waits until cond holds on the forensic log: the condition is
// the event itself; the deadline is only a hang guard.
func (r *execRig) awaitLog(t *testing.T, what string, guard time.Duration, exited <-chan struct{}, cond func([]map[string]any) bool) {
	t.Helper()
	deadline := time.After(guard)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond(r.records(t)) {
		select {
		case <-deadline:
			t.Fatalf("hang guard: no %s in %s", what, guard)
		case <-exited:
			if cond(r.records(t)) {
				return
			}
			t.Fatalf("krbops exited before %s", what)
		case <-tick.C:
		}
	}
}

func waitExit(cmd *exec.Cmd) (<-chan struct{}, func() int) {
	done := make(chan struct{})
	code := -1
	go func() {
		cmd.Wait()
		code = cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		close(done)
	}()
	return done, func() int { <-done; return code }
}

func reLogins(recs []map[string]any) int {
	return count(recs, "ticket granted", nil) - 1
}

// Must-show (make test version): a principal whose tickets live 20 s runs
// a job that calls MIT kvno over and over until the forensic log shows
// two re-logins from the keytab. Every kvno call succeeds, the job's own
// exit status (7) is krbops', and the cache and its directory are gone.
// KRBOPS_EXEC_SOAK=1 runs the version: 60 s tickets, kvno every
// 10 s for 5 minutes.
func TestExecKeepsTheTicketFreshForAJobLongerThanItsTickets(t *testing.T) {
	soak := os.Getenv("KRBOPS_EXEC_SOAK") != ""
	maxlife, relogins, guard := "20 seconds", 2, 3*time.Minute
	// The job calls kvno until told to stop (or, soaking, for 5 minutes),
	// and fails at the first call that does not succeed.
	job := `n=0; while [ ! -e "$JOB_DIR/stop" ]; do
  kvno svc-exec@$REALM >>"$JOB_DIR/kvno.out" 2>&1 || { echo "kvno failed at call $n" >>"$JOB_DIR/kvno.out"; exit 9; }
  n=$((n+1)); echo $n >"$JOB_DIR/calls"; sleep 1
done; exit 7`
	if soak {
		maxlife, relogins, guard = "1 minute", 8, 8*time.Minute
		job = `i=0; while [ $i -lt 30 ]; do
  kvno svc-exec@$REALM >>"$JOB_DIR/kvno.out" 2>&1 || { echo "kvno failed at call $i" >>"$JOB_DIR/kvno.out"; exit 9; }
  i=$((i+1)); echo $i >"$JOB_DIR/calls"; sleep 10
done; exit 7`
	}
	r := newExecRig(t, maxlife)
	cmd, out := r.start(t, job, "--margin", "10m")
	exited, code := waitExit(cmd)
	if !soak {
		r.awaitLog(t, fmt.Sprintf("%d re-logins", relogins), guard, exited, func(recs []map[string]any) bool { return reLogins(recs) >= relogins })
		if err := os.WriteFile(filepath.Join(r.dir, "stop"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-exited:
	case <-time.After(guard):
		t.Fatal("hang guard: the job did not end")
	}
	kvnoOut, _ := os.ReadFile(filepath.Join(r.dir, "kvno.out"))
	if c := code(); c != 7 {
		t.Fatalf("exit %d, want the job's 7\n%s\nkvno:\n%s", c, out, kvnoOut)
	}
	recs := r.records(t)
	calls, _ := os.ReadFile(filepath.Join(r.dir, "calls"))
	n, _ := strconv.Atoi(strings.TrimSpace(string(calls)))
	if got := strings.Count(string(kvnoOut), ": kvno = "); got != n || n == 0 || strings.Contains(string(kvnoOut), "failed") {
		t.Fatalf("%d kvno calls, %d succeeded:\n%s", n, got, kvnoOut)
	}
	if rl := reLogins(recs); rl < relogins {
		t.Errorf("%d re-logins in the log, want at least %d", rl, relogins)
	}
	for _, m := range recs {
		if m["correlation_id"] != "exec-1" {
			t.Fatalf("log record without the correlation id: %v", m)
		}
		if m["msg"] == "ticket granted" {
			if life, _ := m["lifetime_seconds"].(float64); soak && life > 60 || !soak && life > 20 {
				t.Errorf("ticket of %vs, longer than the principal's maxlife %s", life, maxlife)
			}
		}
	}
	if count(recs, "ticket request", func(m map[string]any) bool { return m["reason"] == "margin" }) < relogins {
		t.Error("the re-logins are not logged as margin refreshes")
	}
	if count(recs, "child exited", func(m map[string]any) bool { return m["exit_status"] == float64(7) }) != 1 {
		t.Error("no child exited record with status 7")
	}
	left, _ := os.ReadDir(r.ccdir)
	if len(left) != 0 {
		t.Errorf("the cache directory is left behind: %v", left)
	}
	t.Logf("%d kvno calls over %d re-logins with %s tickets, all succeeded", n, reLogins(recs), maxlife)
}

// A renewable ticket is renewed (no keytab, no pre-authentication) while
// a renewal reaches past the margin, then a login from the keytab takes
// over: the job's kvno calls succeed throughout.
func TestExecRenewsWhereRenewalSuffices(t *testing.T) {
	r := newExecRigRenew(t, "20 seconds", "45 seconds")
	job := `while [ ! -e "$JOB_DIR/stop" ]; do kvno svc-exec@$REALM >/dev/null || exit 9; sleep 1; done; exit 0`
	cmd, out := r.start(t, job)
	exited, code := waitExit(cmd)
	r.awaitLog(t, "a renewal and then a re-login", 3*time.Minute, exited, func(recs []map[string]any) bool {
		return count(recs, "ticket renewed", nil) >= 1 && reLogins(recs) >= 1
	})
	if err := os.WriteFile(filepath.Join(r.dir, "stop"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if c := code(); c != 0 {
		t.Fatalf("exit %d\n%s", c, out)
	}
	recs := r.records(t)
	if count(recs, "ticket refresh failed", nil) != 0 {
		t.Error("a refresh failed")
	}
	t.Logf("%d renewals, %d re-logins", count(recs, "ticket renewed", nil), reLogins(recs))
}

// The cache is MIT's format: MIT klist and gokrb5 both read it, and it is
// mode 0600 in a 0700 directory.
func TestExecCacheIsReadByKlistAndGokrb5(t *testing.T) {
	r := newExecRig(t, "")
	job := `klist >"$JOB_DIR/klist.out" 2>&1 || exit 9
p=${KRB5CCNAME#FILE:}; cp "$p" "$JOB_DIR/copy.cc"; stat -c '%a' "$p" "$(dirname "$p")" >"$JOB_DIR/modes"; exit 0`
	cmd, out := r.start(t, job)
	_, code := waitExit(cmd)
	if c := code(); c != 0 {
		t.Fatalf("exit %d\n%s", c, out)
	}
	klist, _ := os.ReadFile(filepath.Join(r.dir, "klist.out"))
	if !strings.Contains(string(klist), "Default principal: svc-exec@"+r.realm.Name) || !strings.Contains(string(klist), "krbtgt/"+r.realm.Name+"@"+r.realm.Name) {
		t.Errorf("klist:\n%s", klist)
	}
	modes, _ := os.ReadFile(filepath.Join(r.dir, "modes"))
	if strings.Fields(string(modes))[0] != "600" || strings.Fields(string(modes))[1] != "700" {
		t.Errorf("cache and directory modes %q, want 600 and 700", modes)
	}
	cc, err := credentials.LoadCCache(filepath.Join(r.dir, "copy.cc"))
	if err != nil {
		t.Fatalf("gokrb5 cannot read the cache: %v", err)
	}
	if cc.DefaultPrincipal.PrincipalName.PrincipalNameString() != "svc-exec" || len(cc.GetEntries()) != 1 {
		t.Errorf("gokrb5 reads %v with %d entries", cc.DefaultPrincipal, len(cc.GetEntries()))
	}
}

// Must-show: SIGTERM to krbops reaches the job, krbops waits for it and
// exits with its status; a job killed by a signal gives 128+N.
func TestExecForwardsSignalsAndPassesTheStatusOn(t *testing.T) {
	r := newExecRig(t, "")
	cmd, out := r.start(t, `trap 'echo TERM >"$JOB_DIR/got"; exit 42' TERM; touch "$JOB_DIR/ready"; while :; do sleep 0.1; done`)
	exited, code := waitExit(cmd)
	r.awaitLog(t, "child started", time.Minute, exited, func(recs []map[string]any) bool { return count(recs, "child started", nil) == 1 })
	awaitFile(t, filepath.Join(r.dir, "ready"), exited)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if c := code(); c != 42 {
		t.Fatalf("exit %d, want the job's 42\n%s", c, out)
	}
	if got, _ := os.ReadFile(filepath.Join(r.dir, "got")); string(got) != "TERM\n" {
		t.Errorf("the job did not get SIGTERM: %q", got)
	}
	recs := r.records(t)
	if count(recs, "signal forwarded", func(m map[string]any) bool { return m["signal"] == "terminated" }) != 1 {
		t.Error("no signal forwarded record")
	}
	if left, _ := os.ReadDir(r.ccdir); len(left) != 0 {
		t.Errorf("the cache directory is left behind: %v", left)
	}

	cmd, out = r.start(t, `kill -KILL $$`)
	_, code = waitExit(cmd)
	if c := code(); c != 128+9 {
		t.Fatalf("exit %d, want 137 for a job killed by SIGKILL\n%s", c, out)
	}
}

// A signal sent to the whole job (kill -INT -PGID, as Ctrl-C does, or a
// service manager stopping a process group) reaches the command exactly
// once: krbops, not attached to a terminal, runs it in its own process
// group and forwards what it gets. The job records every signal's sender
// (sigwaitinfo), so a duplicate cannot hide in a coalesced delivery.
func TestExecJobSignalReachesTheCommandOnce(t *testing.T) {
	r := newExecRig(t, "")
	r.ownGroup = true
	job := `import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
d = os.environ["JOB_DIR"]
open(d + "/ready", "w").close()
while True:
    i = signal.sigwaitinfo({signal.SIGINT, signal.SIGTERM})
    with open(d + "/got", "a") as f:
        f.write("%d %d\n" % (i.si_signo, i.si_pid))
    if i.si_signo == signal.SIGTERM:
        sys.exit(42)
`
	cmd, out := r.start(t, "exec python3 -c "+shquote.Quote(job))
	exited, code := waitExit(cmd)
	awaitFile(t, filepath.Join(r.dir, "ready"), exited)
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r.awaitLog(t, "signal forwarded", time.Minute, exited, func(recs []map[string]any) bool {
		return count(recs, "signal forwarded", func(m map[string]any) bool { return m["signal"] == "interrupt" }) == 1
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if c := code(); c != 42 {
		t.Fatalf("exit %d, want the job's 42\n%s", c, out)
	}
	got, _ := os.ReadFile(filepath.Join(r.dir, "got"))
	if want := fmt.Sprintf("%d %d\n%d %d\n", syscall.SIGINT, cmd.Process.Pid, syscall.SIGTERM, cmd.Process.Pid); string(got) != want {
		t.Errorf("the job got (signal, sender pid):\n%s\nwant one SIGINT and one SIGTERM, both from krbops (pid %d)", got, cmd.Process.Pid)
	}
}

// A first login that fails starts nothing: a wrong key is exit 2 with the
// KDC's reason, an unreachable KDC exit 3.
func TestExecFirstLoginFailureStartsNothing(t *testing.T) {
	r := newExecRig(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := r.realm.Kadmin(ctx, "cpw -randkey svc-exec"); err != nil {
		t.Fatal(err)
	}
	cmd, out := r.start(t, `touch "$JOB_DIR/ran"`)
	_, code := waitExit(cmd)
	if c := code(); c != 2 || !strings.Contains(out.String(), "KDC_ERR_PREAUTH_FAILED; the command was not started") ||
		!strings.Contains(out.String(), "hint: the keytab's key is not the principal's current key") {
		t.Fatalf("exit %d\n%s", c, out)
	}
	if _, err := os.Stat(filepath.Join(r.dir, "ran")); err == nil {
		t.Error("the command ran although the login failed")
	}
	if left, _ := os.ReadDir(r.ccdir); len(left) != 0 {
		t.Errorf("the cache directory is left behind: %v", left)
	}
}

func awaitFile(t *testing.T, path string, exited <-chan struct{}) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	guard := time.After(time.Minute)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-exited:
			t.Fatalf("krbops exited before %s appeared", path)
		case <-guard:
			t.Fatalf("hang guard: no %s", path)
		case <-tick.C:
		}
	}
}

// A refresh that fails is retried with backoff while the ticket is still
// valid, and the job is signalled only when the ticket has really
// expired: the KDC is stopped under a job with 20 s tickets.
func TestExecSignalsTheJobOnlyWhenTheTicketExpires(t *testing.T) {
	r := newExecRig(t, "20 seconds")
	cmd, out := r.start(t, `trap 'echo TERM >"$JOB_DIR/got"; exit 42' TERM; touch "$JOB_DIR/ready"; while :; do sleep 0.1; done`)
	exited, code := waitExit(cmd)
	awaitFile(t, filepath.Join(r.dir, "ready"), exited)
	for _, k := range r.realm.KDCList() {
		if err := k.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	if c := code(); c != 42 {
		t.Fatalf("exit %d, want the job's 42 after its SIGTERM\n%s", c, out)
	}
	recs := r.records(t)
	var order []string
	failedWhileValid := 0
	for _, m := range recs {
		switch m["msg"] {
		case "ticket refresh failed":
			if left, _ := m["remaining_seconds"].(float64); left > 0 {
				failedWhileValid++
			}
			order = append(order, "failed")
		case "ticket expired", "child signalled":
			order = append(order, m["msg"].(string))
		}
	}
	if failedWhileValid < 2 {
		t.Errorf("%d failed refreshes while the ticket was valid, want retries with backoff (%v)", failedWhileValid, order)
	}
	if n := len(order); n < 2 || order[n-2] != "ticket expired" || order[n-1] != "child signalled" {
		t.Errorf("events %v: the job must be signalled only after the ticket expired", order)
	}
	if got, _ := os.ReadFile(filepath.Join(r.dir, "got")); string(got) != "TERM\n" {
		t.Errorf("the job did not get SIGTERM: %q", got)
	}
	if left, _ := os.ReadDir(r.ccdir); len(left) != 0 {
		t.Errorf("the cache directory is left behind: %v", left)
	}
}

// Must-show for exec and a rotation: the key is changed at the KDC while
// the job runs and the keytab on disk is still the old one (the new one
// not yet distributed). The refresh fails and is retried with backoff
// while the ticket is still valid — without offering the refused key to
// the KDC again from the same file — and once the new keytab replaces the
// old, the next retry logs in with it: the job never notices.
func TestExecPicksUpARotatedKeytabWhileItsTicketIsValid(t *testing.T) {
	r := newExecRig(t, "20 seconds")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job := `while [ ! -e "$JOB_DIR/stop" ]; do kvno svc-exec@$REALM >/dev/null || exit 9; sleep 1; done; exit 0`
	cmd, out := r.start(t, job)
	exited, code := waitExit(cmd)
	r.awaitLog(t, "the first ticket", time.Minute, exited, func(recs []map[string]any) bool { return count(recs, "ccache written", nil) == 1 })
	// The rotation reaches the KDC first: ktadd to a side file.
	next := filepath.Join(r.dir, "svc-exec.keytab.new")
	if err := r.realm.Keytab(ctx, "svc-exec", next); err != nil {
		t.Fatal(err)
	}
	r.awaitLog(t, "two failed refreshes", 2*time.Minute, exited, func(recs []map[string]any) bool {
		return count(recs, "ticket refresh failed", nil) >= 2
	})
	kdcLog, _ := os.ReadFile(r.realm.KDCLog())
	refusedBefore := strings.Count(string(kdcLog), "PREAUTH_FAILED: svc-exec@")
	if err := os.Rename(next, r.keytab); err != nil {
		t.Fatal(err)
	}
	r.awaitLog(t, "a login with the new keytab", 2*time.Minute, exited, func(recs []map[string]any) bool {
		return count(recs, "keytab kvno changed", nil) == 1 && count(recs, "ccache written", nil) >= 2
	})
	if err := os.WriteFile(filepath.Join(r.dir, "stop"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if c := code(); c != 0 {
		t.Fatalf("exit %d: a kvno call failed\n%s", c, out)
	}
	recs := r.records(t)
	if count(recs, "ticket expired", nil) != 0 || count(recs, "child signalled", nil) != 0 {
		t.Error("the ticket expired although the new keytab arrived in time")
	}
	if refusedBefore != 1 {
		t.Errorf("the KDC refused the old key %d times for %d failed refreshes: an unchanged keytab must not be offered again at once",
			refusedBefore, count(recs, "ticket refresh failed", nil))
	}
}
