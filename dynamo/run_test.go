package dynamo

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// syncBuffer is a log sink several workers write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	t     *testing.T
	table *fakeTable
	dir   string
	log   *syncBuffer
}

func newFixture(t *testing.T, items int) *fixture {
	return &fixture{t: t, table: newFakeTable(items), dir: t.TempDir(), log: &syncBuffer{}}
}

func (f *fixture) config(mods ...func(*Config)) Config {
	cfg := Config{
		Spec:        Spec{Table: f.table.name, Scan: true, Segments: 4, PageSize: 7},
		Out:         filepath.Join(f.dir, "out.jsonl"),
		Workers:     2,
		RetryBudget: 10,
		Backoff:     Backoff{Base: time.Millisecond, Cap: 2 * time.Millisecond},
		Timeout:     5 * time.Second,
		Log:         slog.New(slog.NewJSONHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		NewAPI:      func(int) API { return f.table },
	}
	for _, m := range mods {
		m(&cfg)
	}
	return cfg
}

func (f *fixture) prepare(ctx context.Context, mods ...func(*Config)) (*Plan, error) {
	return Prepare(ctx, f.config(mods...))
}

func (f *fixture) mustPrepare(ctx context.Context, mods ...func(*Config)) *Plan {
	f.t.Helper()
	p, err := f.prepare(ctx, mods...)
	if err != nil {
		f.t.Fatalf("Prepare: %v", err)
	}
	f.t.Cleanup(p.Close)
	return p
}

// wantExactly checks that the output holds every item exactly once.
func (f *fixture) wantExactly(format Format) {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "out.jsonl"))
	if err != nil {
		f.t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(b) == 0 {
		got = nil
	}
	var want []string
	for _, it := range f.table.items {
		line, err := AppendItem(nil, it, format)
		if err != nil {
			f.t.Fatal(err)
		}
		want = append(want, string(line))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		dups := 0
		for i := 1; i < len(got); i++ {
			if got[i] == got[i-1] {
				dups++
			}
		}
		f.t.Fatalf("output has %d lines (%d duplicates), want the %d items exactly once", len(got), dups, len(want))
	}
}

func TestRunReadsEverySegmentOnce(t *testing.T) {
	f := newFixture(t, 95)
	p := f.mustPrepare(context.Background())
	res := p.Run(context.Background())
	if res.Stop != nil || res.Cancelled {
		t.Fatalf("run stopped: %v", res.Stop)
	}
	var items int64
	for _, s := range res.Segments {
		if s.Outcome != OutcomeDone || !s.State.Done || len(s.State.LastEvaluatedKey) != 0 {
			t.Errorf("segment %d: %s, state %+v", s.Segment, s.Outcome, s.State)
		}
		items += s.Items
	}
	if items != 95 {
		t.Errorf("segments read %d items, want 95", items)
	}
	f.wantExactly(FormatJSON)
	for _, path := range []string{filepath.Join(f.dir, "out.jsonl"), filepath.Join(f.dir, "out.jsonl.checkpoint")} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %o, want 600", path, fi.Mode().Perm())
		}
	}
	cp, err := LoadCheckpoint(filepath.Join(f.dir, "out.jsonl.checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	if !cp.Done() || cp.OutputBytes != res.Bytes {
		t.Errorf("checkpoint: done=%v bytes=%d, run bytes %d", cp.Done(), cp.OutputBytes, res.Bytes)
	}
	if m, _ := filepath.Glob(filepath.Join(f.dir, ".*tmp*")); len(m) > 0 {
		t.Errorf("temporary files left behind: %v", m)
	}

	// Running again reads nothing and changes nothing.
	before, _ := os.ReadFile(filepath.Join(f.dir, "out.jsonl"))
	calls := len(f.table.Calls())
	p.Close()
	p2 := f.mustPrepare(context.Background())
	res2 := p2.Run(context.Background())
	for _, s := range res2.Segments {
		if s.Outcome != OutcomeAlreadyDone {
			t.Errorf("second run: segment %d %s", s.Segment, s.Outcome)
		}
	}
	after, _ := os.ReadFile(filepath.Join(f.dir, "out.jsonl"))
	if !bytes.Equal(before, after) {
		t.Error("a second run over a finished checkpoint changed the output")
	}
	if extra := f.table.Calls()[calls:]; len(extra) != 1 || extra[0].Op != "DescribeTable" {
		t.Errorf("second run made requests %v, want only DescribeTable", extra)
	}
}

