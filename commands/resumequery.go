package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/krbops/krbops/dynamo"
	"github.com/krbops/krbops/internal/awserr"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/resumequery"
)

// ResumeQueryOptions are resume-query's flags.
type ResumeQueryOptions struct {
	*Globals
	Table        string
	Index        string
	KeyCondition string
	Values       string
	Names        string
	Filter       string
	Projection   string
	Consistent   bool
	Scan         bool
	Segments     int
	Workers      int
	PageSize     int32
	Format       string
	Out          string
	Checkpoint   string

	Region      string
	EndpointURL string
	Profile     string

	Keytab       string
	Principal    string
	Broker       string
	BrokerSPN    string
	TicketMargin time.Duration

	FallbackKeytab    string
	FallbackPrincipal string

	MaxRCU      float64
	RetryBudget int

	// Prepare replaces dynamo.Prepare in tests (fake DynamoDB clients).
	Prepare func(context.Context, dynamo.Config) (*dynamo.Plan, error)
	// ProgressEvery is the status line's refresh period on a terminal.
	ProgressEvery time.Duration
}

// NewCmdResumeQuery builds "krbops resume-query". runF replaces the run
// function in tests that only check flag parsing.
func NewCmdResumeQuery(g *Globals, runF func(context.Context, *ResumeQueryOptions) error) *cobra.Command {
	opts := &ResumeQueryOptions{Globals: g}
	cmd := &cobra.Command{
		Use:   "resume-query",
		Short: "Run a DynamoDB Query or parallel Scan that survives ticket and credential expiry and resumes exactly once",
		Long: `Read a DynamoDB Query, or a Scan split into --segments, into --out as JSON
lines, committing every page as a unit so that a run killed at any moment
resumes exactly where it stopped: never from the beginning, never with a
duplicate item or a gap.

Each page is committed in this order: append its items to --out, fsync,
then replace --checkpoint atomically (temp file, fsync, rename, fsync the
directory; mode 0600). The checkpoint holds, per segment, the
LastEvaluatedKey, the output byte offset, counts and a done flag. Run the
same command again to resume: the output is truncated to the last
committed byte and every segment continues from its key. The checkpoint is
bound to the table ARN, the key schema, --index, a hash of the
expressions and values, --segments (TotalSegments), --consistent, --format
and --out; resuming with any of them changed is refused (exit 2) and the
message names what differs.

Credentials: the standard AWS chain (environment, --profile, SSO,
credential_process), --region, --endpoint-url (or AWS_ENDPOINT_URL_DYNAMODB).
Or Kerberos-backed: with --keytab, --principal and --credential-broker every
worker logs in from the keytab into its own private ticket (never a shared
ticket cache), logs in again when its ticket has less than --ticket-margin
left, and GETs AWS credentials from the broker with SPNEGO; the broker
answers credential_process JSON with an Expiration.

Surviving a rotation: every login reads --keytab again, so a rotation that
replaces the keytab on disk mid-run is picked up at the next login (a
changed kvno is logged as "keytab kvno changed"). A login that fails with a
key error (pre-authentication failed, principal unknown, keytab unreadable
or unusable) while the worker's ticket is still valid keeps that ticket
("ticket kept") and logs in again at the next refresh. With
--fallback-keytab and --fallback-principal, such a failure logs the worker
in as the fallback principal instead ("ticket fallback" in the log; the
segment's step warns) and the run goes on; the primary is tried again once
its keytab file changes.

Errors, by class:
  authentication  ExpiredToken, ExpiredTokenException, RequestExpired,
                  UnrecognizedClientException, InvalidSignatureException
                  ("Signature expired"): that worker pauses, logs in again,
                  fetches new credentials (invalidating the SDK's cache) and
                  resends the same page; a second authentication failure
                  right after a refresh stops the run (exit 1)
  permission      AccessDeniedException, or HTTP 403 AccessDenied (moto's
                  XML): the run stops at once, naming the action and the
                  resource; never retried (exit 1)
  transient       throttling codes, 5xx, timeouts, connection errors:
                  full-jitter exponential backoff (100ms doubling to 20s);
                  each retry spends one token of --retry-budget and each
                  successful page earns one back; an empty budget stops the
                  run (exit 3)
  tls             a certificate this host does not trust (unknown
                  authority, wrong host name, expired or not yet valid) or
                  a port that does not speak TLS: the run stops at once,
                  naming the host and the problem; never retried (exit 2
                  for --endpoint-url or the broker, 3 for AWS's own
                  endpoint). Trust a private CA with --ca-bundle FILE (PEM):
                  it reaches every HTTPS request of the run (DynamoDB, the
                  broker, the query.aws-clock step); AWS_CA_BUNDLE reaches
                  only the DynamoDB requests.
Every ticket request, refresh and expiry and every AWS error goes to
--log-file with the correlation id and the segment.

Steps, in order:
  query.table            the table, its key schema and the checkpoint (new, or
                         how much is already committed)
  query.ticket           with --keytab: every worker logged in; warn when the
                         ticket lifetime is not above --ticket-margin
  query.aws-clock        this host against the endpoint's HTTP Date: warn
                         beyond 60s, fail beyond SigV4's 5 minutes
  query.estimate         DescribeTable's item count divided by the measured page
                         rate; warn when the ticket ends sooner (the run still
                         logs in again from the keytab)
  query.segment:<n>      one per segment: items, pages, retries and refreshes
                         of this run; skip when another segment stopped the run

Progress (items, pages, RCU, rate, segments done) is shown on a terminal's
stderr only, never with --quiet or -o json/junit. See docs/resume-query.md.

What sets the exit code here: 0 every segment done; 1 access denied,
authentication failed again after a refresh, or the Kerberos login was
refused; 2 bad flags, unusable --out/--checkpoint, unknown table or index,
expressions DynamoDB rejects, a checkpoint bound to a different run, or a
TLS certificate of --endpoint-url or the broker this host does not trust;
3 retry budget exhausted, endpoint, KDC or broker unreachable, disk
full; 130 interrupted (committed pages are kept: resume).` + exitStatusHelp,
		Example: `  krbops resume-query --table orders --scan --segments 8 --workers 4 --out orders.jsonl
  krbops resume-query --table orders --index byCustomer --key-condition 'customer = :c' \
      --values '{":c": {"S": "c-42"}}' --filter 'total > :min' --out c42.jsonl
  krbops resume-query --table orders --scan --segments 4 --out orders.jsonl \
      --keytab /etc/krb5.keytab --principal svc-export@EXAMPLE.COM \
      --credential-broker https://broker.example.com/aws/credentials --log-file export.log
  krbops resume-query --table orders --scan --segments 4 --out orders.jsonl \
      --keytab /etc/krb5.keytab --principal svc-export@EXAMPLE.COM \
      --fallback-keytab /etc/standby.keytab --fallback-principal svc-export-standby@EXAMPLE.COM \
      --credential-broker https://broker.corp.example/aws/credentials --ca-bundle /etc/pki/corp-ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := opts.config(); err != nil {
				return err
			}
			// A margin for a ticket the run never has would be silently
			// ignored: the standard AWS chain has no Kerberos ticket.
			if cmd.Flags().Changed("ticket-margin") && opts.Keytab == "" {
				return usageError(errors.New("--ticket-margin is for Kerberos-backed credentials (--keytab)"),
					"drop --ticket-margin, or pass --keytab, --principal and --credential-broker")
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return resumeQueryRun(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Table, "table", "", "table name (required)")
	f.StringVar(&opts.Index, "index", "", "read a global or local secondary index")
	f.BoolVar(&opts.Scan, "scan", false, "Scan the table or index instead of a Query")
	f.StringVar(&opts.KeyCondition, "key-condition", "", "Query KeyConditionExpression, e.g. 'pk = :pk' (required without --scan)")
	f.StringVar(&opts.Values, "values", "", `ExpressionAttributeValues as DynamoDB JSON, e.g. '{":pk": {"S": "a"}}'`)
	f.StringVar(&opts.Names, "names", "", `ExpressionAttributeNames as JSON, e.g. '{"#s": "status"}'`)
	f.StringVar(&opts.Filter, "filter", "", "FilterExpression")
	f.StringVar(&opts.Projection, "projection", "", "ProjectionExpression")
	f.BoolVar(&opts.Consistent, "consistent", false, "strongly consistent reads (ConsistentRead; not on a global secondary index)")
	f.IntVar(&opts.Segments, "segments", 1, "Scan TotalSegments: the table is read as this many independent segments")
	f.IntVar(&opts.Workers, "workers", 0, "segments read at once, each by its own worker, 1..--segments (default: --segments, at most 8)")
	f.Int32Var(&opts.PageSize, "page-size", 0, "items per request (Limit); 0: DynamoDB's 1 MB pages")
	f.StringVar(&opts.Format, "format", "json", "item format: json (plain values) or dynamodb-json (typed, lossless)")
	f.StringVar(&opts.Out, "out", "", "JSON-lines output file (required; mode 0600)")
	f.StringVar(&opts.Checkpoint, "checkpoint", "", "checkpoint file (default <out>.checkpoint); run again with it to resume")
	f.StringVar(&opts.Region, "region", "", "AWS region (default AWS_REGION, then the profile's)")
	f.StringVar(&opts.EndpointURL, "endpoint-url", "", "DynamoDB endpoint (default AWS_ENDPOINT_URL_DYNAMODB, then AWS_ENDPOINT_URL, then AWS's)")
	f.StringVar(&opts.Profile, "profile", "", "AWS shared-config profile (default AWS_PROFILE)")
	f.StringVar(&opts.Keytab, "keytab", "", "Kerberos-backed credentials: keytab each worker logs in from (needs --principal and --credential-broker)")
	f.StringVar(&opts.Principal, "principal", "", "principal in --keytab, name@REALM (the realm defaults to krb5.conf's default_realm)")
	f.StringVar(&opts.Broker, "credential-broker", "", "URL that answers an SPNEGO GET with credential_process JSON")
	f.StringVar(&opts.BrokerSPN, "broker-spn", "", "service principal of the broker (default HTTP/<host of --credential-broker>)")
	f.StringVar(&opts.FallbackKeytab, "fallback-keytab", "", "keytab of a second principal a worker logs in as when --principal's key fails (needs --fallback-principal)")
	f.StringVar(&opts.FallbackPrincipal, "fallback-principal", "", "principal in --fallback-keytab, name@REALM")
	f.DurationVar(&opts.TicketMargin, "ticket-margin", 10*time.Minute, "log in again when a worker's ticket has less than this left")
	f.Float64Var(&opts.MaxRCU, "max-rcu", 0, "read capacity units per second for the whole run, from ConsumedCapacity (0: no limit)")
	f.IntVar(&opts.RetryBudget, "retry-budget", 50, "transient-error retries the run may take (one earned back per successful page)")
	return cmd
}

// config checks the flags and turns them into a dynamo.Config. dynamo
// validates the Config; its errors name the offending field, which
// queryWording turns back into the flag that set it.
func (o *ResumeQueryOptions) config() (dynamo.Config, error) {
	usage := func(err error) (dynamo.Config, error) {
		return dynamo.Config{}, usageError(queryWording(err), queryHint(err))
	}
	format, err := dynamo.ParseFormat(o.Format)
	if err != nil {
		return usage(err)
	}
	values, err := dynamo.ParseValues(o.Values)
	if err != nil {
		return usage(err)
	}
	names, err := dynamo.ParseNames(o.Names)
	if err != nil {
		return usage(err)
	}
	workers := o.Workers
	if workers == 0 {
		workers = min(o.Segments, 8)
	}
	endpoint := o.EndpointURL
	for _, k := range []string{"AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"} {
		if endpoint == "" {
			endpoint = o.IO.Getenv(k)
		}
	}
	cfg := dynamo.Config{
		Spec: dynamo.Spec{
			Table: o.Table, Index: o.Index, Scan: o.Scan, Segments: o.Segments, KeyCondition: o.KeyCondition,
			Filter: o.Filter, Projection: o.Projection, Names: names, Values: values, Consistent: o.Consistent,
			PageSize: o.PageSize,
		},
		Format: format, Out: o.Out, Checkpoint: o.Checkpoint, Workers: workers,
		Region: o.Region, Endpoint: endpoint, Profile: o.Profile,
		Broker: o.Broker, BrokerSPN: o.BrokerSPN,
		TicketMargin: o.TicketMargin, MaxRCU: o.MaxRCU, RetryBudget: o.RetryBudget,
		Timeout: o.Timeout, Log: o.Log,
	}
	if o.Keytab != "" || o.Principal != "" || o.Broker != "" {
		cfg.Kerberos = &dynamo.KerberosConfig{Keytab: o.Keytab, Principal: o.Principal, Krb5Conf: kdcops.ConfigPath(o.Krb5Config, o.IO.Getenv),
			FallbackKeytab: o.FallbackKeytab, FallbackPrincipal: o.FallbackPrincipal}
	} else if o.FallbackKeytab != "" || o.FallbackPrincipal != "" {
		return usage(&dynamo.FieldError{Field: "Kerberos.FallbackKeytab", Msg: "{Kerberos.FallbackKeytab} and {Kerberos.FallbackPrincipal} are for Kerberos-backed credentials ({Kerberos.Keytab})",
			Help: "pass {Kerberos.Keytab}, {Kerberos.Principal} and {Broker} too, or drop the fallback"})
	}
	cfg.CABundle = o.CABundle
	if err := cfg.Validate(); err != nil {
		return usage(err)
	}
	return cfg, nil
}

func resumeQueryRun(ctx context.Context, opts *ResumeQueryOptions) error {
	cfg, err := opts.config()
	if err != nil {
		return err
	}
	cfg.Log = opts.Log.With("command", "resume-query")
	// A bulk reader allocates at network speed while its live heap stays
	// a few pages: collecting a quarter as often saves about a fifth of
	// its CPU (measured with make querybench) for a few MB. GOGC wins.
	if opts.IO.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	prepare := opts.Prepare
	if prepare == nil {
		prepare = dynamo.Prepare
	}
	plan, err := prepare(ctx, cfg)
	if err != nil {
		return prepareError(ctx, err)
	}
	defer plan.Close()
	if opts.IO.ErrTTY && !opts.Quiet && !opts.machineReadable() {
		stop := opts.showProgress(plan)
		defer stop()
	}
	// A failed segment's hint names flags, not dynamo's Config fields.
	q := resumequery.Query{Plan: plan, Timeout: opts.Timeout, Log: cfg.Log, Hint: queryHint}
	return opts.runReport(ctx, runbook.Runbook{Command: "resume-query", Steps: q.Steps()})
}

// prepareError maps what stopped the run before its report to the
// documented exit code: 2 for anything the invocation must change, 1 for
// a denial or a refused login, 3 for what could not be reached. A TLS
// failure is 2 against an endpoint or broker the operator configured (the
// trust store or the URL is local configuration), else 3.
func prepareError(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return fault.New(fault.Cancelled, errors.New("interrupted before the first page; nothing was written"), "")
	}
	// dynamo's errors know their class (see dynamo/classify.go); this
	// only words them for people, with flag names.
	class := fault.ClassOf(err)
	if class == fault.Unclassified {
		class = fault.Unreachable
	}
	return fault.New(class, queryWording(err), queryHint(err))
}

// queryFlags is the flag that sets each dynamo.Config field.
var queryFlags = map[string]string{
	"Spec.Table": "--table", "Spec.Index": "--index", "Spec.Scan": "--scan", "Spec.Segments": "--segments",
	"Spec.KeyCondition": "--key-condition", "Spec.Filter": "--filter", "Spec.Projection": "--projection",
	"Spec.Names": "--names", "Spec.Values": "--values", "Spec.Consistent": "--consistent", "Spec.PageSize": "--page-size",
	"Format": "--format", "Out": "--out", "Checkpoint": "--checkpoint", "Workers": "--workers",
	"Region": "--region", "Endpoint": "--endpoint-url", "Profile": "--profile",
	"Kerberos.Keytab": "--keytab", "Kerberos.Principal": "--principal", "Kerberos.Krb5Conf": "--krb5-config",
	"Kerberos.FallbackKeytab": "--fallback-keytab", "Kerberos.FallbackPrincipal": "--fallback-principal", "CABundle": "--ca-bundle",
	"Broker": "--credential-broker", "BrokerSPN": "--broker-spn", "TicketMargin": "--ticket-margin",
	"MaxRCU": "--max-rcu", "RetryBudget": "--retry-budget",
}

func queryFlag(field string) string { return queryFlags[field] }

// bindingLabel names a field a checkpoint is bound to: DynamoDB's name
// where the operator knows it from the table or the API, with the flag.
func bindingLabel(field string) string {
	switch field {
	case "TableARN", "KeySchema", "Expressions":
		return dynamo.FieldName(field)
	case "Operation":
		return "operation (--scan)"
	case "Spec.Segments", "Spec.Consistent":
		return dynamo.FieldName(field) + " (" + queryFlags[field] + ")"
	}
	if f := queryFlags[field]; f != "" {
		return f
	}
	return dynamo.FieldName(field)
}

// worded is err with its message spelled in flags.
type worded struct {
	msg string
	err error
}

func (w *worded) Error() string { return w.msg }
func (w *worded) Unwrap() error { return w.err }

// queryWording spells a dynamo error that names Config fields with the
// flags that set them; other errors are returned as they are.
func queryWording(err error) error {
	var fe *dynamo.FieldError
	var be *dynamo.BindingError
	switch {
	case errors.As(err, &fe):
		return &worded{fe.Render(queryFlag), err}
	case errors.As(err, &be):
		return &worded{be.Render(bindingLabel), err}
	}
	return err
}

// queryHint is what the operator of resume-query does next about err, in
// terms of its flags; "" when err has no hint.
func queryHint(err error) string {
	var (
		fe *dynamo.FieldError
		be *dynamo.BindingError
		ke *dynamo.CheckpointError
		pe *dynamo.PermissionError
		ae *dynamo.AuthError
		bu *dynamo.BudgetError
		kr *dynamo.KerberosError
		br *dynamo.BrokerError
		re *dynamo.RequestError
	)
	switch {
	case errors.As(err, &fe):
		if h := fe.RenderHint(queryFlag); h != "" {
			return h
		}
		return `run "krbops resume-query --help" to see the flags`
	case errors.As(err, &be):
		return "resume with the flags of the run that wrote the checkpoint, or start over: delete the checkpoint and the output, or pass new --out and --checkpoint paths"
	case errors.As(err, &ke):
		return "restore the checkpoint from the run that wrote it, or start over with new --out and --checkpoint paths"
	case errors.As(err, &pe):
		return fmt.Sprintf("grant %s on %s to the identity krbops runs as (see --log-file for the service's message), then resume with the same command: committed pages are kept", pe.Action, pe.Resource)
	case errors.As(err, &ae):
		if ae.ClockSkew() {
			return "this host's clock is off: run krbops clock-check --aws-endpoint <endpoint>, fix the clock, then resume with the same command"
		}
		return ae.Hint()
	case errors.As(err, &bu):
		return "the service keeps failing or throttling: lower --max-rcu or --workers, or wait, then resume with the same command"
	case errors.As(err, &kr):
		switch {
		case kr.Unreachable:
			return "no KDC answered: check the realm's kdc entries in krb5.conf (--krb5-config) and the network"
		case kr.PrincipalUnknown():
			return "the KDC does not know the principal (or the broker's SPN): check --principal and --broker-spn"
		}
		return kr.Hint()
	case errors.As(err, &br):
		switch br.Class {
		case dynamo.ClassAuth:
			return "the broker did not accept the Kerberos ticket: check --broker-spn and that the broker's keytab is current"
		case dynamo.ClassTLS:
			return dynamo.Classified{Class: br.Class, TLSHost: br.TLSHost, TLSReason: br.TLSReason}.TLSHint("--ca-bundle")
		case dynamo.ClassPermission:
			return br.Hint()
		}
		return "check --credential-broker and that the broker is up, then resume with the same command"
	case errors.As(err, &re):
		switch re.Detail.Class {
		case dynamo.ClassInvalid:
			return "fix the expressions (--key-condition, --filter, --projection, --names, --values) or --table/--index"
		case dynamo.ClassCredentials:
			return "set AWS credentials (AWS_PROFILE, aws sso login, ...) or pass --keytab, --principal and --credential-broker"
		case dynamo.ClassTransient:
			return "check --endpoint-url/--region and the network, then resume with the same command"
		case dynamo.ClassNotFound:
			return "the endpoint answered 404 Not Found: check --endpoint-url"
		case dynamo.ClassTLS:
			return tlsTrustHint(re.Detail)
		}
		return "see --log-file for the request's error, then resume with the same command"
	}
	return fault.HintOf(err)
}

// tlsTrustHint: --ca-bundle reaches every HTTPS client of the run;
// AWS_CA_BUNDLE only the SDK's, so the flag is what makes the whole run
// work.
func tlsTrustHint(c dynamo.Classified) string {
	h := c.TLSHint("--ca-bundle")
	switch c.TLSReason {
	case awserr.TLSUnknownAuthority, awserr.TLSNoRoots, awserr.TLSInvalid:
		h += " (AWS_CA_BUNDLE reaches the DynamoDB requests but not the broker or the query.aws-clock step)"
	}
	return h
}

// showProgress redraws one status line on the terminal's stderr until
// stop is called. Every other write to stderr (the per-step lines) first
// clears it, so the two never mix on one line.
func (o *ResumeQueryOptions) showProgress(plan *dynamo.Plan) (stop func()) {
	every := o.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	sw := &statusWriter{w: o.IO.ErrOut}
	orig := o.IO.ErrOut
	o.IO.ErrOut = sw
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if p := plan.Progress(); p.Elapsed > 0 {
					sw.status(progressText(p))
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		sw.clear()
		o.IO.ErrOut = orig
	}
}

func progressText(p dynamo.Progress) string {
	return fmt.Sprintf("  query  %d items  %d pages  %.1f RCU  %.0f items/s  %d/%d segments done  %s",
		p.Items, p.Pages, p.CapacityUnits, p.ItemsPerSecond, p.SegmentsDone, p.Segments, p.Elapsed.Round(time.Second))
}

// statusWriter is stderr with one redrawable status line at the bottom.
type statusWriter struct {
	mu     sync.Mutex
	w      io.Writer
	active bool
}

const clearLine = "\r\x1b[K"

func (s *statusWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active {
		io.WriteString(s.w, clearLine)
		s.active = false
	}
	return s.w.Write(b)
}

func (s *statusWriter) status(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	io.WriteString(s.w, clearLine+strings.TrimRight(line, "\n"))
	s.active = true
}

func (s *statusWriter) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active {
		io.WriteString(s.w, clearLine)
		s.active = false
	}
}
