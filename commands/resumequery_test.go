package commands

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/krbops/krbops/dynamo"
	"github.com/krbops/krbops/internal/fault"
)

func parseRQ(t *testing.T, env map[string]string, args ...string) (*ResumeQueryOptions, error) {
	t.Helper()
	io, _, _ := lintStreams(env)
	g := &Globals{IO: io}
	var got *ResumeQueryOptions
	cmd := NewCmdResumeQuery(g, func(_ context.Context, o *ResumeQueryOptions) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	return got, cmd.Execute()
}

func TestResumeQueryFlags(t *testing.T) {
	o, err := parseRQ(t, map[string]string{"AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:8000"},
		"--table", "orders", "--scan", "--segments", "12", "--out", "o.jsonl", "--filter", "#s = :s",
		"--names", `{"#s":"status"}`, "--values", `{":s":{"S":"open"}}`, "--page-size", "100", "--max-rcu", "50")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := o.config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Workers != 8 || cfg.Format != dynamo.FormatJSON || cfg.TicketMargin != 10*time.Minute || cfg.RetryBudget != 50 ||
		cfg.Endpoint != "http://127.0.0.1:8000" || cfg.Spec.Segments != 12 || cfg.Spec.PageSize != 100 || cfg.MaxRCU != 50 ||
		cfg.Spec.Names["#s"] != "status" || cfg.Kerberos != nil {
		t.Errorf("config %+v", cfg)
	}
	if v, ok := cfg.Spec.Values[":s"].(*types.AttributeValueMemberS); !ok || v.Value != "open" {
		t.Errorf("values %v", cfg.Spec.Values)
	}
	o, err = parseRQ(t, map[string]string{"AWS_ENDPOINT_URL_DYNAMODB": "http://env"}, "--table", "t", "--key-condition", "pk = :p",
		"--values", `{":p":{"S":"a"}}`, "--out", "o", "--endpoint-url", "http://flag", "--keytab", "k.kt",
		"--principal", "svc@R", "--credential-broker", "https://b/creds")
	if err != nil {
		t.Fatal(err)
	}
	o.Krb5Config = "/x/krb5.conf" // a global flag
	cfg, _ = o.config()
	if cfg.Endpoint != "http://flag" || cfg.Workers != 1 || cfg.Kerberos == nil || cfg.Kerberos.Krb5Conf != "/x/krb5.conf" ||
		cfg.Broker != "https://b/creds" || cfg.Spec.Scan {
		t.Errorf("kerberos config %+v %+v", cfg, cfg.Kerberos)
	}
}

func TestResumeQueryUsageErrors(t *testing.T) {
	base := []string{"--table", "t", "--out", "o"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--out", "o", "--scan"}, "--table is required"},
		{[]string{"--table", "t", "--scan"}, "--out is required"},
		{append(base, "--filter", "x"), "a query needs --key-condition"},
		{append(base, "--scan", "--key-condition", "pk = :p"), "--key-condition is for a query"},
		{append(base, "--key-condition", "pk = :p", "--segments", "4"), "--segments is for a --scan"},
		{append(base, "--scan", "--segments", "2", "--workers", "3"), "--workers 3 must be between 1 and --segments 2"},
		{append(base, "--scan", "--values", `{":a": 1}`), "--values is not DynamoDB JSON"},
		{append(base, "--scan", "--values", `{"a": {"S": "x"}}`), `placeholder "a" must start with ':'`},
		{append(base, "--scan", "--format", "csv"), `--format "csv"`},
		{append(base, "--scan", "--keytab", "k"), "--keytab, --principal and --credential-broker go together"},
		{append(base, "--scan", "--broker-spn", "HTTP/x"), "--broker-spn needs --credential-broker"},
		{append(base, "--scan", "--ticket-margin", "0s"), "--ticket-margin must be positive"},
		{append(base, "--scan", "--ticket-margin", "5m"), "--ticket-margin is for Kerberos-backed credentials (--keytab)"},
		{append(base, "--scan", "--retry-budget", "-1"), "--retry-budget -1"},
	} {
		_, err := parseRQ(t, nil, tc.args...)
		var ee *fault.Error
		if !errors.As(err, &ee) || ee.Class != fault.Usage || !strings.Contains(err.Error(), tc.want) || ee.Hint == "" {
			t.Errorf("%v: err %v, want exit 2 with %q and a hint", tc.args, err, tc.want)
		}
	}
}

func TestPrepareErrorExitCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{&dynamo.BindingError{Checkpoint: "c", Diffs: []dynamo.Difference{{Field: "Spec.Filter"}}}, fault.ExitUsage},
		{&dynamo.FieldError{Field: "Spec.Table", Msg: "table t not found"}, fault.ExitUsage},
		{&dynamo.RequestError{Operation: "DescribeTable", Detail: dynamo.Classified{Class: dynamo.ClassTLS}, CustomEndpoint: true}, fault.ExitUsage},
		{&dynamo.RequestError{Operation: "DescribeTable", Detail: dynamo.Classified{Class: dynamo.ClassTLS}}, fault.ExitUnreachable},
		{&dynamo.BrokerError{Class: dynamo.ClassTLS}, fault.ExitUsage},
		{&dynamo.CheckpointError{Path: "c", Msg: "bad"}, fault.ExitUsage},
		{&dynamo.ConfigError{Err: errors.New("x")}, fault.ExitUsage},
		{&dynamo.RequestError{Operation: "Scan", Detail: dynamo.Classified{Class: dynamo.ClassInvalid, Code: "ValidationException"}}, fault.ExitUsage},
		{&dynamo.PermissionError{Action: "dynamodb:DescribeTable", Resource: "table/t"}, fault.ExitCheckFailed},
		{&dynamo.AuthError{}, fault.ExitCheckFailed},
		{&dynamo.KerberosError{Reason: "KDC_ERR_PREAUTH_FAILED"}, fault.ExitCheckFailed},
		{&dynamo.KerberosError{Unreachable: true}, fault.ExitUnreachable},
		{&dynamo.BrokerError{Class: dynamo.ClassPermission}, fault.ExitCheckFailed},
		{&dynamo.BrokerError{Class: dynamo.ClassTransient}, fault.ExitUnreachable},
		{&dynamo.BudgetError{Budget: 3}, fault.ExitUnreachable},
		{&dynamo.RequestError{Operation: "DescribeTable", Detail: dynamo.Classified{Class: dynamo.ClassTransient}}, fault.ExitUnreachable},
	} {
		if got := fault.ExitCode(fault.ClassOf(prepareError(context.Background(), tc.err))); got != tc.code {
			t.Errorf("%T %v: exit %d, want %d", tc.err, tc.err, got, tc.code)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := fault.ExitCode(fault.ClassOf(prepareError(ctx, context.Canceled))); got != fault.ExitCancelled {
		t.Errorf("cancelled: exit %d", got)
	}
}

// tinyTable is a DynamoDB stand-in with n items in one segment.
type tinyTable struct {
	n     int
	delay time.Duration
	// gate, when set, holds every Scan after the first until it closes:
	// a test opens it once what it waits for (a progress line) happened.
	gate  chan struct{}
	mu    sync.Mutex
	fail  string // error code for every Scan after the probe
	scans int
}

func (f *tinyTable) DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	return &dynamodb.DescribeTableOutput{Table: &types.TableDescription{TableArn: aws.String("arn:aws:dynamodb:us-east-1:1:table/t"),
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS}},
		ItemCount:            aws.Int64(int64(f.n))}}, nil
}