// A full page at the end of a segment comes with a LastEvaluatedKey and
// an empty page follows: the segment is done only after that one.
func TestEmptyLastPage(t *testing.T) {
	f := newFixture(t, 40)
	p := f.mustPrepare(context.Background(), func(c *Config) { c.Spec.Segments, c.Workers, c.Spec.PageSize = 1, 1, 10 })
	res := p.Run(context.Background())
	if res.Stop != nil || res.Segments[0].Pages != 5 || res.Segments[0].Items != 40 {
		t.Fatalf("got %+v, want 5 pages (the last empty) and 40 items", res.Segments[0])
	}
	f.wantExactly(FormatJSON)
}

func TestResumeAfterCrashTruncatesAndContinuesFromTheKeys(t *testing.T) {
	f := newFixture(t, 120)
	ctx, cancel := context.WithCancel(context.Background())
	f.table.fault = func(n int, c fakeCall) error {
		if n == 12 {
			cancel() // SIGINT while this request is in flight
			return context.Canceled
		}
		return nil
	}
	p := f.mustPrepare(ctx, func(c *Config) { c.Format = FormatDynamoDBJSON })
	res := p.Run(ctx)
	if !res.Cancelled {
		t.Fatalf("run was not cancelled: %+v", res)
	}
	p.Close()
	cpPath := filepath.Join(f.dir, "out.jsonl.checkpoint")
	cp, err := LoadCheckpoint(cpPath)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Done() || cp.OutputBytes == 0 {
		t.Fatalf("checkpoint after the interruption: done=%v bytes=%d", cp.Done(), cp.OutputBytes)
	}
	// A crash after the output's fsync but before the checkpoint's rename
	// leaves uncommitted bytes, even half a line: resume must drop them.
	out, _ := os.OpenFile(filepath.Join(f.dir, "out.jsonl"), os.O_WRONLY|os.O_APPEND, 0)
	out.WriteString(`{"pk":{"S":"k00001"}}` + "\n" + `{"pk":{"S":"half`)
	out.Close()

	f.table.fault = nil
	mark := len(f.table.Calls())
	p2 := f.mustPrepare(context.Background(), func(c *Config) { c.Format = FormatDynamoDBJSON })
	if !p2.Resumed {
		t.Fatal("second Prepare did not resume")
	}
	res2 := p2.Run(context.Background())
	if res2.Stop != nil {
		t.Fatal(res2.Stop)
	}
	f.wantExactly(FormatDynamoDBJSON)
	// Each unfinished segment's first page of the resumed run starts at
	// the checkpointed key, never from the beginning.
	first := map[int]fakeCall{}
	for _, c := range f.table.Calls()[mark:] {
		if c.Op == "Scan" {
			if _, ok := first[c.Segment]; !ok {
				first[c.Segment] = c
			}
		}
	}
	for _, s := range cp.Segments {
		if s.Done {
			if _, ok := first[s.Segment]; ok {
				t.Errorf("segment %d was done but was read again", s.Segment)
			}
			continue
		}
		key, _ := s.Key()
		if got := first[s.Segment].StartKey; got != pkOf(key) {
			t.Errorf("segment %d resumed from %q, want the checkpoint's %q", s.Segment, got, pkOf(key))
		}
	}
	for _, s := range res2.Segments {
		if s.Resumed != (len(cp.Segments[s.Segment].LastEvaluatedKey) > 0) {
			t.Errorf("segment %d: Resumed=%v", s.Segment, s.Resumed)
		}
	}
}

