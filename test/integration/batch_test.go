package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/dynalab"
	"github.com/krbops/krbops/ledger"
	"github.com/krbops/krbops/rotate"
)

// setDynaliteEnv points this process and the krbops it starts at
// dynalite, with static credentials and no other AWS configuration.
func setDynaliteEnv(t *testing.T, endpoint string) {
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": dynalab.AccessKeyID, "AWS_SECRET_ACCESS_KEY": dynalab.SecretAccessKey, "AWS_SESSION_TOKEN": "",
		"AWS_PROFILE": "", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
	} {
		t.Setenv(k, v)
	}
}

// batchTarget is one principal of a batch test: its keytab and cluster.
type batchTarget struct{ name, keytab, cluster string }

// bulkPrincipals creates the principals in one kadmin.local batch, each
// with random keys exported to a keytab of its own (kvno 2).
func (l *rotLab) bulkPrincipals(t *testing.T, prefix string, n int, cluster func(i int) string) []batchTarget {
	t.Helper()
	var qs []string
	ts := make([]batchTarget, n)
	for i := range n {
		name := fmt.Sprintf("%s%03d", prefix, i)
		ts[i] = batchTarget{name: name, keytab: filepath.Join(l.dir, name+".keytab"), cluster: cluster(i)}
		qs = append(qs, "addprinc -randkey "+name, "ktadd -k "+ts[i].keytab+" "+name)
	}
	if err := l.r.KadminBatch(context.Background(), qs); err != nil {
		t.Fatal(err)
	}
	return ts
}

// writeTargets writes a --targets CSV (0600) for ts, all clients.
func (l *rotLab) writeTargets(t *testing.T, file string, ts []batchTarget) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("principal,keytab,role,cluster\n")
	for _, x := range ts {
		fmt.Fprintf(&b, "%s,%s,client,%s\n", x.name, x.keytab, x.cluster)
	}
	path := filepath.Join(l.dir, file)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// batchArgs are the flags of a batch of client rotations; extra overrides
// by appending (the last value of a flag wins).
func (l *rotLab) batchArgs(targets string, extra ...string) []string {
	a := []string{"rotate", "--targets", targets, "--allowlist", l.allow, "--secret-store", l.store, "--ledger", l.ledger,
		"--journal-dir", l.journal, "--kdc-log", l.r.KDCs[0].Log, "--no-login-record-ok", "--max-per-window", "100000", "--yes", "-o", "json"}
	return append(a, extra...)
}

// batchRun is one krbops process of a batch test.
type batchRun struct {
	code   int
	killed bool
	rep    verifyReport
	stdout string
	stderr string
}

// outcomes counts the batch.target steps of the report by outcome.
func (b batchRun) outcomes() map[string]int {
	n := map[string]int{}
	for _, s := range b.rep.Steps {
		if s.ID == rotate.StepTarget {
			o, _ := s.Evidence["outcome"].(string)
			n[o]++
		}
	}
	return n
}

// startBatch starts the real binary with its own HOME (local state) and
// env added to the lab's; wait collects it.
func (l *rotLab) startBatch(t *testing.T, home string, env []string, args ...string) (*exec.Cmd, func() batchRun) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // hang guard only
	cmd := exec.CommandContext(ctx, krbopsBin(t), args...)
	cmd.Env = append(os.Environ(), "KRB5_CONFIG="+l.r.Krb5Conf, "KRB5CCNAME=FILE:"+filepath.Join(l.dir, "none"), "HOME="+home)
	cmd.Env = append(cmd.Env, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	return cmd, func() batchRun {
		defer cancel()
		err := cmd.Wait()
		r := batchRun{stdout: out.String(), stderr: errOut.String()}
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
				r.killed = true
			}
			r.code = ee.ExitCode()
		case err != nil:
			t.Fatal(err)
		}
		if out.Len() > 0 && !r.killed {
			if err := json.Unmarshal(out.Bytes(), &r.rep); err != nil {
				t.Fatalf("report is not JSON: %v\n%s\n%s", err, out.String(), errOut.String())
			}
		}
		return r
	}
}

