package integration

// Resume-query against real servers: dynalite (npm) behind the
// fault-injecting proxy of internal/dynalab, the lab's MIT KDC with a
// SPNEGO credential broker, and moto_server for its IAM denials. The
// crash tests run the real krbops binary and SIGKILL it at random
// moments.

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/krbops/krbops/dynamo"
	"github.com/krbops/krbops/internal/dynalab"
	"github.com/krbops/krbops/internal/lab"
	"github.com/krbops/krbops/internal/motolab"
)

// killRuns is how many SIGKILLs each crash test delivers mid-run:
// KRBOPS_SOAK_KILLS (make soak: 100), else 20.
func killRuns() int {
	if n, err := strconv.Atoi(os.Getenv("KRBOPS_SOAK_KILLS")); err == nil && n > 0 {
		return n
	}
	return 20
}

// rqEnv is a child environment with dummy AWS credentials only: nothing
// from the developer's ~/.aws or environment reaches a test server.
func rqEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "KRB5") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, append([]string{
		"AWS_ACCESS_KEY_ID=" + dynalab.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + dynalab.SecretAccessKey,
		"AWS_REGION=" + dynalab.Region, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/nonexistent/krbops-test", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent/krbops-test",
	}, extra...)...)
}

type rqRun struct {
	code   int
	stdout string
	stderr string
	report struct {
		Status   string `json:"status"`
		ExitCode int    `json:"exit_code"`
		Steps    []struct {
			ID       string         `json:"id"`
			Status   string         `json:"status"`
			Message  string         `json:"message"`
			Evidence map[string]any `json:"evidence"`
		} `json:"steps"`
	}
}

// sum adds an evidence field over the segment steps.
func (r *rqRun) sum(field string) int {
	n := 0
	for _, s := range r.report.Steps {
		if strings.HasPrefix(s.ID, "query.segment:") {
			if v, ok := s.Evidence[field].(float64); ok {
				n += int(v)
			}
		}
	}
	return n
}

// prep is an evidence number of the query.table step: Prepare's own
// requests (DescribeTable, the first page) retried or refreshed.
func (r *rqRun) prep(field string) int {
	for _, s := range r.report.Steps {
		if s.ID == "query.table" {
			v, _ := s.Evidence[field].(float64)
			return int(v)
		}
	}
	return 0
}

func (r *rqRun) statuses() map[string]int {
	m := map[string]int{}
	for _, s := range r.report.Steps {
		if strings.HasPrefix(s.ID, "query.segment:") {
			m[s.Status]++
		}
	}
	return m
}