func TestAuthFailureRefreshesAndResendsTheSamePage(t *testing.T) {
	f := newFixture(t, 60)
	var failed fakeCall
	f.table.fault = func(n int, c fakeCall) error {
		if n == 6 {
			failed = c
			return apiError("ExpiredTokenException")
		}
		return nil
	}
	p := f.mustPrepare(context.Background(), func(c *Config) { c.Workers = 1 })
	res := p.Run(context.Background())
	if res.Stop != nil {
		t.Fatal(res.Stop)
	}
	calls := f.table.Calls()
	if calls[6] != failed {
		t.Errorf("after the failure the worker sent %+v, want the same page %+v", calls[6], failed)
	}
	refreshes := 0
	for _, s := range res.Segments {
		refreshes += s.Refreshes
	}
	if refreshes != 1 {
		t.Errorf("%d refreshes, want 1", refreshes)
	}
	log := f.log.String()
	for _, want := range []string{`"msg":"aws error"`, `"class":"authentication"`, `"code":"ExpiredTokenException"`, `"msg":"credentials refresh"`, `"segment":`} {
		if !strings.Contains(log, want) {
			t.Errorf("forensic log lacks %s", want)
		}
	}
	f.wantExactly(FormatJSON)
}

// A service answer after the refresh (here a 500) proves the new
// credentials were accepted: a later expiry is a new one, refreshed again.
func TestAuthFailureAfterAServiceAnswerRefreshesAgain(t *testing.T) {
	f := newFixture(t, 40)
	f.table.fault = func(n int, c fakeCall) error {
		switch n {
		case 4, 6:
			return apiError("ExpiredTokenException")
		case 5:
			return &smithyHTTPError{status: 500}
		}
		return nil
	}
	p := f.mustPrepare(context.Background(), func(c *Config) { c.Workers = 1 })
	res := p.Run(context.Background())
	if res.Stop != nil {
		t.Fatalf("stopped: %v", res.Stop)
	}
	refreshes, retries := 0, 0
	for _, s := range res.Segments {
		refreshes += s.Refreshes
		retries += s.Retries
	}
	if refreshes != 2 || retries != 1 {
		t.Errorf("%d refreshes and %d retries, want 2 and 1", refreshes, retries)
	}
	f.wantExactly(FormatJSON)
}

func TestSecondAuthFailureAfterRefreshStopsTheRun(t *testing.T) {
	f := newFixture(t, 60)
	f.table.fault = func(n int, c fakeCall) error {
		if n >= 4 {
			return apiError("UnrecognizedClientException")
		}
		return nil
	}
	p := f.mustPrepare(context.Background(), func(c *Config) { c.Workers = 1 })
	res := p.Run(context.Background())
	var ae *AuthError
	if !errors.As(res.Stop, &ae) {
		t.Fatalf("stop = %v, want an AuthError", res.Stop)
	}
	if got := len(f.table.Calls()); got != 5 {
		t.Errorf("%d requests, want 5: describe, the first page (Prepare's), one more page, its failure and one resend", got)
	}
	if !strings.Contains(ae.Hint(), "resume with the same command") {
		t.Errorf("hint %q", ae.Hint())
	}
	stopped := 0
	for _, s := range res.Segments {
		if s.Outcome == OutcomeStopped {
			stopped++
		}
	}
	if stopped != 3 {
		t.Errorf("%d segments stopped, want the 3 others", stopped)
	}
}

func TestPermissionDeniedStopsAtOnceWithoutRetry(t *testing.T) {
	f := newFixture(t, 200)
	var denied fakeCall
	// Requests after the denied one stay in flight until the run stops
	// them: every other worker has at most one, whatever the scheduling.
	f.table.holdAfter = 9
	f.table.fault = func(n int, c fakeCall) error {
		if n == 9 {
			denied = c
			return apiError("AccessDeniedException")
		}
		return nil
	}
	p := f.mustPrepare(context.Background(), func(c *Config) { c.Workers = 4 })
	res := p.Run(context.Background())
	var pe *PermissionError
	if !errors.As(res.Stop, &pe) {
		t.Fatalf("stop = %v, want a PermissionError", res.Stop)
	}
	if pe.Action != "dynamodb:Scan" || pe.Resource != "arn:aws:dynamodb:us-east-1:000000000000:table/orders" || pe.Segment != denied.Segment {
		t.Errorf("permission error %+v", pe)
	}
	calls := f.table.Calls()
	same := 0
	for _, c := range calls {
		if c == denied {
			same++
		}
	}
	if same != 1 {
		t.Errorf("the denied request was sent %d times, want once", same)
	}
	// At most the other workers' in-flight requests follow the denial.
	if after := len(calls) - 9; after > 3 {
		t.Errorf("%d requests after the denial, want at most the 3 other workers' in-flight ones", after)
	}
	retries := 0
	for _, s := range res.Segments {
		retries += s.Retries
	}
	if retries != 0 {
		t.Errorf("%d retries", retries)
	}
	// Committed pages stay committed: a resume continues.
	cp, err := LoadCheckpoint(filepath.Join(f.dir, "out.jsonl.checkpoint"))
	if err != nil || cp.OutputBytes == 0 {
		t.Fatalf("checkpoint after the denial: %v (bytes %d)", err, cp.OutputBytes)
	}
}