func (f *tinyTable) Scan(ctx context.Context, in *dynamodb.ScanInput, _ ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	f.mu.Lock()
	f.scans++
	n := f.scans
	f.mu.Unlock()
	if f.fail != "" && n > 1 {
		return nil, &smithy.GenericAPIError{Code: f.fail, Message: "User: x is not authorized to perform: dynamodb:Scan"}
	}
	if f.gate != nil && n > 1 {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	time.Sleep(f.delay)
	start := 0
	if k, ok := in.ExclusiveStartKey["pk"].(*types.AttributeValueMemberS); ok {
		fmt.Sscanf(k.Value, "k%d", &start)
		start++
	}
	out := &dynamodb.ScanOutput{}
	for i := start; i < f.n && i < start+2; i++ {
		out.Items = append(out.Items, map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: fmt.Sprintf("k%d", i)}})
		out.ScannedCount++
		if i < f.n-1 && i == start+1 {
			out.LastEvaluatedKey = map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: fmt.Sprintf("k%d", i)}}
		}
	}
	out.Count = out.ScannedCount
	return out, nil
}

func (f *tinyTable) Query(context.Context, *dynamodb.QueryInput, ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	return nil, errors.New("not used")
}

// runRQ runs resume-query end to end against table, with stderr a
// terminal or not.
func runRQ(t *testing.T, table *tinyTable, errTTY bool, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	date := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(date.Close)
	var out bytes.Buffer
	errOut := &watchWriter{want: "items/s", seen: table.gate}
	io := &IOStreams{Out: &out, ErrOut: errOut, ErrTTY: errTTY, Getenv: func(string) string { return "" }}
	g := &Globals{IO: io, Timeout: 5 * time.Second}
	// -o and --quiet are the root command's flags.
	var rest []string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-o":
			g.Output = args[i+1]
			i++
		case "--quiet":
			g.Quiet = true
		default:
			rest = append(rest, args[i])
		}
	}
	args = rest
	cmd := NewCmdResumeQuery(g, func(ctx context.Context, o *ResumeQueryOptions) error {
		o.ProgressEvery = 5 * time.Millisecond
		o.Prepare = func(ctx context.Context, cfg dynamo.Config) (*dynamo.Plan, error) {
			cfg.NewAPI = func(int) dynamo.API { return table }
			cfg.Endpoint = date.URL
			return dynamo.Prepare(ctx, cfg)
		}
		if err := g.setup(); err != nil {
			return err
		}
		defer g.close(nil, 0)
		return resumeQueryRun(ctx, o)
	})
	dir := t.TempDir()
	cmd.SetArgs(append([]string{"--table", "t", "--scan", "--out", filepath.Join(dir, "o.jsonl")}, args...))
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// watchWriter is a stderr that closes seen the first time want is written
// to it, so a test can hold the run until its progress line appeared
// instead of hoping a ticker fires in time.
type watchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if w.seen != nil && strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return n, err
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestResumeQueryReportAndProgress(t *testing.T) {
	// The scan waits after its first page until the progress line is on
	// stderr: the line is proven to appear during a run, on any machine.
	table := &tinyTable{n: 9, gate: make(chan struct{})}
	_, stderr, err := runRQ(t, table, true, "-o", "plain")
	if err != nil {
		t.Fatal(err)
	}
	// On a terminal: the status line, cleared before each step line.
	if !strings.Contains(stderr, "items/s") || !strings.Contains(stderr, "0/1 segments done") || !strings.Contains(stderr, clearLine) {
		t.Errorf("no progress on a terminal's stderr:\n%q", stderr)
	}
	if !strings.Contains(stderr, "query.segment:0") {
		t.Errorf("no step lines:\n%q", stderr)
	}

	stdout, stderr, err := runRQ(t, &tinyTable{n: 9}, true, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if stderr != "" {
		t.Errorf("-o json wrote progress: %q", stderr)
	}
	var rep struct {
		Steps []struct {
			ID       string
			Status   string
			Evidence map[string]any
		}
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range rep.Steps {
		ids = append(ids, s.ID+"="+s.Status)
	}
	if got := strings.Join(ids, " "); got != "query.table=pass query.aws-clock=pass query.estimate=pass query.segment:0=pass" {
		t.Errorf("steps %s", got)
	}
	if ev := rep.Steps[3].Evidence; ev["items"] != 9.0 || ev["pages"] != 5.0 || ev["retries"] != 0.0 || ev["refreshes"] != 0.0 {
		t.Errorf("segment evidence %v", ev)
	}

	_, stderr, _ = runRQ(t, &tinyTable{n: 9, delay: 15 * time.Millisecond}, false, "-o", "plain")
	if stderr != "" {
		t.Errorf("stderr not a terminal, yet: %q", stderr)
	}
	_, stderr, _ = runRQ(t, &tinyTable{n: 9, delay: 15 * time.Millisecond}, true, "-o", "plain", "--quiet")
	if strings.Contains(stderr, "segments done") {
		t.Errorf("--quiet showed progress: %q", stderr)
	}
}

func TestResumeQueryDeniedMidRunExitsOne(t *testing.T) {
	stdout, _, err := runRQ(t, &tinyTable{n: 9, fail: "AccessDeniedException"}, false, "-o", "json")
	if code := fault.ExitCode(fault.ClassOf(err)); code != fault.ExitCheckFailed {
		t.Fatalf("exit %d (%v), want 1", code, err)
	}
	for _, want := range []string{`"status": "fail"`, `access denied: dynamodb:Scan on arn:aws:dynamodb:us-east-1:1:table/t`, `"action": "dynamodb:Scan"`, `"retries": 0`,
		// The segment's hint is worded in flags here, not in dynamo.
		`"hint": "grant dynamodb:Scan on arn:aws:dynamodb:us-east-1:1:table/t to the identity krbops runs as (see --log-file for the service's message)`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %s:\n%s", want, stdout)
		}
	}
}

func TestStatusWriterClearsBeforeOtherOutput(t *testing.T) {
	var b bytes.Buffer
	sw := &statusWriter{w: &b}
	sw.status("  query 1 items")
	sw.status("  query 2 items")
	fmt.Fprintf(sw, "  pass  query.segment:0\n")
	sw.clear()
	want := clearLine + "  query 1 items" + clearLine + "  query 2 items" + clearLine + "  pass  query.segment:0\n"
	if b.String() != want {
		t.Errorf("got %q\nwant %q", b.String(), want)
	}
}

// dynamo names Config fields; resume-query's messages and hints name the
// flags that set them.
func TestPrepareErrorsAreWordedInFlags(t *testing.T) {
	for _, tc := range []struct {
		err       error
		msg, hint string
	}{
		{&dynamo.BindingError{Checkpoint: "c", Diffs: []dynamo.Difference{{Field: "Spec.Filter"}, {Field: "Spec.Segments", Was: "2", Now: "4"}, {Field: "Operation", Was: "Scan", Now: "Query"}}},
			"checkpoint c was written for a different run: --filter differs; TotalSegments (--segments) was 2, now 4; operation (--scan) was Scan, now Query",
			"resume with the flags of the run that wrote the checkpoint"},
		{&dynamo.FieldError{Field: "Spec.Table", Msg: "table t not found (region r, endpoint e)", Help: "check {Spec.Table}, {Region} and {Endpoint}"},
			"table t not found (region r, endpoint e)", "check --table, --region and --endpoint-url"},
		{&dynamo.BudgetError{Budget: 2, Last: dynamo.Classified{Code: "ThrottlingException"}},
			"retry budget of 2 exhausted; last error: ThrottlingException", "lower --max-rcu or --workers"},
		{&dynamo.RequestError{Operation: "Scan", Detail: dynamo.Classified{Class: dynamo.ClassInvalid, Code: "ValidationException", Message: "bad"}},
			"dynamodb Scan rejected: ValidationException: bad", "--key-condition, --filter"},
		{&dynamo.RequestError{Operation: "DescribeTable", CustomEndpoint: true, Detail: dynamo.Classified{Class: dynamo.ClassTLS,
			TLSHost: "127.0.0.1:4443", TLSReason: "unknown-authority", Message: "the server at 127.0.0.1:4443 presents a certificate signed by an unknown authority"}},
			"dynamodb DescribeTable failed: the server at 127.0.0.1:4443 presents a certificate signed by an unknown authority",
			"the server at 127.0.0.1:4443 presents a certificate signed by an unknown authority: point --ca-bundle at the CA's PEM file or add the CA to the system trust store (AWS_CA_BUNDLE reaches the DynamoDB requests but not the broker or the query.aws-clock step)"},
		{&dynamo.AuthError{Detail: dynamo.Classified{Code: "InvalidSignatureException", Message: "Signature expired: 20200101T000000Z is now earlier than ..."}},
			"authentication failed again", "krbops clock-check --aws-endpoint"},
	} {
		err := prepareError(context.Background(), tc.err)
		var ee *fault.Error
		if !errors.As(err, &ee) || !strings.HasPrefix(err.Error(), tc.msg) || !strings.Contains(ee.Hint, tc.hint) {
			t.Errorf("%T:\n got %q\n     hint %q\nwant %q\n     hint with %q", tc.err, err, ee.Hint, tc.msg, tc.hint)
		}
		// The typed error is still there to match.
		if !errors.As(err, new(interface{ Hint() string })) {
			t.Errorf("%T: the dynamo error is no longer in the chain", tc.err)
		}
	}
}
