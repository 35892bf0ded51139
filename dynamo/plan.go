package dynamo

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/logging"

	"github.com/krbops/krbops/internal/cabundle"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/readcap"
	"github.com/krbops/krbops/kdcops/keylogin"
)

// API is the part of the DynamoDB client a run uses; tests replace it.
type API interface {
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
	Query(context.Context, *dynamodb.QueryInput, ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
}

// KerberosConfig selects a Kerberos-backed identity: every worker logs in
// from Keytab as Principal with its own client.
type KerberosConfig struct {
	Keytab    string
	Principal string
	Krb5Conf  string
	// FallbackKeytab and FallbackPrincipal, when set, log a worker in
	// when Principal fails with a key error (rotated, removed, keytab
	// unusable): see keylogin.
	FallbackKeytab    string
	FallbackPrincipal string
}

// Config is everything Prepare needs. Its fields are what a FieldError
// names ("Workers", "Spec.Table").
type Config struct {
	Spec       Spec
	Format     Format
	Out        string // JSON lines output
	Checkpoint string
	Workers    int // ≤ Spec.Segments

	Region   string
	Endpoint string // "" for AWS's (or the SDK's AWS_ENDPOINT_URL*, profile endpoint_url)
	Profile  string

	// Kerberos and Broker together replace the standard credential chain:
	// each worker gets its credentials from Broker with SPNEGO.
	Kerberos     *KerberosConfig
	Broker       string // URL
	BrokerSPN    string // default HTTP/<broker host>
	TicketMargin time.Duration
	// CABundle is a PEM file whose CAs every HTTPS request of the run
	// trusts (the SDK's, the broker's, the clock probe's) on top of the
	// system's.
	CABundle string

	MaxRCU      float64 // 0: no limit
	RetryBudget int
	Backoff     Backoff
	Timeout     time.Duration // one request
	Log         *slog.Logger

	// NewAPI replaces the DynamoDB client of a worker (unit tests). The
	// worker then has no credentials cache of its own.
	NewAPI func(worker int) API
}

// errLocked: another process holds the checkpoint's lock.
var errLocked = errors.New("locked by another process")

// ConfigError is a usage or configuration problem found before anything
// was read that no single Config field explains (a checkpoint locked by
// another run, an expression DynamoDB rejects); see also FieldError.
type ConfigError struct {
	Err      error
	HintText string
}

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Hint says what to do next.
func (e *ConfigError) Hint() string { return e.HintText }

// FaultClass: the invocation or local configuration must change
// (fault.Usage).
func (e *ConfigError) FaultClass() fault.Class { return fault.Usage }

// Validate checks what can be checked before anything is opened or
// asked: the Spec, and the Config values that go with it. Workers 0 (one
// per segment) is accepted; Prepare gives TicketMargin its default before
// it validates. Its errors are *FieldError.
func (c Config) Validate() error {
	if err := c.Spec.Validate(); err != nil {
		return err
	}
	bad := func(field, msg, help string) error { return &FieldError{Field: field, Msg: msg, Help: help} }
	switch {
	case c.Workers < 0 || c.Workers > c.Spec.Segments:
		return bad("Workers", fmt.Sprintf("{Workers} %d must be between 1 and {Spec.Segments} %d", c.Workers, c.Spec.Segments),
			"a worker reads one segment at a time: more workers than segments would idle")
	case c.Out == "":
		return bad("Out", "{Out} is required", "items are written as JSON lines to {Out}")
	case c.MaxRCU < 0:
		return bad("MaxRCU", fmt.Sprintf("{MaxRCU} %g must not be negative", c.MaxRCU), "0 means no limit")
	case c.RetryBudget < 0:
		return bad("RetryBudget", fmt.Sprintf("{RetryBudget} %d must not be negative", c.RetryBudget), "for example {RetryBudget} 50")
	case c.TicketMargin <= 0:
		return bad("TicketMargin", "{TicketMargin} must be positive", "for example {TicketMargin} 10m")
	}
	k := c.Kerberos
	if k != nil || c.Broker != "" {
		if k == nil || k.Keytab == "" || k.Principal == "" || c.Broker == "" {
			return bad("Kerberos", "{Kerberos.Keytab}, {Kerberos.Principal} and {Broker} go together",
				"the keytab's ticket is what the broker exchanges for AWS credentials: pass all three, or none for the standard AWS chain")
		}
	}
	if k != nil && (k.FallbackKeytab == "") != (k.FallbackPrincipal == "") {
		return bad("Kerberos.FallbackKeytab", "{Kerberos.FallbackKeytab} and {Kerberos.FallbackPrincipal} go together",
			"the fallback is a second principal and its own keytab: pass both, or neither")
	}
	if c.BrokerSPN != "" && c.Broker == "" {
		return bad("BrokerSPN", "{BrokerSPN} needs {Broker}", "pass {Broker} URL")
	}
	return nil
}

// TableInfo is what DescribeTable said about the table.
type TableInfo struct {
	Name      string
	ARN       string
	Index     string
	KeySchema string
	ItemCount int64
	SizeBytes int64
}

// Resource is the IAM resource a read is authorised on: the index's ARN
// for an index, else the table's.
func (t TableInfo) Resource() string {
	if t.Index != "" {
		return t.ARN + "/index/" + t.Index
	}
	return t.ARN
}

// Worker is one reader: its own DynamoDB client, credentials cache and
// (Kerberos-backed) login. A worker reads one segment at a time.
type Worker struct {
	ID    int
	API   API
	Creds *aws.CredentialsCache // nil with Config.NewAPI
	Krb   *KerberosLogin        // nil with the standard chain
	Log   *slog.Logger
}

// Probe describes the first pages Prepare read (one per worker, at once),
// to have DynamoDB check the request and to measure how long a page takes;
// Latency and Scanned are the slowest page's. The run commits each page as
// its segment's next one.
type Probe struct {
	Latency time.Duration
	Scanned int64
	Last    bool // the probe reached the end of its segment
}

// Plan is a prepared run: the table is described, the checkpoint loaded
// (or new) and bound, and one page measured. Close it when done.
type Plan struct {
	cfg      Config
	Table    TableInfo
	Binding  Binding
	Resumed  bool // a checkpoint was loaded
	Probe    *Probe
	Workers  []*Worker
	endpoint string
	region   string
	// customEndpoint: the operator chose the endpoint (not AWS's default).
	customEndpoint bool
	tls            *tls.Config // --ca-bundle's; nil: default trust

	cp       *Checkpoint // the run's working copy; guarded by commit.mu during Run
	start    *Checkpoint // as loaded, for the report
	cpOnDisk bool
	lock     *os.File

	limiter *RateLimiter
	budget  *RetryBudget
	backoff Backoff

	runOnce sync.Once
	result  *RunResult
	session *Session // the run Begin opened, closed with the plan
	prog    progress

	// prep counts the retries and refreshes of Prepare's requests.
	prep SegmentResult

	probeMu    sync.Mutex
	probePages map[int]*page // by segment
}

// PrepareStats are the retries and refreshes Prepare's own requests
// (DescribeTable, the first page) needed.
func (p *Plan) PrepareStats() (retries, refreshes int) { return p.prep.Retries, p.prep.Refreshes }

// Prepare checks cfg, takes the checkpoint's lock, logs worker 0 in (for
// a Kerberos-backed run), describes the table, loads the checkpoint and
// refuses it if it was written for another run, and reads the first page
// of up to one unfinished segment per worker. Nothing is written to the
// output.
func Prepare(ctx context.Context, cfg Config) (_ *Plan, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Spec.Segments == 0 {
		cfg.Spec.Segments = 1
	}
	if cfg.Format == "" {
		cfg.Format = FormatJSON
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Backoff.Base <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.TicketMargin == 0 {
		cfg.TicketMargin = 10 * time.Minute
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Workers == 0 {
		cfg.Workers = cfg.Spec.Segments
	}
	out, err := filepath.Abs(cfg.Out)
	if err != nil {
		return nil, &ConfigError{Err: err}
	}
	cfg.Out = out
	// Opening a FIFO for writing waits for a reader: refuse it (and a
	// device) here rather than hang before the first page.
	if fi, err := os.Stat(out); err == nil && !fi.Mode().IsRegular() {
		return nil, &FieldError{Field: "Out", Msg: fmt.Sprintf("{Out} %s: it is a %s, not a regular file", out, readcap.DescribeMode(fi.Mode())),
			Help: "write the output to a regular file (a resumable run truncates it to the last committed page)"}
	}
	if cfg.Checkpoint == "" {
		cfg.Checkpoint = out + ".checkpoint"
	}
	if cfg.Checkpoint, err = filepath.Abs(cfg.Checkpoint); err != nil {
		return nil, &ConfigError{Err: err}
	}
	if cfg.Checkpoint == cfg.Out {
		return nil, &FieldError{Field: "Checkpoint", Msg: "{Checkpoint} and {Out} are the same file", Help: "give the checkpoint its own path"}
	}

	p := &Plan{cfg: cfg, budget: NewRetryBudget(cfg.RetryBudget), backoff: cfg.Backoff, limiter: NewRateLimiter(cfg.MaxRCU)}
	lockPath := cfg.Checkpoint + ".lock"
	_, statErr := os.Stat(lockPath)
	newLock := errors.Is(statErr, fs.ErrNotExist)
	defer func() {
		if err == nil {
			return
		}
		// A run that fails before its first commit leaves nothing behind:
		// no checkpoint, so not the lock file it created either.
		if _, cerr := os.Stat(cfg.Checkpoint); newLock && p.lock != nil && errors.Is(cerr, fs.ErrNotExist) {
			os.Remove(lockPath)
		}
		p.Close()
	}()
	if p.lock, err = lockFile(lockPath); err != nil {
		if errors.Is(err, errLocked) {
			return nil, &ConfigError{Err: fmt.Errorf("checkpoint %s is in use by another krbops run (lock %s)", cfg.Checkpoint, lockPath),
				HintText: "wait for that run to finish, or stop it; two runs on one checkpoint would write the same pages twice"}
		}
		return nil, &FieldError{Field: "Checkpoint", Msg: fmt.Sprintf("checkpoint %s: %s", cfg.Checkpoint, describeFileErr(err)),
			Help: "put the {Checkpoint} in a writable directory"}
	}
	if err := p.loadCheckpoint(); err != nil {
		return nil, err
	}
	if err := p.buildWorkers(ctx); err != nil {
		return nil, err
	}
	w0 := p.Workers[0]
	if w0.Krb != nil {
		if err := w0.Krb.Login(withLog(ctx, w0.Log), "initial"); err != nil {
			return nil, err
		}
	}
	if err := p.describe(ctx, w0); err != nil {
		return nil, err
	}
	if p.cp != nil {
		if diffs := p.cp.Binding.Diff(p.Binding); len(diffs) > 0 {
			return nil, &BindingError{Checkpoint: cfg.Checkpoint, Diffs: diffs}
		}
		if err := p.checkOutput(); err != nil {
			return nil, err
		}
	} else {
		p.cp = NewCheckpoint(p.Binding)
	}
	p.start = cloneCheckpoint(p.cp)
	if !p.cp.Done() {
		if err := p.probe(ctx); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *Plan) loadCheckpoint() error {
	cp, err := LoadCheckpoint(p.cfg.Checkpoint)
	outInfo, statErr := os.Stat(p.cfg.Out)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// A fresh run: an existing non-empty output is someone's data,
		// and appending to it would break "output = the item set".
		if statErr == nil && outInfo.Size() > 0 {
			return &FieldError{Field: "Out", Msg: fmt.Sprintf("{Out} %s already has data but there is no checkpoint %s", p.cfg.Out, p.cfg.Checkpoint),
				Help: "pass the {Checkpoint} of the run that wrote it, or remove the file, or pick another {Out}"}
		}
		return nil
	case err != nil:
		return err
	}
	p.cp, p.Resumed, p.cpOnDisk = cp, true, true
	return nil
}

// checkOutput runs after the binding check (which names a changed output
// better than a size mismatch would): the output must still hold every
// committed byte.
func (p *Plan) checkOutput() error {
	if !p.Resumed {
		return nil
	}
	cp := p.cp
	outInfo, statErr := os.Stat(p.cfg.Out)
	size := int64(0)
	if statErr == nil {
		size = outInfo.Size()
	} else if !errors.Is(statErr, os.ErrNotExist) {
		return &FieldError{Field: "Out", Msg: fmt.Sprintf("{Out} %s: %s", p.cfg.Out, describeFileErr(statErr))}
	}
	if size < cp.OutputBytes {
		return &CheckpointError{Path: p.cfg.Checkpoint, Msg: fmt.Sprintf("records %d committed bytes but the output %s has %d: the output was changed or replaced since", cp.OutputBytes, p.cfg.Out, size)}
	}
	return nil
}

func cloneCheckpoint(cp *Checkpoint) *Checkpoint {
	c := *cp
	c.Segments = append([]SegmentState(nil), cp.Segments...)
	return &c
}

func (p *Plan) buildWorkers(ctx context.Context) error {
	cfg := p.cfg
	if cfg.NewAPI != nil {
		for i := range cfg.Workers {
			p.Workers = append(p.Workers, &Worker{ID: i, API: cfg.NewAPI(i), Log: cfg.Log.With("worker", i)})
		}
		p.endpoint, p.region, p.customEndpoint = cfg.Endpoint, cfg.Region, cfg.Endpoint != ""
		return p.addKerberos()
	}
	tlsCfg, err := cabundle.Load(cfg.CABundle)
	if err != nil {
		return &FieldError{Field: "CABundle", Msg: fmt.Sprintf("{CABundle} %s", strings.TrimPrefix(err.Error(), "ca bundle ")), Err: err,
			Help: "{CABundle} is a PEM file of the CA certificates to trust"}
	}
	p.tls = tlsCfg
	opts := []func(*config.LoadOptions) error{
		// krbops decides what is retried (DESIGN.md error classes) and
		// logs every failure; the SDK's own retryer would hide both. (It
		// would also retry TLS failures: see awserr.WithoutTLSRetries.)
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConnsPerHost = cfg.Workers + 2
			if tlsCfg != nil {
				t.TLSClientConfig = tlsCfg.Clone()
			}
		})),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(cfg.Profile))
	}
	// The SDK's own warnings go to the forensic log, not to stderr,
	// which belongs to the operator.
	sdkLog := cfg.Log
	opts = append(opts, config.WithLogger(logging.LoggerFunc(func(c logging.Classification, format string, v ...any) {
		sdkLog.Warn("aws sdk", slog.String("classification", string(c)), slog.String("message", fmt.Sprintf(format, v...)))
	})))
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return &FieldError{Field: "Profile", Msg: fmt.Sprintf("aws configuration: %s", firstLine(err.Error())),
			Help: "check {Profile} (AWS_PROFILE) and ~/.aws/config"}
	}
	if awsCfg.Region == "" {
		return &FieldError{Field: "Region", Msg: "no AWS region", Help: "pass {Region} or set AWS_REGION"}
	}
	p.endpoint, p.region = cfg.Endpoint, awsCfg.Region
	if p.endpoint == "" {
		ep, err := dynamodb.NewDefaultEndpointResolverV2().ResolveEndpoint(ctx, dynamodb.EndpointParameters{Region: aws.String(awsCfg.Region)})
		if err == nil {
			p.endpoint = ep.URI.String()
		}
	}
	shared, _ := awsCfg.Credentials.(*aws.CredentialsCache)
	brokerHTTP := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: cfg.Workers, TLSClientConfig: tlsCfg}}
	for i := range cfg.Workers {
		w := &Worker{ID: i, Log: cfg.Log.With("worker", i), Creds: shared}
		p.Workers = append(p.Workers, w)
	}
	if err := p.addKerberos(); err != nil {
		return err
	}
	for _, w := range p.Workers {
		if w.Krb != nil {
			// Each worker its own cache, so one worker's refresh never
			// swaps the credentials under another's in-flight request.
			w.Creds = aws.NewCredentialsCache(&BrokerProvider{
				URL: cfg.Broker, SPN: p.cfg.BrokerSPN, Krb: w.Krb, HTTP: brokerHTTP, Log: w.Log, Timeout: cfg.Timeout,
			}, func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = 30 * time.Second })
		}
		creds := w.Creds
		w.API = dynamodb.NewFromConfig(awsCfg, func(o *dynamodb.Options) {
			if creds != nil {
				o.Credentials = creds
			}
			if cfg.Endpoint != "" {
				o.BaseEndpoint = aws.String(cfg.Endpoint)
			}
			// The SDK has already applied AWS_ENDPOINT_URL* and the
			// profile's endpoint_url here: any of them is the operator's.
			p.customEndpoint = o.BaseEndpoint != nil
			o.Retryer = aws.NopRetryer{}
		})
	}
	return nil
}