func TestTransientErrorsAreRetriedWithinTheBudget(t *testing.T) {
	f := newFixture(t, 80)
	f.table.fault = func(n int, c fakeCall) error {
		switch n {
		case 4, 5, 6:
			return apiError("ProvisionedThroughputExceededException")
		case 9:
			return apiError("InternalServerError")
		}
		return nil
	}
	p := f.mustPrepare(context.Background())
	res := p.Run(context.Background())
	if res.Stop != nil {
		t.Fatal(res.Stop)
	}
	retries := 0
	for _, s := range res.Segments {
		retries += s.Retries
	}
	if retries != 4 || p.budget.Spent() != 4 {
		t.Errorf("%d retries (budget spent %d), want 4", retries, p.budget.Spent())
	}
	f.wantExactly(FormatJSON)
	if n := strings.Count(f.log.String(), `"msg":"retry"`); n != 4 {
		t.Errorf("%d retry log lines, want 4", n)
	}
}

func TestRetryBudgetExhaustedStopsTheRun(t *testing.T) {
	f := newFixture(t, 80)
	f.table.fault = func(n int, c fakeCall) error {
		if n > 3 {
			return apiError("ThrottlingException")
		}
		return nil
	}
	p := f.mustPrepare(context.Background(), func(c *Config) { c.RetryBudget = 3; c.Workers = 1 })
	res := p.Run(context.Background())
	var be *BudgetError
	if !errors.As(res.Stop, &be) || be.Budget != 3 || be.Last.Code != "ThrottlingException" {
		t.Fatalf("stop = %v, want the budget of 3 exhausted", res.Stop)
	}
	if p.budget.Spent() != 3 {
		t.Errorf("spent %d retries, want 3", p.budget.Spent())
	}
}

func TestResumeRefusedWhenTheRunDiffers(t *testing.T) {
	f := newFixture(t, 30)
	base := func(c *Config) {
		c.Spec.Filter = "n > :min"
		c.Spec.Values = map[string]types.AttributeValue{":min": &types.AttributeValueMemberN{Value: "3"}}
		c.Checkpoint = filepath.Join(f.dir, "run.checkpoint")
	}
	p := f.mustPrepare(context.Background(), base)
	p.Run(context.Background())
	p.Close()
	cases := []struct {
		name  string
		mod   func(*Config)
		field string
	}{
		{"filter", func(c *Config) { c.Spec.Filter = "n < :min" }, "Spec.Filter"},
		{"values", func(c *Config) {
			c.Spec.Values = map[string]types.AttributeValue{":min": &types.AttributeValueMemberN{Value: "4"}}
		}, "Spec.Values"},
		{"projection", func(c *Config) { c.Spec.Projection = "pk" }, "Spec.Projection"},
		{"segments", func(c *Config) { c.Spec.Segments = 2 }, "Spec.Segments"},
		{"consistent", func(c *Config) { c.Spec.Consistent = true }, "Spec.Consistent"},
		{"format", func(c *Config) { c.Format = FormatDynamoDBJSON }, "Format"},
		{"out", func(c *Config) { c.Out = filepath.Join(f.dir, "other.jsonl") }, "Out"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.prepare(context.Background(), base, tc.mod)
			var be *BindingError
			if !errors.As(err, &be) {
				t.Fatalf("Prepare = %v, want a BindingError", err)
			}
			if len(be.Diffs) != 1 || be.Diffs[0].Field != tc.field {
				t.Errorf("diffs %v, want only %s", be.Diffs, tc.field)
			}
			if !strings.Contains(err.Error(), FieldName(tc.field)) || !strings.Contains(err.Error(), "run.checkpoint was written for a different run") {
				t.Errorf("message %q does not name %s", err, FieldName(tc.field))
			}
		})
	}
	// The same flags are accepted.
	p2, err := f.prepare(context.Background(), base)
	if err != nil {
		t.Fatalf("same flags refused: %v", err)
	}
	p2.Close()
}