// krbops runs the binary to completion with -o json.
func krbops(t *testing.T, env []string, args ...string) *rqRun {
	t.Helper()
	cmd := exec.Command(krbopsBin(t), append([]string{"resume-query", "-o", "json"}, args...)...)
	cmd.Env = env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := &rqRun{stdout: out.String(), stderr: errOut.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if out.Len() > 0 {
		if err := json.Unmarshal(out.Bytes(), &r.report); err != nil {
			t.Fatalf("report is not JSON: %v\n%s", err, out.String())
		}
	}
	return r
}

type scanRig struct {
	srv   *dynalab.Server
	proxy *dynalab.Proxy
	dir   string
	table string
}

func newScanRig(t *testing.T, table string, items, pad int) *scanRig {
	t.Helper()
	srv := dynalab.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Setup(ctx, table, items, pad); err != nil {
		t.Fatal(err)
	}
	p, err := dynalab.NewProxy(srv.Endpoint, uint64(time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &scanRig{srv: srv, proxy: p, dir: t.TempDir(), table: table}
}

func (r *scanRig) out() string { return filepath.Join(r.dir, "out.jsonl") }

func (r *scanRig) args(extra ...string) []string {
	return append([]string{"--table", r.table, "--scan", "--segments", "4", "--workers", "4", "--page-size", "25",
		"--endpoint-url", r.proxy.URL, "--out", r.out(), "--log-file", filepath.Join(r.dir, "forensic.jsonl")}, extra...)
}

// wantPlainScan compares the output with a plain full scan of the table.
func (r *scanRig) wantPlainScan(t *testing.T) dynalab.Diff {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := r.srv.CompareFile(ctx, r.out(), &dynamodb.ScanInput{TableName: aws.String(r.table), ConsistentRead: aws.Bool(true)}, dynamo.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	if !d.OK() {
		t.Fatalf("output differs from a plain scan: %s", d)
	}
	return d
}

func (r *scanRig) log(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join(r.dir, "forensic.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// killLoop starts krbops with args again and again, SIGKILLs it at a
// random moment while it runs, and counts the kills that landed mid-run;
// it stops after kills of them. A run that finishes before its kill ends
// the round: the output is checked, both files are removed, and the next
// round starts from nothing. It returns (mid-run kills, finished rounds).
func killLoop(t *testing.T, rig *scanRig, env []string, kills int, maxDelay time.Duration, args []string) (int, int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	landed, rounds := 0, 0
	for attempt := 0; landed < kills; attempt++ {
		if attempt > kills*5 {
			t.Fatalf("only %d of %d kills landed mid-run in %d attempts", landed, kills, attempt)
		}
		cmd := exec.Command(krbopsBin(t), append([]string{"resume-query", "-o", "json"}, args...)...)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		delay := time.Duration(rng.Int64N(int64(maxDelay)))
		select {
		case err := <-done:
			// Finished before the kill: the round is complete.
			if err != nil {
				t.Fatalf("run %d exited before its kill: %v\n%s", attempt, err, stderr.String())
			}
			rig.wantPlainScan(t)
			rounds++
			os.Remove(rig.out())
			os.Remove(rig.out() + ".checkpoint")
			continue
		case <-time.After(delay):
		}
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		err := <-done
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			landed++
			// Whatever the moment, the checkpoint on disk is whole and
			// never counts more bytes than the output holds.
			if cp, err := dynamo.LoadCheckpoint(rig.out() + ".checkpoint"); err == nil {
				if fi, err := os.Stat(rig.out()); err == nil && fi.Size() < cp.OutputBytes {
					t.Fatalf("after kill %d: checkpoint counts %d bytes, output has %d", landed, cp.OutputBytes, fi.Size())
				}
			} else if !os.IsNotExist(err) {
				t.Fatalf("after kill %d the checkpoint does not load: %v", landed, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("run %d: %v\n%s", attempt, err, stderr.String())
		}
		rig.wantPlainScan(t)
		rounds++
		os.Remove(rig.out())
		os.Remove(rig.out() + ".checkpoint")
	}
	if !rig.srv.Running() {
		t.Fatalf("dynalite died during the kills: %s", rig.srv.Log)
	}
	return landed, rounds
}

// Must-show: a 4-segment scan killed with SIGKILL mid-run and resumed
// gives exactly the item set of a plain scan — at 20 random moments (100
// under make soak).
func TestResumeQueryKilledAndResumedEqualsPlainScan(t *testing.T) {
	rig := newScanRig(t, "orders", 2000, 200)
	// A little latency per request spreads a run over about a second, so
	// random kills land in every phase: fetching, appending, fsync,
	// checkpoint rename.
	rig.proxy.SetRule("orders", dynalab.Rule{Delay: 8 * time.Millisecond})
	env := rqEnv()
	kills, rounds := killLoop(t, rig, env, killRuns(), 700*time.Millisecond, rig.args())
	r := krbops(t, env, rig.args()...)
	if r.code != 0 {
		t.Fatalf("final resume: exit %d\n%s\n%s", r.code, r.stderr, r.stdout)
	}
	d := rig.wantPlainScan(t)
	t.Logf("%d SIGKILLs mid-run over %d complete rounds; final output: %d items, 0 duplicates, 0 missing", kills, rounds+1, d.Got)
}

type brokerRig struct {
	*scanRig
	realm  *lab.Realm
	broker *dynalab.Broker
	keytab string
	env    []string
}

// newBrokerRig adds the lab KDC, a client principal with a keytab and a
// SPNEGO credential broker whose keys the proxy expires after
// requestsPerKey requests (announced as valid for an hour, so only the
// ExpiredTokenException tells the client).
func newBrokerRig(t *testing.T, table string, items, pad, requestsPerKey int) *brokerRig {
	t.Helper()
	return newBrokerRigWith(t, table, items, pad, func(string, int) dynalab.KeyPolicy { return dynalab.KeyPolicy{MaxRequests: requestsPerKey} })
}

// newBrokerRigWith is newBrokerRig with the broker's key policy, which
// the broker calls for every key it mints (the n-th from 1) before it
// answers: a test can hold a mint there to act "mid-run".
func newBrokerRigWith(t *testing.T, table string, items, pad int, policy func(principal string, n int) dynalab.KeyPolicy) *brokerRig {
	t.Helper()
	realm := lab.ForTest(t, lab.Options{})
	rig := newScanRig(t, table, items, pad)
	rig.proxy.RequireKnownKeys = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := dynalab.NewBroker(ctx, realm, dynalab.BrokerOptions{Proxy: rig.proxy, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := realm.AddPrincipal(ctx, "svc-export", ""); err != nil {
		t.Fatal(err)
	}
	kt := filepath.Join(rig.dir, "svc-export.keytab")
	if err := realm.Keytab(ctx, "svc-export", kt); err != nil {
		t.Fatal(err)
	}
	return &brokerRig{scanRig: rig, realm: realm, broker: b, keytab: kt, env: rqEnv("KRB5_CONFIG=" + realm.Krb5Conf)}
}

func (r *brokerRig) args(extra ...string) []string {
	return r.scanRig.args(append([]string{"--keytab", r.keytab, "--principal", "svc-export", "--credential-broker", r.broker.URL}, extra...)...)
}

// Must-show: with credentials that expire every ~5 pages, the run
// completes with the refreshes logged and exactly the item set.
func TestResumeQueryCredentialsExpiringEveryFivePages(t *testing.T) {
	rig := newBrokerRig(t, "ledger", 1500, 50, 5)
	r := krbops(t, rig.env, rig.args("--correlation-id", "inc-6")...)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%.3000s", r.code, r.stderr, r.stdout)
	}
	rig.wantPlainScan(t)
	pages, refreshes := r.sum("pages"), r.sum("refreshes")+r.prep("prepare_refreshes")
	expired := rig.proxy.Count("ledger", "ExpiredTokenException")
	minted := rig.broker.Minted("svc-export@" + rig.realm.Name)
	// Each expiry is refreshed once, and each refresh mints one key on top
	// of every worker's first. Every replaced key served exactly 5
	// requests, the last one of each worker at most 5: the successful
	// requests (the pages and one DescribeTable) lie in between.
	ok := pages + 1
	if refreshes != expired || minted != refreshes+4 || 5*refreshes > ok || ok > 5*minted || refreshes < 5 {
		t.Errorf("%d pages, %d refreshes, %d ExpiredTokenException answers, %d keys minted: not one refresh per 5 requests", pages, refreshes, expired, minted)
	}
	if rig.proxy.Count("ledger", "UnrecognizedClientException") != 0 {
		t.Error("a request was signed with a key the broker never minted")
	}
	log := rig.log(t)
	for _, want := range []string{
		`"msg":"aws error".*"segment":[0-3].*"class":"authentication".*"code":"ExpiredTokenException"`,
		`"msg":"ticket request".*"reason":"authentication-failure"`,
		`"msg":"credentials refreshed".*"segment":[0-3]`,
		`"msg":"credentials granted".*"access_key_suffix"`,
		`"msg":"ticket granted".*"end_time"`,
	} {
		if !grep(log, want) {
			t.Errorf("forensic log has no line matching %s", want)
		}
	}
	lines := strings.Split(strings.TrimSpace(log), "\n")
	refreshLines := 0
	for _, l := range lines {
		if !strings.Contains(l, `"correlation_id":"inc-6"`) {
			t.Fatalf("log line without the correlation id: %s", l)
		}
		if strings.Contains(l, `"msg":"credentials refreshed"`) {
			refreshLines++
		}
		// Secrets never reach the log: the broker's secret keys are 40
		// characters after "SecretAccessKey", tokens 64.
		if strings.Contains(l, "SecretAccessKey") || strings.Contains(l, "SessionToken") || strings.Contains(l, `"access_key_id"`) {
			t.Fatalf("log line with a secret field: %s", l)
		}
	}
	if refreshLines != refreshes {
		// Log lines count Prepare's refreshes too, like refreshes here.
		t.Errorf("%d refresh lines in the log, %d in the report", refreshLines, refreshes)
	}
	// Each worker logged in on its own: 4 initial logins at least.
	if n := strings.Count(log, `"reason":"initial"`); n < 4 {
		t.Errorf("%d initial logins, want one per worker (4)", n)
	}
	t.Logf("%d pages, %d refreshes, %d keys minted", pages, refreshes, rig.broker.Minted(""))
}

// The same crash test with credentials expiring every few pages.
func TestResumeQueryKilledWithExpiringCredentials(t *testing.T) {
	rig := newBrokerRig(t, "ledger", 1500, 200, 4)
	rig.proxy.SetRule("ledger", dynalab.Rule{Delay: 8 * time.Millisecond})
	kills, rounds := killLoop(t, rig.scanRig, rig.env, killRuns(), 700*time.Millisecond, rig.args())
	r := krbops(t, rig.env, rig.args()...)
	if r.code != 0 {
		t.Fatalf("final resume: exit %d\n%s\n%s", r.code, r.stderr, r.stdout)
	}
	d := rig.wantPlainScan(t)
	if n := rig.proxy.Count("ledger", "ExpiredTokenException"); n == 0 {
		t.Error("no credential expired during the runs")
	}
	t.Logf("%d SIGKILLs mid-run over %d complete rounds with keys expiring every 4 requests (%d expiries); final output: %d items exact",
		kills, rounds+1, rig.proxy.Count("ledger", "ExpiredTokenException"), d.Got)
}

// A ticket shorter than the run: the estimate step warns and says what
// will happen, and each worker logs in again from the keytab whenever its
// ticket has less than --ticket-margin left (logged as an expiry), without
// stopping the run.
func TestResumeQueryTicketShorterThanTheRun(t *testing.T) {
	rig := newBrokerRig(t, "long", 300, 10, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := rig.realm.Kadmin(ctx, `modprinc -maxlife "1 minute" svc-export`); err != nil {
		t.Fatal(err)
	}
	// DescribeTable says a million items: far more than a minute's work.
	rig.proxy.SetRule("long", dynalab.Rule{ItemCount: 1000000, Delay: 100 * time.Millisecond})
	r := krbops(t, rig.env, rig.args("--segments", "2", "--workers", "2", "--page-size", "10", "--ticket-margin", "59s")...)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%.3000s", r.code, r.stderr, r.stdout)
	}
	rig.wantPlainScan(t)
	var ticket, estimate string
	for _, s := range r.report.Steps {
		switch s.ID {
		case "query.ticket":
			ticket = s.Status + ": " + s.Message
			if v, _ := s.Evidence["lifetime_seconds"].(float64); v > 60 {
				t.Errorf("ticket lifetime %vs, want the principal's maxlife of 60s", v)
			}
		case "query.estimate":
			estimate = s.Status + ": " + s.Message
		}
	}
	if !strings.HasPrefix(ticket, "pass: 2 workers logged in as svc-export@KRBOPS.TEST, each with its own ticket") {
		t.Errorf("ticket step %q", ticket)
	}
	if !strings.HasPrefix(estimate, "warn: ") || !strings.Contains(estimate, "each worker will log in again from the keytab when less than 59s is left") {
		t.Errorf("estimate step %q", estimate)
	}
	log := rig.log(t)
	if !grep(log, `"msg":"ticket expiring".*"segment":[01].*"remaining_seconds"`) || !grep(log, `"msg":"ticket request".*"reason":"margin"`) {
		t.Errorf("no re-login on the ticket margin in the forensic log")
	}
	if r.report.Status != "warn" {
		t.Errorf("report status %q, want warn (exit 0)", r.report.Status)
	}
}

// Must-show: AccessDenied stops at once with exit 1 and no retry; the
// pages committed before it are kept and a resume completes exactly.
func TestResumeQueryAccessDeniedStopsAtOnce(t *testing.T) {
	rig := newScanRig(t, "secret", 1200, 20)
	rig.proxy.SetRule("secret", dynalab.Rule{Deny: true, DenyActions: []string{"Scan"}, DenyAfter: 9})
	r := krbops(t, rqEnv(), rig.args()...)
	if r.code != 1 || r.report.ExitCode != 1 {
		t.Fatalf("exit %d, want 1\n%s", r.code, r.stdout)
	}
	denied := rig.proxy.Count("secret", "AccessDeniedException")
	st := r.statuses()
	// The first denial fails its segment and stops the others; a worker
	// whose request was already in flight may be denied too (then it is
	// reported failed or stopped), but nothing is retried.
	if denied < 1 || st["fail"] < 1 || st["fail"] > denied || st["fail"]+st["skip"]+st["pass"] != 4 {
		t.Errorf("%d denials, segment statuses %v", denied, st)
	}
	if n := r.sum("retries"); n != 0 {
		t.Errorf("%d retries after a denial", n)
	}
	if scans := rig.proxy.Requests("secret", "Scan"); scans != 9+denied {
		t.Errorf("%d Scan requests, want the 9 allowed and the %d denied only", scans, denied)
	}
	var failed string
	for _, s := range r.report.Steps {
		if s.Status == "fail" {
			failed = s.Message
			if s.Evidence["action"] != "dynamodb:Scan" || s.Evidence["resource"] != "arn:aws:dynamodb:us-east-1:000000000000:table/secret" {
				t.Errorf("evidence %v", s.Evidence)
			}
		}
	}
	if !strings.Contains(failed, "access denied: dynamodb:Scan on arn:aws:dynamodb:us-east-1:000000000000:table/secret") {
		t.Errorf("failed step says %q", failed)
	}
	if !grep(rig.log(t), `"msg":"aws error".*"class":"permission".*"code":"AccessDeniedException"`) {
		t.Error("the denial is not in the forensic log")
	}
	// The policy is fixed: resuming completes, exactly.
	rig.proxy.SetRule("secret", dynalab.Rule{})
	if r := krbops(t, rqEnv(), rig.args()...); r.code != 0 {
		t.Fatalf("resume after the fix: exit %d\n%s", r.code, r.stdout)
	}
	rig.wantPlainScan(t)
}

// Must-show: throttling (and 5xx) is retried with backoff and the run
// completes with exactly the item set.
func TestResumeQueryThrottledRetriedAndCompletes(t *testing.T) {
	rig := newScanRig(t, "hot", 1200, 20)
	rig.proxy.SetRule("hot", dynalab.Rule{ThrottleRate: 0.25, ServerErrorRate: 0.1})
	r := krbops(t, rqEnv(), rig.args("--retry-budget", "1000")...)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%.3000s", r.code, r.stderr, r.stdout)
	}
	rig.wantPlainScan(t)
	injected := rig.proxy.Count("hot", "ProvisionedThroughputExceededException") + rig.proxy.Count("hot", "InternalServerError")
	if retries := r.sum("retries") + r.prep("prepare_retries"); retries == 0 || retries != injected {
		t.Errorf("%d retries for %d injected faults", retries, injected)
	}
	if !grep(rig.log(t), `"msg":"retry".*"delay_seconds"`) {
		t.Error("no retry in the forensic log")
	}
}

// A budget smaller than the faults: exit 3, and the pages committed so far
// are kept.
func TestResumeQueryRetryBudgetExhaustedExitsThree(t *testing.T) {
	rig := newScanRig(t, "melting", 300, 20)
	rig.proxy.SetRule("melting", dynalab.Rule{ServerErrorRate: 1, FaultOps: []string{"Scan"}})
	r := krbops(t, rqEnv(), rig.args("--retry-budget", "3", "--workers", "1")...)
	if r.code != 3 {
		t.Fatalf("exit %d, want 3 (retry budget)\n%s\n%s", r.code, r.stderr, r.stdout)
	}
	if !strings.Contains(r.stderr+r.stdout, "retry budget of 3 exhausted") {
		t.Errorf("no budget message:\n%s\n%s", r.stderr, r.stdout)
	}
}

// A Query of a GSI with a filter and a projection equals the SDK's own
// query with the same parameters, and --max-rcu bounds the rate.
func TestResumeQueryIndexQueryWithFilterAndProjection(t *testing.T) {
	rig := newScanRig(t, "people", 900, 20)
	values := `{":s": {"S": "active"}, ":min": {"N": "500000000"}}`
	args := []string{"--table", "people", "--index", "byStatus", "--key-condition", "#st = :s", "--filter", "nested.n >= :min",
		"--projection", "pk, sk, #t, nested.n", "--names", `{"#st": "status", "#t": "total"}`, "--values", values,
		"--page-size", "20", "--max-rcu", "200", "--endpoint-url", rig.proxy.URL, "--out", rig.out()}
	r := krbops(t, rqEnv(), args...)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%.3000s", r.code, r.stderr, r.stdout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vals, _ := dynamo.ParseValues(values)
	items, err := rig.srv.QueryAll(ctx, &dynamodb.QueryInput{TableName: aws.String("people"), IndexName: aws.String("byStatus"),
		KeyConditionExpression: aws.String("#st = :s"), FilterExpression: aws.String("nested.n >= :min"),
		ProjectionExpression:      aws.String("pk, sk, #t, nested.n"),
		ExpressionAttributeNames:  map[string]string{"#st": "status", "#t": "total"},
		ExpressionAttributeValues: vals})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := dynalab.Lines(items, dynamo.FormatJSON)
	got, err := dynalab.ReadLines(rig.out())
	if err != nil {
		t.Fatal(err)
	}
	if d := dynalab.Compare(want, got); !d.OK() || len(want) == 0 {
		t.Fatalf("query output: %s", d)
	}
	if _, ok := r.report.Steps[len(r.report.Steps)-1].Evidence["capacity_units"]; !ok {
		t.Error("no capacity units in the segment's evidence")
	}
	// A changed filter is refused with exit 2, naming it.
	args[slices.Index(args, "--filter")+1] = "nested.n < :min"
	if r := krbops(t, rqEnv(), args...); r.code != 2 || !strings.Contains(r.stderr, "--filter differs") {
		t.Errorf("changed filter: exit %d\n%s", r.code, r.stderr)
	}
}

// --max-rcu holds the whole run (all segments together) to a rate of
// read capacity, measured by what dynalite reports as consumed.
func TestResumeQueryMaxRCUBoundsTheRate(t *testing.T) {
	rig := newScanRig(t, "heavy", 300, 3000) // ~3 KiB items: about 0.5 RCU each
	r := krbops(t, rqEnv(), rig.args("--max-rcu", "40", "--page-size", "10")...)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	rig.wantPlainScan(t)
	var cu float64
	for _, s := range r.report.Steps {
		if strings.HasPrefix(s.ID, "query.segment:") {
			cu += s.Evidence["capacity_units"].(float64)
		}
	}
	var rep struct {
		DurationMS float64 `json:"duration_ms"`
	}
	json.Unmarshal([]byte(r.stdout), &rep)
	ms := rep.DurationMS
	// One second's worth may go at once, and each of the 4 workers may
	// have one page in flight when the balance runs out; the rest is
	// paid at 40 per second.
	allowance := 40 + 4*cu/float64(r.sum("pages"))
	minimum := (cu - allowance) / 40 * 1000
	if cu < 100 || ms < minimum {
		t.Errorf("%.1f capacity units in %.0fms: faster than --max-rcu 40 allows (at least %.0fms)", cu, ms, minimum)
	}
	t.Logf("%.1f capacity units in %.0fms (%.1f/s, limit 40/s)", cu, ms, cu/ms*1000)
}

// SIGINT stops at a page boundary: exit 130, the report is rendered, and
// a resume completes exactly.
func TestResumeQueryInterruptedExits130AndResumes(t *testing.T) {
	rig := newScanRig(t, "calm", 1200, 20)
	// Ten pages pass, then every request hangs until the client gives up:
	// the run cannot end before the SIGINT, however fast or slow it is.
	rig.proxy.SetRule("calm", dynalab.Rule{HoldAfter: 10})
	cmd := exec.Command(krbopsBin(t), append([]string{"resume-query", "-o", "json"}, rig.args()...)...)
	cmd.Env = rqEnv()
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once a page is committed (the checkpoint counts output).
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if cp, err := dynamo.LoadCheckpoint(rig.out() + ".checkpoint"); err == nil && cp.OutputBytes > 0 {
			break
		}
		if time.Now().After(deadline) { // a hang guard, not a timing check
			t.Fatal("no page committed within a minute")
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("exit %v, want 130\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), `"status": "cancelled"`) || !strings.Contains(out.String(), "interrupted after") {
		t.Errorf("report after SIGINT:\n%s", out.String())
	}
	cp, err := dynamo.LoadCheckpoint(rig.out() + ".checkpoint")
	if err != nil || cp.Done() || cp.OutputBytes == 0 {
		t.Fatalf("checkpoint after SIGINT: %v (done %v, %d bytes)", err, cp != nil && cp.Done(), cp.OutputBytes)
	}
	if fi, _ := os.Stat(rig.out()); fi.Size() != cp.OutputBytes {
		t.Errorf("an orderly stop left %d bytes, the checkpoint counts %d", fi.Size(), cp.OutputBytes)
	}
	rig.proxy.SetRule("calm", dynalab.Rule{}) // no more holding
	if r := krbops(t, rqEnv(), rig.args()...); r.code != 0 {
		t.Fatalf("resume: exit %d\n%s", r.code, r.stderr)
	}
	rig.wantPlainScan(t)
}

// moto denies with HTTP 403 and an XML body, not DynamoDB's JSON: a
// permission error all the same, exit 1, naming the action and the table.
func TestResumeQueryMotoAccessDeniedXML(t *testing.T) {
	m := motolab.ForTest(t, motolab.Options{EnforceIAM: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := dynamodb.NewFromConfig(m.Config())
	if _, err := admin.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String("vault"),
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS}},
		BillingMode:          types.BillingModePayPerRequest}); err != nil {
		t.Fatal(err)
	}
	creds, err := m.CreateUser(ctx, "reader", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dynamodb:DescribeTable","Resource":"*"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	env := append(rqEnv(), "AWS_ACCESS_KEY_ID="+creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+creds.SecretAccessKey)
	out := filepath.Join(t.TempDir(), "vault.jsonl")
	r := krbops(t, env, "--table", "vault", "--scan", "--endpoint-url", m.Endpoint, "--out", out)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", r.code, r.stderr, r.stdout)
	}
	if !strings.Contains(r.stderr, "krbops: access denied: dynamodb:Scan on arn:aws:dynamodb:us-east-1:") || !strings.Contains(r.stderr, "(AccessDenied)") ||
		!strings.Contains(r.stderr, "hint: grant dynamodb:Scan") {
		t.Errorf("stderr:\n%s", r.stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a run denied before its first page left an output file (%v)", err)
	}
}

// grep reports whether a line of text matches pattern.
func grep(text, pattern string) bool {
	return regexp.MustCompile("(?m)" + pattern).MatchString(text)
}

// holdMint returns a broker key policy (keys expire every perKey
// requests) that, at the at-th key minted, hands the test a turn: it
// sends on the returned channel and waits until the test closes the
// channel it received. "Mid-run" is thereby a count of committed work
// (every mint after the workers' first follows an expiry every perKey
// pages), never a duration.
func holdMint(at, perKey int) (func(string, int) dynalab.KeyPolicy, <-chan chan struct{}) {
	turn := make(chan chan struct{}, 1)
	return func(_ string, n int) dynalab.KeyPolicy {
		if n == at {
			done := make(chan struct{})
			turn <- done
			<-done
		}
		return dynalab.KeyPolicy{MaxRequests: perKey}
	}, turn
}

// midRun runs krbops resume-query with args, calls act when the broker
// hands the test its turn (holdMint), lets the run go on, and checks
// that it completed with exactly the table's items.
func midRun(t *testing.T, rig *brokerRig, turn <-chan chan struct{}, args []string, act func()) (*rqRun, dynalab.Diff) {
	t.Helper()
	result := make(chan *rqRun, 1)
	go func() { result <- krbops(t, rig.env, args...) }()
	select {
	case done := <-turn:
		act()
		close(done)
	case r := <-result:
		t.Fatalf("the run ended before the test's turn: exit %d\n%s", r.code, r.stderr)
	}
	r := <-result
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%.3000s", r.code, r.stderr, r.stdout)
	}
	return r, rig.wantPlainScan(t)
}

// Must-show: the principal is rotated mid-run — its key changed at the
// KDC and the keytab on disk replaced, as a rotation does — under short
// tickets and credentials that expire every five pages. Every later
// login reads the new keytab; the run completes with the exact item set
// (0 duplicates, 0 missing) and the log shows the kvno change.
func TestResumeQuerySurvivesARotationMidRun(t *testing.T) {
	policy, turn := holdMint(7, 5)
	rig := newBrokerRigWith(t, "rotated", 1500, 50, policy)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := rig.realm.Kadmin(ctx, `modprinc -maxlife "1 minute" svc-export`); err != nil {
		t.Fatal(err)
	}
	before, err := rig.realm.KVNO(ctx, "svc-export")
	if err != nil {
		t.Fatal(err)
	}
	r, d := midRun(t, rig, turn, rig.args("--ticket-margin", "59s", "--correlation-id", "rot-1"), func() {
		// The rotation: ktadd gives the principal a new random key and
		// writes it to a new file, which then replaces the keytab in one
		// rename.
		next := filepath.Join(rig.dir, "svc-export.keytab.new")
		if err := rig.realm.Keytab(ctx, "svc-export", next); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(next, rig.keytab); err != nil {
			t.Fatal(err)
		}
	})
	after, _ := rig.realm.KVNO(ctx, "svc-export")
	log := rig.log(t)
	if after == before {
		t.Fatalf("kvno %d before and after: no rotation happened", after)
	}
	for _, want := range []string{
		`"msg":"keytab kvno changed".*"old_kvno":` + strconv.Itoa(int(before)) + `,"new_kvno":` + strconv.Itoa(int(after)),
		`"msg":"ticket granted".*"kvno":` + strconv.Itoa(int(after)),
		`"msg":"credentials refreshed"`,
	} {
		if !grep(log, want) {
			t.Errorf("forensic log has no line matching %s", want)
		}
	}
	if grep(log, `"msg":"ticket fallback"`) {
		t.Error("a fallback without a fallback principal")
	}
	t.Logf("rotated kvno %d -> %d mid-run; %d items exact, %d refreshes, %d kept tickets", before, after, d.Got,
		r.sum("refreshes"), strings.Count(log, `"msg":"ticket kept"`))
}

// Must-show: the primary keytab is made unusable mid-run (overwritten
// with garbage) and a fallback principal is given: workers that log in
// again do so as the fallback, the log and the report say so, and the
// run completes with the exact item set.
func TestResumeQueryFallsBackWhenThePrimaryKeytabBreaks(t *testing.T) {
	policy, turn := holdMint(7, 5)
	rig := newBrokerRigWith(t, "fallback", 1500, 50, policy)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := rig.realm.AddPrincipal(ctx, "svc-standby", ""); err != nil {
		t.Fatal(err)
	}
	standby := filepath.Join(rig.dir, "svc-standby.keytab")
	if err := rig.realm.Keytab(ctx, "svc-standby", standby); err != nil {
		t.Fatal(err)
	}
	args := rig.args("--fallback-keytab", standby, "--fallback-principal", "svc-standby", "--correlation-id", "fb-1")
	r, d := midRun(t, rig, turn, args, func() {
		if err := os.WriteFile(rig.keytab, []byte("\x05\x02garbage, not a keytab"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if n := rig.broker.Minted("svc-standby@" + rig.realm.Name); n == 0 {
		t.Error("the broker never saw the fallback principal")
	}
	log := rig.log(t)
	if !grep(log, `"msg":"ticket fallback".*"principal":"svc-standby@KRBOPS.TEST".*"primary":"svc-export@KRBOPS.TEST".*"primary_error":"keytab .*not a readable keytab`) {
		t.Errorf("no ticket fallback record in the log:\n%s", log)
	}
	if r.report.Status != "warn" {
		t.Errorf("report status %q, want warn: a fallback is worth the on-call's attention", r.report.Status)
	}
	fell := 0
	for _, s := range r.report.Steps {
		if v, _ := s.Evidence["fallback_logins"].(float64); v > 0 {
			fell++
			if s.Status != "warn" || !strings.Contains(s.Message, "fell back to svc-standby@KRBOPS.TEST") {
				t.Errorf("step %s: %s %q", s.ID, s.Status, s.Message)
			}
		}
	}
	if fell == 0 {
		t.Errorf("no segment step reports the fallback:\n%s", r.stdout)
	}
	t.Logf("%d items exact; %d segment steps on the fallback; %d keys minted to svc-standby", d.Got, fell, rig.broker.Minted("svc-standby@"+rig.realm.Name))
}
