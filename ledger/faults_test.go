package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/krbops/krbops/internal/awserr"
	"github.com/krbops/krbops/internal/dynalab"
	"github.com/krbops/krbops/internal/fault"
)

// faultLedger is a DynamoDB ledger behind dynalab's fault-injecting proxy,
// signing with creds. The SDK retries with its standard retryer, its
// backoff shortened so that exhausting it does not take seconds.
func faultLedger(t *testing.T, creds aws.CredentialsProvider) (*Dynamo, *dynalab.Proxy, string) {
	t.Helper()
	srv := dynalab.ForTest(t)
	const table = "ledger-faults"
	if _, err := Init(t.Context(), srv.Client, table); err != nil {
		t.Fatal(err)
	}
	px, err := dynalab.NewProxy(srv.Endpoint, 12)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	db := dynamodb.New(dynamodb.Options{
		Region: dynalab.Region, BaseEndpoint: aws.String(px.URL), Credentials: creds,
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts, o.MaxBackoff = 6, 20*time.Millisecond }),
	})
	cache, _ := creds.(*aws.CredentialsCache)
	l, err := OpenDynamo(t.Context(), db, table, cache, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return l, px, table
}

func staticCreds(id string) aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: id, SecretAccessKey: dynalab.SecretAccessKey, Source: "test"}, nil
	})
}

// Throttling is retried with backoff: an admission goes through a table
// that throttles a third of its reads and writes.
func TestDynamoThrottlingIsRetried(t *testing.T) {
	l, px, table := faultLedger(t, staticCreds(dynalab.AccessKeyID))
	px.SetRule(table, dynalab.Rule{ThrottleRate: 0.35, FaultOps: []string{"GetItem", "PutItem", "DeleteItem", "Query"}})
	ctx := t.Context()
	for i := range 5 {
		if _, err := l.Admit(ctx, AdmitRequest{Rotation: rot(fmt.Sprintf("p%d@EX", i), "c1", "server"), Limit: 5, Window: time.Hour}); err != nil {
			t.Fatalf("admission %d through throttling: %v", i, err)
		}
	}
	if _, err := l.Admit(ctx, AdmitRequest{Rotation: rot("p5@EX", "c1", "server"), Limit: 5, Window: time.Hour}); !errors.Is(err, ErrNotAdmitted) {
		t.Fatalf("sixth admission: %v, want ErrNotAdmitted", err)
	}
	if n := px.Count(table, "ProvisionedThroughputExceededException"); n == 0 {
		t.Fatal("the proxy throttled nothing: the test tested nothing")
	}
}

// Throttling that outlasts the retries, and an expired token that a
// refresh cannot cure, end in the "could not complete" class (exit 3)
// with a hint; a permission denial names the action.
func TestDynamoFailuresAreUnreachable(t *testing.T) {
	ctx := t.Context()
	t.Run("throttled", func(t *testing.T) {
		l, px, table := faultLedger(t, staticCreds(dynalab.AccessKeyID))
		px.SetRule(table, dynalab.Rule{ThrottleRate: 1, FaultOps: []string{"GetItem"}})
		_, err := l.Lock(ctx, "svc@EX", "h1", time.Minute)
		var se *ServiceError
		if !errors.As(err, &se) || se.Class != awserr.Transient || fault.ClassOf(err) != fault.Unreachable ||
			!strings.Contains(fault.HintOf(err), "run again later") {
			t.Fatalf("Lock under constant throttling: %v (class %s)", err, fault.ClassOf(err))
		}
		if n := px.Count(table, "ProvisionedThroughputExceededException"); n != 6 {
			t.Errorf("%d throttled attempts, want the retryer's 6", n)
		}
	})
	t.Run("expired", func(t *testing.T) {
		l, px, _ := faultLedger(t, staticCreds("AKIAKRBOPSEXPIRED001"))
		px.RegisterKey("AKIAKRBOPSEXPIRED001", dynalab.KeyPolicy{MaxRequests: 1})
		_, err := l.Admit(ctx, AdmitRequest{Rotation: rot("p@EX", "c1", "server"), Limit: 5, Window: time.Hour})
		var se *ServiceError
		if !errors.As(err, &se) || se.Class != awserr.Auth || se.Code != "ExpiredTokenException" || fault.ClassOf(err) != fault.Unreachable ||
			!strings.Contains(fault.HintOf(err), "refresh the AWS credentials") {
			t.Fatalf("Admit with an expired token: %v", err)
		}
		if recs, _ := l.List(ctx, Filter{}); len(recs) != 0 {
			t.Fatalf("a failed admission left records: %+v", recs)
		}
	})
	t.Run("denied", func(t *testing.T) {
		l, px, table := faultLedger(t, staticCreds(dynalab.AccessKeyID))
		px.SetRule(table, dynalab.Rule{Deny: true, DenyActions: []string{"PutItem"}})
		_, err := l.Lock(ctx, "svc@EX", "h1", time.Minute)
		var se *ServiceError
		if !errors.As(err, &se) || se.Class != awserr.Permission || !strings.Contains(fault.HintOf(err), "dynamodb:PutItem on table "+table) {
			t.Fatalf("Lock without PutItem: %v (hint %q)", err, fault.HintOf(err))
		}
	})
}