func TestPrepareRefusals(t *testing.T) {
	f := newFixture(t, 10)
	out := filepath.Join(f.dir, "out.jsonl")
	var ce *ConfigError
	var fe *FieldError

	os.WriteFile(out, []byte("someone's data\n"), 0o600)
	if _, err := f.prepare(context.Background()); !errors.As(err, &fe) || fe.Field != "Out" || !strings.Contains(err.Error(), "already has data but there is no checkpoint") {
		t.Errorf("existing output: %v", err)
	}
	os.Remove(out)

	p := f.mustPrepare(context.Background())
	if _, err := f.prepare(context.Background()); !errors.As(err, &ce) || !strings.Contains(err.Error(), "in use by another krbops run") {
		t.Errorf("second run on a locked checkpoint: %v", err)
	}
	p.Run(context.Background())
	p.Close()

	os.Truncate(out, 5)
	var ke *CheckpointError
	if _, err := f.prepare(context.Background()); !errors.As(err, &ke) || !strings.Contains(err.Error(), "the output was changed or replaced") {
		t.Errorf("shortened output: %v", err)
	}

	f2 := newFixture(t, 10)
	f2.table.fault = func(n int, c fakeCall) error {
		if c.Op == "Scan" {
			return apiError("ValidationException")
		}
		return nil
	}
	if _, err := f2.prepare(context.Background()); !errors.As(err, &ce) || !strings.Contains(err.Error(), "ValidationException") {
		t.Errorf("rejected expression: %v", err)
	}
	if _, err := f2.prepare(context.Background(), func(c *Config) { c.Spec.Table = "nope" }); !errors.As(err, &fe) || fe.Field != "Spec.Table" || !strings.Contains(err.Error(), "table nope not found") {
		t.Errorf("unknown table: %v", err)
	}
	if _, err := f2.prepare(context.Background(), func(c *Config) { c.Workers = 5 }); !errors.As(err, &fe) || fe.Field != "Workers" {
		t.Errorf("5 workers for 4 segments: %v", err)
	}
}

func TestQueryReadsOneSegment(t *testing.T) {
	f := newFixture(t, 33)
	p := f.mustPrepare(context.Background(), func(c *Config) {
		c.Spec = Spec{Table: "orders", KeyCondition: "pk = :p", Segments: 1, PageSize: 5,
			Values: map[string]types.AttributeValue{":p": &types.AttributeValueMemberS{Value: "x"}}}
		c.Workers = 1
	})
	res := p.Run(context.Background())
	if res.Stop != nil || len(res.Segments) != 1 || res.Segments[0].Items != 33 {
		t.Fatalf("query: %+v", res)
	}
	f.wantExactly(FormatJSON)
}

func TestEstimateFromItemCountAndProbe(t *testing.T) {
	f := newFixture(t, 100)
	f.table.itemCount = 1000
	f.table.delay = 20 * time.Millisecond
	p := f.mustPrepare(context.Background(), func(c *Config) { c.Spec.PageSize = 10 })
	e := p.Estimate()
	if !e.Known || e.Remaining != 1000 || e.PageItems != 10 || e.Parallel != 2 {
		t.Fatalf("estimate %+v", e)
	}
	// 100 pages at the probe's latency (≥ 20ms, however loaded the
	// machine), two at a time.
	if e.PageLatency < 20*time.Millisecond {
		t.Errorf("probe latency %v, below the table's 20ms delay", e.PageLatency)
	}
	if want := time.Duration(100 * float64(e.PageLatency) / 2); e.Duration != want {
		t.Errorf("estimated %v for 100 pages at %v two at a time, want %v", e.Duration, e.PageLatency, want)
	}
	f.table.itemCount = 0
	p.Close()
	p2 := f.mustPrepare(context.Background(), func(c *Config) { c.Spec.PageSize = 10 })
	if p2.Estimate().Known {
		t.Error("an item count of 0 (not yet refreshed by AWS) gave an estimate")
	}
}