func (p *Plan) addKerberos() error {
	cfg := p.cfg
	if cfg.Kerberos == nil {
		return nil
	}
	spn, err := DefaultBrokerSPN(cfg.Broker)
	if err != nil {
		return &FieldError{Field: "Broker", Msg: fmt.Sprintf("{Broker} %q is not an http(s) URL", cfg.Broker), Err: err,
			Help: "for example {Broker} https://broker.example.com/aws/credentials"}
	}
	if p.cfg.BrokerSPN == "" {
		p.cfg.BrokerSPN = spn
	}
	for _, w := range p.Workers {
		var fallback *keylogin.Identity
		if kc := cfg.Kerberos; kc.FallbackKeytab != "" {
			fallback = &keylogin.Identity{Principal: kc.FallbackPrincipal, Keytab: kc.FallbackKeytab}
		}
		k, err := NewKerberosLogin(KerberosOptions{
			Principal: cfg.Kerberos.Principal, Keytab: cfg.Kerberos.Keytab, Krb5Conf: cfg.Kerberos.Krb5Conf,
			Fallback: fallback, Margin: cfg.TicketMargin, Worker: w.ID, Log: w.Log,
		})
		if err != nil {
			return &FieldError{Field: "Kerberos", Err: err, Help: "check {Kerberos.Keytab}, {Kerberos.Principal} and {Kerberos.Krb5Conf}"}
		}
		w.Krb = k
	}
	return nil
}