// An expired token is refreshed once through the credentials cache, and
// the request resent: a ledger outlives its credentials.
func TestDynamoExpiredTokenRefreshes(t *testing.T) {
	var minted atomic.Int32
	var px *dynalab.Proxy
	provider := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		id := fmt.Sprintf("AKIAKRBOPSREFRESH%03d", minted.Add(1))
		if px != nil {
			px.RegisterKey(id, dynalab.KeyPolicy{MaxRequests: 4})
		}
		return aws.Credentials{AccessKeyID: id, SecretAccessKey: dynalab.SecretAccessKey, Source: "test", CanExpire: true, Expires: time.Now().Add(time.Hour)}, nil
	})
	l, p, table := faultLedger(t, aws.NewCredentialsCache(provider))
	px = p
	px.RegisterKey("AKIAKRBOPSREFRESH001", dynalab.KeyPolicy{MaxRequests: 4}) // minted before the proxy was known
	ctx := t.Context()
	for i := range 4 {
		if _, err := l.Admit(ctx, AdmitRequest{Rotation: rot(fmt.Sprintf("p%d@EX", i), "c1", "server"), Limit: 10, Window: time.Hour}); err != nil {
			t.Fatalf("admission %d: %v", i, err)
		}
	}
	if n := px.Count(table, "ExpiredTokenException"); n == 0 || minted.Load() < 2 {
		t.Fatalf("%d expired answers, %d keys minted: nothing expired, the test tested nothing", n, minted.Load())
	}
}

// A window item at its cap fits DynamoDB's 400 KB item limit (dynalite
// enforces it) and keeps the newest starts, the ones a decision needs.
func TestDynamoWindowItemAtItsCap(t *testing.T) {
	srv := dynalab.ForTest(t)
	ctx := t.Context()
	if _, err := Init(ctx, srv.Client, "ledger-cap"); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDynamo(ctx, srv.Client, "ledger-cap", nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().UnixNano()
	w := window{Keep: time.Hour, Last: base + DynamoMaxLimit + 4999}
	for i := range DynamoMaxLimit + 5000 {
		w.Starts = append(w.Starts, base+int64(i))
	}
	if err := d.putWindow(ctx, "c1", "server", w, 0); err != nil {
		t.Fatalf("a window item of %d starts: %v", len(w.Starts), err)
	}
	got, ver, err := d.getWindow(ctx, "c1", "server")
	if err != nil || ver != 1 || len(got.Starts) != DynamoMaxLimit || got.Starts[0] != base+5000 || got.Last != w.Last {
		t.Fatalf("read back %d starts from %d, version %d, %v", len(got.Starts), got.Starts[0]-base, ver, err)
	}
	if _, err := d.Admit(ctx, AdmitRequest{Rotation: rot("p@EX", "c1", "server"), Limit: DynamoMaxLimit + 1, Window: time.Hour}); err == nil ||
		!strings.Contains(err.Error(), "above the DynamoDB ledger's") {
		t.Fatalf("a limit above the cap: %v", err)
	}
}
