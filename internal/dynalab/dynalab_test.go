package dynalab

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/krbops/krbops/dynamo"
	"github.com/krbops/krbops/internal/lab"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestSetupScanAndCompare(t *testing.T) {
	s := ForTest(t)
	c := ctx(t)
	if err := s.Setup(c, "items", 300, 10); err != nil {
		t.Fatal(err)
	}
	out, err := s.Client.Scan(c, &dynamodb.ScanInput{TableName: aws.String("items"), Limit: aws.Int32(10),
		ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal})
	if err != nil {
		t.Fatal(err)
	}
	if out.ConsumedCapacity == nil || aws.ToFloat64(out.ConsumedCapacity.CapacityUnits) <= 0 {
		t.Errorf("dynalite reported no ConsumedCapacity: %+v", out.ConsumedCapacity)
	}
	items, err := s.ScanAll(c, &dynamodb.ScanInput{TableName: aws.String("items"), Limit: aws.Int32(37)})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 300 {
		t.Fatalf("scan found %d items, want 300", len(items))
	}
	want, err := Lines(items, dynamo.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "out.jsonl")
	// One duplicate, one missing, one extra: Compare must see each.
	body := strings.Join(append(append([]string{}, want[1:]...), want[2], `{"x":1}`), "\n") + "\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := s.CompareFile(c, path, &dynamodb.ScanInput{TableName: aws.String("items")}, dynamo.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	if d.Duplicates != 1 || d.Missing != 1 || d.Extra != 1 || d.OK() {
		t.Errorf("Compare = %s, want 1 duplicate, 1 missing, 1 extra", d)
	}
	os.WriteFile(path, []byte(strings.Join(want, "\n")), 0o600)
	if _, err := ReadLines(path); err == nil {
		t.Error("ReadLines accepted a file ending in a partial line")
	}
}

// client signs with key through the proxy, with no SDK retries so every
// injected fault is seen exactly once.
func client(p *Proxy, key string) *dynamodb.Client {
	return dynamodb.New(dynamodb.Options{
		Region: Region, BaseEndpoint: aws.String(p.URL), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(key, "secret", "token"),
	})
}