// Close closes the run's output file, if a run began, and releases the
// checkpoint's lock. Call it after every Segment call returned.
func (p *Plan) Close() {
	if p.session != nil {
		p.session.close()
	}
	if p.lock != nil {
		p.lock.Close()
		p.lock = nil
	}
}

// TLSConfig is the TLS configuration of the run's HTTPS clients (nil:
// the default trust), for the clock probe.
func (p *Plan) TLSConfig() *tls.Config { return p.tls }

// Endpoint is the DynamoDB endpoint requests go to (for the clock check).
func (p *Plan) Endpoint() string { return p.endpoint }

// Config returns the configuration the plan runs with (defaults filled in).
func (p *Plan) Config() Config { return p.cfg }

// Start is the checkpoint as it was before this run.
func (p *Plan) Start() *Checkpoint { return p.start }

// Kerberos reports whether workers log in with a keytab.
func (p *Plan) Kerberos() bool { return p.cfg.Kerberos != nil }

// LoginAll logs in every worker that holds no ticket yet (worker 0 did in
// Prepare) and describes each worker's TGT. Each worker has its own
// client: nothing is shared.
func (p *Plan) LoginAll(ctx context.Context) ([]TicketInfo, error) {
	var infos []TicketInfo
	for _, w := range p.Workers {
		if w.Krb == nil {
			continue
		}
		if w.Krb.Info().EndTime.IsZero() {
			if err := w.Krb.Login(withLog(ctx, w.Log), "initial"); err != nil {
				return infos, err
			}
		}
		infos = append(infos, w.Krb.Info())
	}
	return infos, nil
}