func (l *rotLab) runBatch(t *testing.T, env []string, args ...string) batchRun {
	t.Helper()
	_, wait := l.startBatch(t, t.TempDir(), env, args...)
	return wait()
}

// checkKVNOs checks every target's KDC kvno (2 untouched, 3 rotated once)
// and that its keytab file logs in.
func (l *rotLab) checkKVNOs(t *testing.T, ts []batchTarget, want func(batchTarget) uint32) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, x := range ts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			got, err := l.r.KVNO(context.Background(), x.name)
			if err != nil {
				t.Error(err)
				return
			}
			if w := want(x); got != w {
				t.Errorf("%s: KDC kvno %d, want %d", x.name, got, w)
			}
			if !l.kinit(t, x.name, x.keytab) {
				t.Errorf("%s: its keytab file does not log in (kvno %d): locked out", x.name, got)
			}
		})
	}
	wg.Wait()
}

// Issue 12 must-show: two operators with their own local state (journal
// directory, HOME) share one dynamodb:// ledger, each running a batch of
// 40 principals of cluster c1 with a window of 10 per hour: exactly 10
// rotate in total, the other 70 are reported deferred with a time, and
// the ledger's records and audit hold exactly the 10.
func TestBatchSharedWindowAcrossOperators(t *testing.T) {
	l := newRotLab(t)
	srv := dynalab.ForTest(t)
	if _, err := ledger.Init(context.Background(), srv.Client, "batch-ledger"); err != nil {
		t.Fatal(err)
	}
	setDynaliteEnv(t, srv.Endpoint)
	spec := "dynamodb://batch-ledger?region=" + dynalab.Region
	ts := l.bulkPrincipals(t, "win", 80, func(int) string { return "c1" })
	runs := make([]batchRun, 2)
	var wg sync.WaitGroup
	for op := range 2 {
		file := l.writeTargets(t, fmt.Sprintf("op%d.csv", op), ts[op*40:(op+1)*40])
		a := l.batchArgs(file, "--ledger", spec, "--max-per-window", "10", "--window", "1h", "--concurrency", "4",
			"--journal-dir", filepath.Join(l.dir, fmt.Sprintf("journal-op%d", op)))
		wg.Go(func() { runs[op] = l.runBatch(t, nil, a...) })
	}
	wg.Wait()
	rotated, deferred := 0, 0
	for op, r := range runs {
		n := r.outcomes()
		if r.code != 0 || n[rotate.OutcomeRotated]+n[rotate.OutcomeDeferred] != 40 {
			t.Errorf("operator %d: exit %d, outcomes %v (want 40 rotated or deferred, exit 0)\n%s", op, r.code, n, r.stderr)
		}
		rotated += n[rotate.OutcomeRotated]
		deferred += n[rotate.OutcomeDeferred]
		for _, s := range r.rep.Steps {
			if s.ID == rotate.StepTarget && s.Evidence["outcome"] == rotate.OutcomeDeferred && !strings.HasPrefix(s.Message, "deferred until ") {
				t.Errorf("operator %d, %s: %q does not say until when", op, s.Group, s.Message)
			}
		}
	}
	if rotated != 10 || deferred != 70 {
		t.Fatalf("%d rotated, %d deferred across both operators; want exactly 10 and 70", rotated, deferred)
	}
	led, err := ledger.Open(context.Background(), spec, ledger.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	recs, err := led.List(context.Background(), ledger.Filter{Cluster: "c1", Role: "client"})
	if err != nil || len(recs) != 10 {
		t.Fatalf("shared ledger: %d records (%v), want 10", len(recs), err)
	}
	inLedger := map[string]bool{}
	for _, r := range recs {
		inLedger[strings.TrimSuffix(r.Principal, "@"+l.r.Name)] = true
		if r.Outcome != ledger.Succeeded || !strings.HasPrefix(r.CorrelationID, "batch-") {
			t.Errorf("record %s of %s: %s, correlation %q", r.ID, r.Principal, r.Outcome, r.CorrelationID)
		}
	}
	changes, err := led.(*ledger.Dynamo).Changes(context.Background(), "")
	admits := 0
	for _, c := range changes {
		if c.Action == "admit" {
			admits++
		}
	}
	if err != nil || admits != 10 {
		t.Errorf("audit: %d admissions (%v), want 10", admits, err)
	}
	l.checkKVNOs(t, ts, func(x batchTarget) uint32 {
		if inLedger[x.name] {
			return 3
		}
		return 2
	})
}

// Issue 12 must-show: 200 principals in 4 clusters; the KDC refuses every
// key change in c3 (a password policy with a minimum life of one hour:
// kpasswd answers "changed too recently"). c3 stops after
// --max-failures-per-cluster failures and its other targets are skipped
// untouched; c1, c2 and c4 finish and every rotated keytab logs in; exit 1.
func TestBatchBreakerStopsFailingCluster(t *testing.T) {
	l := newRotLab(t)
	if err := os.WriteFile(l.allow, []byte("c1\nc2\nc3\nc4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := l.bulkPrincipals(t, "brk", 200, func(i int) string { return fmt.Sprintf("c%d", i%4+1) })
	qs := []string{`addpol -minlife "1 hour" young`}
	for _, x := range ts {
		if x.cluster == "c3" {
			qs = append(qs, "modprinc -policy young "+x.name)
		}
	}
	if err := l.r.KadminBatch(context.Background(), qs); err != nil {
		t.Fatal(err)
	}
	const maxFail = 2
	r := l.runBatch(t, nil, l.batchArgs(l.writeTargets(t, "fleet.csv", ts), "--concurrency", "8",
		"--max-failures-per-cluster", fmt.Sprint(maxFail))...)
	if r.code != 1 || r.rep.ExitCode != 1 {
		t.Errorf("exit %d (report %d), want 1\n%s", r.code, r.rep.ExitCode, r.stderr)
	}
	per := map[string]map[string]int{}
	for _, s := range r.rep.Steps {
		if s.ID != rotate.StepTarget {
			continue
		}
		c, _ := s.Evidence["cluster"].(string)
		o, _ := s.Evidence["outcome"].(string)
		if per[c] == nil {
			per[c] = map[string]int{}
		}
		per[c][o]++
		if o == rotate.OutcomeSkipped && s.Message != fmt.Sprintf("skipped: cluster c3 stopped after %d failures", maxFail) {
			t.Errorf("%s: %q", s.Group, s.Message)
		}
	}
	for _, c := range []string{"c1", "c2", "c4"} {
		if per[c][rotate.OutcomeRotated] != 50 {
			t.Errorf("cluster %s: %v, want 50 rotated", c, per[c])
		}
	}
	if per["c3"][rotate.OutcomeFailed] != maxFail || per["c3"][rotate.OutcomeSkipped] != 50-maxFail {
		t.Errorf("cluster c3: %v, want %d failed and %d skipped", per["c3"], maxFail, 50-maxFail)
	}
	l.checkKVNOs(t, ts, func(x batchTarget) uint32 {
		if x.cluster == "c3" {
			return 2
		}
		return 3
	})
}

// Issue 12 must-show: the batch is SIGKILLed once 20 of its 60 targets
// have published their keytab (a condition on the files, not a sleep);
// the same command run again completes: the 20 are skipped as done, the
// interrupted ones resume from their journals, every principal ends at
// kvno 3 exactly (rotated once) and logs in with its keytab.
func TestBatchKilledAndRunAgain(t *testing.T) {
	l := newRotLab(t)
	ts := l.bulkPrincipals(t, "kil", 60, func(int) string { return "c1" })
	args := l.batchArgs(l.writeTargets(t, "fleet.csv", ts), "--concurrency", "4")
	home := t.TempDir()
	cmd, wait := l.startBatch(t, home, nil, args...)
	res := make(chan batchRun, 1)
	go func() { res <- wait() }()
	first := l.waitPublished("kil", 20, res)
	if first == nil {
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		r := <-res
		first = &r
	}
	if !first.killed {
		t.Fatalf("the batch ended before the kill (exit %d): the test needs it mid-way\n%s%s", first.code, first.stderr, first.stdout[:min(len(first.stdout), 3000)])
	}
	second := l.runBatch(t, nil, args...)
	n := second.outcomes()
	resumed := 0
	for _, s := range second.rep.Steps {
		if s.ID == rotate.StepTarget && s.Evidence["resumed"] == true {
			resumed++
		}
	}
	// A target killed after publishing its keytab but before its ledger
	// record ended is resumed, not done.
	if second.code != 0 || n[rotate.OutcomeDone]+resumed < 20 || n[rotate.OutcomeDone]+n[rotate.OutcomeRotated] != 60 {
		t.Errorf("run again: exit %d, outcomes %v, %d resumed; want 60 done or rotated, at least 20 of them done or resumed\n%s", second.code, n, resumed, second.stderr)
	}
	l.checkKVNOs(t, ts, func(batchTarget) uint32 { return 3 })
	third := l.runBatch(t, nil, args...)
	if n := third.outcomes(); third.code != 0 || n[rotate.OutcomeDone] != 60 {
		t.Errorf("third run: exit %d, outcomes %v; want all 60 done", third.code, n)
	}
}

// waitPublished blocks until n targets published their keytab (the
// backup file appears) or the process ends first; it returns the run when
// it ended by itself, nil otherwise.
func (l *rotLab) waitPublished(prefix string, n int, res <-chan batchRun) *batchRun {
	for {
		select {
		case r := <-res:
			return &r
		case <-time.After(20 * time.Millisecond): // polling a condition, not timing the run
			if m, _ := filepath.Glob(filepath.Join(l.dir, prefix+"*.keytab.kvno2.bak")); len(m) >= n {
				return nil
			}
		}
	}
}

// SIGINT starts no further target and lets the running ones reach a safe
// point: exit 130, the unstarted targets reported cancelled; the same
// command run again completes with every kvno raised by exactly one.
func TestBatchInterruptedExits130AndCompletes(t *testing.T) {
	l := newRotLab(t)
	ts := l.bulkPrincipals(t, "int", 30, func(int) string { return "c1" })
	args := l.batchArgs(l.writeTargets(t, "fleet.csv", ts), "--concurrency", "2")
	cmd, wait := l.startBatch(t, t.TempDir(), nil, args...)
	res := make(chan batchRun, 1)
	go func() { res <- wait() }()
	if early := l.waitPublished("int", 4, res); early != nil {
		t.Fatalf("the batch ended before the interrupt (exit %d)", early.code)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	first := <-res
	if n := first.outcomes(); first.code != 130 || first.rep.ExitCode != 130 || n[rotate.OutcomeStopped] == 0 || n[rotate.OutcomeFailed] != 0 {
		t.Errorf("interrupted: exit %d (report %d), outcomes %v; want 130, some cancelled, none failed\n%s", first.code, first.rep.ExitCode, first.outcomes(), first.stderr)
	}
	second := l.runBatch(t, nil, args...)
	if n := second.outcomes(); second.code != 0 || n[rotate.OutcomeDone]+n[rotate.OutcomeRotated] != 30 {
		t.Errorf("run again: exit %d, outcomes %v\n%s", second.code, n, second.stderr)
	}
	l.checkKVNOs(t, ts, func(batchTarget) uint32 { return 3 })
}

// rotate finish --targets: servers whose ticket lifetime has not passed
// are "waiting until T" (exit 0), clients have no phase 2; with --force
// every server's keytab is published with the new kvno only.
func TestBatchFinishServers(t *testing.T) {
	l := newRotLab(t)
	ts := l.bulkPrincipals(t, "fin", 3, func(int) string { return "c1" })
	var b strings.Builder
	b.WriteString("principal,keytab,role,cluster\n")
	for i, x := range ts {
		role := "server"
		if i == 2 {
			role = "client"
		}
		fmt.Fprintf(&b, "%s,%s,%s,c1\n", x.name, x.keytab, role)
	}
	file := filepath.Join(l.dir, "fin.csv")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := l.runBatch(t, nil, l.batchArgs(file)...); r.code != 0 || r.outcomes()[rotate.OutcomeRotated] != 3 {
		t.Fatalf("phase 1: exit %d, %v\n%s", r.code, r.outcomes(), r.stderr)
	}
	finish := []string{"rotate", "finish", "--targets", file, "--secret-store", l.store, "--ledger", l.ledger, "--yes", "-o", "json"}
	r := l.runBatch(t, nil, finish...)
	if n := r.outcomes(); r.code != 0 || n[rotate.OutcomeWaiting] != 2 || n[rotate.OutcomeDone] != 1 {
		t.Fatalf("finish: exit %d, %v; want 2 waiting, 1 done\n%s", r.code, n, r.stderr)
	}
	for _, s := range r.rep.Steps {
		if s.ID == rotate.StepTarget && s.Evidence["outcome"] == rotate.OutcomeWaiting && !strings.HasPrefix(s.Message, "waiting until ") {
			t.Errorf("%s: %q", s.Group, s.Message)
		}
	}
	r = l.runBatch(t, nil, append(finish, "--force")...)
	if n := r.outcomes(); r.code != 0 || n[rotate.OutcomeRotated] != 2 {
		t.Fatalf("finish --force: exit %d, %v\n%s", r.code, n, r.stderr)
	}
	for _, x := range ts[:2] {
		if got := fmt.Sprint(kvnosOfFile(t, x.keytab)); got != "[3]" {
			t.Errorf("%s: keytab kvnos %s after phase 2, want [3]", x.name, got)
		}
	}
}

// A min gap is honoured within the batch too: of three targets of one
// (cluster, role) with --min-gap 1h, one rotates and two are deferred
// until an hour after it; exit 0 (deferred is a warning), 1 with --strict.
func TestBatchMinGapDefers(t *testing.T) {
	l := newRotLab(t)
	ts := l.bulkPrincipals(t, "gap", 3, func(int) string { return "c1" })
	file := l.writeTargets(t, "gap.csv", ts)
	r := l.runBatch(t, nil, l.batchArgs(file, "--min-gap", "1h", "--concurrency", "1")...)
	n := r.outcomes()
	if r.code != 0 || n[rotate.OutcomeRotated] != 1 || n[rotate.OutcomeDeferred] != 2 {
		t.Fatalf("exit %d, outcomes %v; want 1 rotated, 2 deferred, exit 0\n%s", r.code, n, r.stderr)
	}
	var until string
	for _, s := range r.rep.Steps {
		if s.ID == rotate.StepTarget && s.Evidence["outcome"] == rotate.OutcomeDeferred {
			u, _ := s.Evidence["until"].(string)
			if until != "" && u != until || u == "" {
				t.Errorf("%s: until %q (others %q)", s.Group, u, until)
			}
			until = u
		}
	}
	if r := l.runBatch(t, nil, l.batchArgs(file, "--min-gap", "1h", "--strict")...); r.code != 1 || r.outcomes()[rotate.OutcomeDone] != 1 {
		t.Errorf("--strict: exit %d, outcomes %v; want 1 (deferred counts), the rotated one done", r.code, r.outcomes())
	}
}