func TestProxyFaultsInRealWireFormat(t *testing.T) {
	s := ForTest(t)
	c := ctx(t)
	for _, name := range []string{"throttled", "broken", "denied", "moto", "expiring"} {
		if err := s.Setup(c, name, 5, 0); err != nil {
			t.Fatal(err)
		}
	}
	p, err := NewProxy(s.Endpoint, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetRule("throttled", Rule{ThrottleRate: 1})
	p.SetRule("broken", Rule{ServerErrorRate: 1})
	p.SetRule("denied", Rule{Deny: true, DenyActions: []string{"Scan"}, DenyAfter: 1})
	p.SetRule("moto", Rule{Deny: true, MotoStyle: true})
	p.RegisterKey("AKIAEXPIRESAFTER1", KeyPolicy{MaxRequests: 1})
	p.RegisterKey("AKIAEXPIREDALREADY", KeyPolicy{ExpiresAt: time.Now().Add(-time.Second)})

	scan := func(key, table string) error {
		_, err := client(p, key).Scan(c, &dynamodb.ScanInput{TableName: aws.String(table)})
		return err
	}
	cases := []struct {
		key, table string
		class      dynamo.Class
		code       string
		status     int
	}{
		{"AKIAANY", "throttled", dynamo.ClassTransient, "ProvisionedThroughputExceededException", 400},
		{"AKIAANY", "broken", dynamo.ClassTransient, "InternalServerError", 500},
		{"AKIAANY", "moto", dynamo.ClassPermission, "AccessDenied", 403},
		{"AKIAEXPIREDALREADY", "expiring", dynamo.ClassAuth, "ExpiredTokenException", 400},
	}
	for _, tc := range cases {
		err := scan(tc.key, tc.table)
		got := dynamo.Classify(err)
		if got.Class != tc.class || got.Code != tc.code || got.HTTPStatus != tc.status {
			t.Errorf("%s: classified %+v, want %s %s HTTP %d (error: %v)", tc.table, got, tc.class, tc.code, tc.status, err)
		}
	}
	// The first Scan passes, then the policy denies: the proxy counts it.
	if err := scan("AKIAANY", "denied"); err != nil {
		t.Fatalf("first scan of denied table: %v", err)
	}
	err = scan("AKIAANY", "denied")
	if got := dynamo.Classify(err); got.Class != dynamo.ClassPermission || got.Code != "AccessDeniedException" ||
		!strings.Contains(got.Message, "dynamodb:Scan on resource: arn:aws:dynamodb:us-east-1:000000000000:table/denied") {
		t.Errorf("denied: %+v", got)
	}
	if _, err := client(p, "AKIAANY").DescribeTable(c, &dynamodb.DescribeTableInput{TableName: aws.String("denied")}); err != nil {
		t.Errorf("DescribeTable is not in DenyActions but failed: %v", err)
	}
	if n := p.Count("denied", "AccessDeniedException"); n != 1 {
		t.Errorf("proxy counted %d denials, want 1", n)
	}
	// A key valid for one request.
	if err := scan("AKIAEXPIRESAFTER1", "expiring"); err != nil {
		t.Fatalf("first request of a one-request key: %v", err)
	}
	if got := dynamo.Classify(scan("AKIAEXPIRESAFTER1", "expiring")); got.Code != "ExpiredTokenException" {
		t.Errorf("second request of a one-request key: %+v", got)
	}
	// DescribeTable reports the item count AWS would (with a valid CRC).
	p.SetRule("expiring", Rule{ItemCount: 12345})
	dt, err := client(p, "AKIAANY").DescribeTable(c, &dynamodb.DescribeTableInput{TableName: aws.String("expiring")})
	if err != nil || aws.ToInt64(dt.Table.ItemCount) != 12345 || aws.ToInt64(dt.Table.TableSizeBytes) != 1234500 {
		t.Errorf("rewritten DescribeTable: %v %+v", err, dt)
	}
	p.RequireKnownKeys = true
	if got := dynamo.Classify(scan("AKIANEVERREGISTERED", "expiring")); got.Code != "UnrecognizedClientException" || got.Class != dynamo.ClassAuth {
		t.Errorf("unknown key: %+v", got)
	}
	p.RequireKnownKeys = false

	// The raw reply, as DynamoDB sends it.
	req, _ := http.NewRequestWithContext(c, http.MethodPost, p.URL, strings.NewReader(`{"TableName":"throttled"}`))
	req.Header.Set("X-Amz-Target", "DynamoDB_20120810.Scan")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var doc map[string]string
	if err := json.Unmarshal(body, &doc); err != nil || resp.StatusCode != 400 ||
		resp.Header.Get("x-amzn-ErrorType") != "ProvisionedThroughputExceededException" ||
		doc["__type"] != "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException" ||
		resp.Header.Get("Content-Type") != "application/x-amz-json-1.0" {
		t.Errorf("raw throttle reply: %d %v %s", resp.StatusCode, resp.Header, body)
	}
}

func TestBrokerSPNEGO(t *testing.T) {
	r := lab.ForTest(t, lab.Options{})
	s := ForTest(t)
	c := ctx(t)
	p, err := NewProxy(s.Endpoint, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.RequireKnownKeys = true
	b, err := NewBroker(c, r, BrokerOptions{Proxy: p, Policy: func(string, int) KeyPolicy { return KeyPolicy{MaxRequests: 2} },
		Refuse: []string{"refused@" + r.Name}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dir := t.TempDir()
	login := func(name string) *dynamo.KerberosLogin {
		t.Helper()
		if err := r.AddPrincipal(c, name, ""); err != nil {
			t.Fatal(err)
		}
		kt := filepath.Join(dir, name+".keytab")
		if err := r.Keytab(c, name, kt); err != nil {
			t.Fatal(err)
		}
		k, err := dynamo.NewKerberosLogin(dynamo.KerberosOptions{Principal: name, Keytab: kt, Krb5Conf: r.Krb5Conf, Margin: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k := login("svc-export")
	prov := &dynamo.BrokerProvider{URL: b.URL, SPN: b.SPN, Krb: k, Timeout: 10 * time.Second}
	creds, err := prov.Retrieve(c)
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	if !strings.HasPrefix(creds.AccessKeyID, "ASIA") || creds.SecretAccessKey == "" || !creds.CanExpire || time.Until(creds.Expires) < 50*time.Minute {
		t.Errorf("credentials: %s expires %v", creds.AccessKeyID, creds.Expires)
	}
	if n := b.Minted("svc-export@" + r.Name); n != 1 {
		t.Errorf("minted %d for svc-export, want 1", n)
	}
	// The minted key works at the proxy for two requests, then expires.
	cl := dynamodb.New(dynamodb.Options{Region: Region, BaseEndpoint: aws.String(p.URL), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)})
	for i := range 3 {
		_, err := cl.ListTables(c, &dynamodb.ListTablesInput{})
		if code := dynamo.Classify(err).Code; (i < 2 && err != nil) || (i == 2 && code != "ExpiredTokenException") {
			t.Errorf("request %d with the minted key: %v", i+1, err)
		}
	}

	// Without a ticket the broker asks for Negotiate.
	resp, err := http.Get(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != "Negotiate" {
		t.Errorf("no ticket: HTTP %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	// A principal the broker refuses: a permission-class BrokerError.
	_, err = (&dynamo.BrokerProvider{URL: b.URL, SPN: b.SPN, Krb: login("refused"), Timeout: 10 * time.Second}).Retrieve(c)
	var be *dynamo.BrokerError
	if !errors.As(err, &be) || be.Class != dynamo.ClassPermission || be.Status != 403 {
		t.Errorf("refused principal: %v", err)
	}
}