func (p *Plan) describe(ctx context.Context, w *Worker) error {
	spec := p.cfg.Spec
	var out *dynamodb.DescribeTableOutput
	err := p.call(withLog(ctx, w.Log), w, -1, "DescribeTable", &p.prep, func(rctx context.Context) error {
		var err error
		out, err = w.API.DescribeTable(rctx, &dynamodb.DescribeTableInput{TableName: aws.String(spec.Table)})
		return err
	})
	if err != nil {
		var re *RequestError
		if errors.As(err, &re) && re.Detail.Code == "ResourceNotFoundException" {
			return &FieldError{Field: "Spec.Table", Msg: fmt.Sprintf("table %s not found (region %s, endpoint %s)", spec.Table, p.regionName(), p.endpoint),
				Help: "check {Spec.Table}, {Region} and {Endpoint}"}
		}
		var pe *PermissionError
		if errors.As(err, &pe) {
			pe.Resource = "table/" + spec.Table
		}
		return err
	}
	td := out.Table
	if td == nil {
		return &RequestError{Operation: "DescribeTable", Detail: Classified{Class: ClassOther, Message: "reply has no table"}, CustomEndpoint: p.customEndpoint}
	}
	attrTypes := map[string]string{}
	for _, a := range td.AttributeDefinitions {
		attrTypes[aws.ToString(a.AttributeName)] = string(a.AttributeType)
	}
	schema := func(ks []types.KeySchemaElement) string {
		parts := make([]string, len(ks))
		for i, k := range ks {
			n := aws.ToString(k.AttributeName)
			parts[i] = fmt.Sprintf("%s (%s) %s", n, attrTypes[n], k.KeyType)
		}
		return strings.Join(parts, ", ")
	}
	t := TableInfo{Name: spec.Table, ARN: aws.ToString(td.TableArn), Index: spec.Index, KeySchema: schema(td.KeySchema),
		ItemCount: aws.ToInt64(td.ItemCount), SizeBytes: aws.ToInt64(td.TableSizeBytes)}
	if spec.Index != "" {
		var names []string
		found := false
		for _, g := range td.GlobalSecondaryIndexes {
			names = append(names, aws.ToString(g.IndexName))
			if aws.ToString(g.IndexName) == spec.Index {
				t.KeySchema += "; index " + spec.Index + ": " + schema(g.KeySchema)
				t.ItemCount, t.SizeBytes, found = aws.ToInt64(g.ItemCount), aws.ToInt64(g.IndexSizeBytes), true
			}
		}
		for _, l := range td.LocalSecondaryIndexes {
			names = append(names, aws.ToString(l.IndexName))
			if aws.ToString(l.IndexName) == spec.Index {
				t.KeySchema += "; index " + spec.Index + ": " + schema(l.KeySchema)
				t.ItemCount, t.SizeBytes, found = aws.ToInt64(l.ItemCount), aws.ToInt64(l.IndexSizeBytes), true
			}
		}
		if !found {
			list := "none"
			if len(names) > 0 {
				list = strings.Join(names, ", ")
			}
			return &FieldError{Field: "Spec.Index", Msg: fmt.Sprintf("table %s has no index %q (indexes: %s)", spec.Table, spec.Index, list), Help: "check {Spec.Index}"}
		}
	}
	p.Table = t
	exprs, all := spec.expressionHashes()
	p.Binding = Binding{
		TableARN: t.ARN, KeySchema: t.KeySchema, Index: spec.Index, Operation: spec.Operation(),
		Expressions: exprs, ExpressionHash: all, TotalSegments: spec.Segments, ConsistentRead: spec.Consistent,
		Format: p.cfg.Format, Output: p.cfg.Out,
	}
	return nil
}

func (p *Plan) regionName() string {
	if p.region != "" {
		return p.region
	}
	return "unset"
}

// probe reads the first page of the first unfinished segments, one per
// worker and all at once, as the run would start: DynamoDB checks the
// expressions (a bad one is a usage error before anything is written),
// the pages' time feeds the estimate, and the run commits each page as
// its segment's next one (takeProbe), so nothing is read twice.
func (p *Plan) probe(ctx context.Context) error {
	var segs []int
	for i, s := range p.cp.Segments {
		if !s.Done && len(segs) < len(p.Workers) {
			segs = append(segs, i)
		}
	}
	// Every worker that probes needs its ticket first.
	for _, w := range p.Workers[:len(segs)] {
		if w.Krb != nil && w.Krb.Info().EndTime.IsZero() {
			if err := w.Krb.Login(withLog(ctx, w.Log), "initial"); err != nil {
				return err
			}
		}
	}
	type result struct {
		pg      page
		latency time.Duration
		stats   SegmentResult
		err     error
	}
	results := make([]result, len(segs))
	var wg sync.WaitGroup
	for i, seg := range segs {
		w := p.Workers[i]
		wg.Go(func() {
			r := &results[i]
			key, err := p.cp.Segments[seg].Key()
			if err != nil {
				r.err = &CheckpointError{Path: p.cfg.Checkpoint, Msg: err.Error()}
				return
			}
			began := time.Now()
			r.err = p.call(withLog(ctx, w.Log.With("segment", seg)), w, seg, p.cfg.Spec.Operation(), &r.stats, func(rctx context.Context) error {
				var err error
				r.pg, err = p.fetch(rctx, w, seg, key)
				return err
			})
			r.latency = time.Since(began)
		})
	}
	wg.Wait()
	p.probePages = map[int]*page{}
	for i, r := range results {
		p.prep.Retries += r.stats.Retries
		p.prep.Refreshes += r.stats.Refreshes
		if r.err != nil {
			var re *RequestError
			if errors.As(r.err, &re) && re.Detail.Class == ClassInvalid {
				return &ConfigError{Err: re, HintText: re.Hint()}
			}
			return r.err
		}
		p.probePages[segs[i]] = &results[i].pg
		if p.Probe == nil || r.latency > p.Probe.Latency {
			p.Probe = &Probe{Latency: r.latency, Scanned: r.pg.scanned, Last: len(r.pg.lek) == 0}
		}
	}
	return nil
}

// progress is updated by workers and read by Progress.
type progress struct {
	began    atomic.Int64 // unix nanos
	items    atomic.Int64
	pages    atomic.Int64
	cuMilli  atomic.Int64
	segsDone atomic.Int64
}

// Progress is a snapshot of a running run, for a terminal's status line.
type Progress struct {
	Items, Pages   int64
	CapacityUnits  float64
	SegmentsDone   int
	Segments       int
	Elapsed        time.Duration
	ItemsPerSecond float64
}

// Progress returns the run's counters so far (this run only).
func (p *Plan) Progress() Progress {
	pr := Progress{
		Items:         p.prog.items.Load(),
		Pages:         p.prog.pages.Load(),
		CapacityUnits: float64(p.prog.cuMilli.Load()) / 1000,
		SegmentsDone:  int(p.prog.segsDone.Load()),
		Segments:      p.cfg.Spec.Segments,
	}
	if b := p.prog.began.Load(); b != 0 {
		pr.Elapsed = time.Since(time.Unix(0, b))
		if s := pr.Elapsed.Seconds(); s > 0 {
			pr.ItemsPerSecond = float64(pr.Items) / s
		}
	}
	return pr
}

// Estimate is the expected duration of the rest of the run.
type Estimate struct {
	Known       bool
	ItemCount   int64 // DescribeTable's (updated by AWS about every six hours)
	Remaining   int64 // items left to read, from ItemCount and the checkpoint
	PageItems   int64 // items per page, from the probe
	PageLatency time.Duration
	Parallel    int
	Duration    time.Duration
}

// Estimate derives the remaining duration: DescribeTable's item count
// less what the checkpoint has read, divided by the probe's page rate
// times the number of workers that will read at once. For a query it is
// an upper bound (the whole table or index, not the key's items).
func (p *Plan) Estimate() Estimate {
	e := Estimate{ItemCount: p.Table.ItemCount}
	if p.Probe == nil || p.start.Done() {
		e.Known = true
		return e
	}
	var scanned int64
	left := 0
	for _, s := range p.start.Segments {
		scanned += s.Scanned
		if !s.Done {
			left++
		}
	}
	e.Parallel = min(len(p.Workers), left)
	e.PageLatency = p.Probe.Latency
	e.PageItems = p.Probe.Scanned
	if e.ItemCount <= 0 {
		return e
	}
	e.Known = true
	e.Remaining = max(0, e.ItemCount-scanned)
	perPage := e.PageItems
	if p.Probe.Last || perPage <= 0 {
		// The probe read its whole segment: each segment is about one page.
		perPage = max(1, e.Remaining/int64(max(1, left)))
	}
	pages := (e.Remaining + perPage - 1) / perPage
	e.Duration = time.Duration(float64(pages) * float64(e.PageLatency) / float64(max(1, e.Parallel)))
	return e
}
