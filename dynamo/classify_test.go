package dynamo

import (
	"context"
	"errors"
	"fmt"
	"github.com/krbops/krbops/internal/tlstest"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/krbops/krbops/internal/fault"
)

// scanVia sends one Scan through the real SDK to a server that answers
// with status, headers and body, so classification is tested on the
// errors the SDK really builds.
func scanVia(t *testing.T, status int, hdr map[string]string, body string) error {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range hdr {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	defer srv.Close()
	return scanAt(srv.URL, credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""), time.Second)
}

func scanAt(endpoint string, creds aws.CredentialsProvider, timeout time.Duration) error {
	cl := dynamodb.New(dynamodb.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), Credentials: creds, Retryer: aws.NopRetryer{}})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := cl.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String("t")})
	return err
}

const jsonCT = "application/x-amz-json-1.0"

func jsonErr(typ, msg string) string {
	return `{"__type":"` + typ + `","message":"` + msg + `"}`
}

func TestClassifyDynamoDBErrors(t *testing.T) {
	cases := []struct {
		status int
		typ    string
		class  Class
	}{
		{400, "com.amazonaws.dynamodb.v20120810#ExpiredTokenException", ClassAuth},
		{400, "com.amazon.coral.service#ExpiredTokenException", ClassAuth},
		{400, "com.amazon.coral.service#UnrecognizedClientException", ClassAuth},
		{400, "com.amazon.coral.service#InvalidSignatureException", ClassAuth},
		{400, "com.amazon.coral.service#RequestExpired", ClassAuth},
		{400, "com.amazon.coral.service#ExpiredToken", ClassAuth},
		{400, "com.amazon.coral.service#AccessDeniedException", ClassPermission},
		{400, "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException", ClassTransient},
		{400, "com.amazonaws.dynamodb.v20120810#ThrottlingException", ClassTransient},
		{400, "com.amazonaws.dynamodb.v20120810#RequestLimitExceeded", ClassTransient},
		{500, "com.amazonaws.dynamodb.v20120810#InternalServerError", ClassTransient},
		{503, "com.amazon.coral.availability#ServiceUnavailable", ClassTransient},
		{400, "com.amazon.coral.validate#ValidationException", ClassInvalid},
		{400, "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException", ClassInvalid},
		{400, "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException", ClassOther},
	}
	for _, tc := range cases {
		code := tc.typ[strings.IndexByte(tc.typ, '#')+1:]
		err := scanVia(t, tc.status, map[string]string{"Content-Type": jsonCT, "x-amzn-RequestId": "REQ1"}, jsonErr(tc.typ, "msg for "+code))
		c := Classify(err)
		if c.Class != tc.class || c.Code != code || c.HTTPStatus != tc.status || c.Message != "msg for "+code || c.RequestID != "REQ1" {
			t.Errorf("%s: %+v, want class %s", code, c, tc.class)
		}
	}
}

// moto denies with HTTP 403 and an XML body (DESIGN.md): the SDK cannot
// parse it as DynamoDB JSON, yet it is a permission error, never retried.
func TestClassifyMotoAccessDeniedXML(t *testing.T) {
	body := `<?xml version="1.0" encoding="utf-8"?>` + "\n" +
		`<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/x is not authorized to perform: dynamodb:Scan</Message><Type>Sender</Type></Error></Errors></ErrorResponse>`
	err := scanVia(t, 403, map[string]string{"X-Amzn-ErrorType": "AccessDenied", "Content-Type": "application/xml"}, body)
	c := Classify(err)
	if c.Class != ClassPermission || c.Code != "AccessDenied" || c.HTTPStatus != 403 ||
		c.Message != "User: arn:aws:iam::123456789012:user/x is not authorized to perform: dynamodb:Scan" {
		t.Errorf("moto 403: %+v (err %v)", c, err)
	}
	// moto's other 403s are authentication problems.
	sig := strings.Replace(body, "AccessDenied", "SignatureDoesNotMatch", 1)
	if c := Classify(scanVia(t, 403, map[string]string{"Content-Type": "application/xml"}, sig)); c.Class != ClassAuth {
		t.Errorf("moto SignatureDoesNotMatch: %+v", c)
	}
	// A bare 403 from a proxy in between is still a denial.
	if c := Classify(scanVia(t, 403, nil, "Forbidden")); c.Class != ClassPermission {
		t.Errorf("bare 403: %+v", c)
	}
	if c := Classify(scanVia(t, 200, map[string]string{"Content-Type": jsonCT}, `{"Items": [{"pk": {"S": "a`)); c.Class != ClassTransient {
		t.Errorf("a reply cut short: %+v", c)
	}
	if c := Classify(scanVia(t, 502, nil, "<html>bad gateway</html>")); c.Class != ClassTransient || c.HTTPStatus != 502 {
		t.Errorf("502 HTML: %+v", c)
	}
}

func TestClassifyNetworkAndTimeouts(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	creds := credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")
	if c := Classify(scanAt("http://"+addr, creds, time.Second)); c.Class != ClassTransient || !strings.Contains(c.Message, "refused") {
		t.Errorf("connection refused: %+v", c)
	}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}))
	defer slow.Close()
	if c := Classify(scanAt(slow.URL, creds, 100*time.Millisecond)); c.Class != ClassTransient {
		t.Errorf("timeout: %+v", c)
	}
}

// A credential_process helper's error output can hold secrets; the
// classified message must not repeat it.
func TestClassifyCredentialFailureKeepsNoHelperOutput(t *testing.T) {
	leaky := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{}, errors.New(`credential_process failed: {"SecretAccessKey":"wJalrXUtnFEMI/K7MDENG"}`)
	})
	err := scanAt("http://127.0.0.1:9", aws.NewCredentialsCache(leaky), time.Second)
	c := Classify(err)
	if c.Class != ClassCredentials || strings.Contains(c.Message, "wJalr") {
		t.Errorf("credentials failure: %+v", c)
	}
	rerr := &RequestError{Operation: "Scan", Detail: c}
	if strings.Contains(rerr.Error(), "wJalr") {
		t.Errorf("error text leaks the helper output: %s", rerr)
	}
}

func TestClassifyOwnErrors(t *testing.T) {
	if c := Classify(&KerberosError{Principal: "p", Op: "login", Unreachable: true, Reason: "no KDC answered"}); c.Class != ClassTransient {
		t.Errorf("unreachable KDC: %+v", c)
	}
	if c := Classify(&KerberosError{Principal: "p", Op: "login", Reason: "KDC_ERR_PREAUTH_FAILED"}); c.Class != ClassAuth {
		t.Errorf("refused login: %+v", c)
	}
	if c := Classify(&BrokerError{URL: "u", Status: 503, Class: ClassTransient, Msg: "the broker failed"}); c.Class != ClassTransient || c.HTTPStatus != 503 {
		t.Errorf("broker 503: %+v", c)
	}
}

func TestKerberosErrorFromGokrb5Text(t *testing.T) {
	cases := map[string]struct {
		reason      string
		unreachable bool
	}{
		"[Root cause: KDC_Error] KDC_Error: AS Exchange Error: kerberos error response from KDC: KRB Error: (24) KDC_ERR_PREAUTH_FAILED Pre-authentication information was invalid": {"KDC_ERR_PREAUTH_FAILED", false},
		"[Root cause: Networking_Error] Networking_Error: AS Exchange Error: failed sending AS_REQ to KDC: failed to communicate with KDC 127.0.0.1:88":                             {"no KDC answered", true},
		"[Root cause: Decrypting_Error] KRBMessage_Handling_Error: AS Exchange Error: ... integrity verification failed":                                                            {"the KDC's reply does not decrypt with the keytab's key (integrity verification failed)", false},
	}
	for text, want := range cases {
		ke := kerberosError("svc@R", "login", errors.New(text))
		if ke.Reason != want.reason || ke.Unreachable != want.unreachable {
			t.Errorf("%q: %+v", text, ke)
		}
		if ke.Hint() == "" {
			t.Errorf("%q: no hint", text)
		}
	}
}

// A certificate this host does not trust stops Prepare at its first
// request: classified TLS, naming the host, sent once (no backoff, no
// budget spent) and, against an endpoint the operator configured, a
// usage error.
func TestPrepareStopsAtOnceOnAnUntrustedCertificate(t *testing.T) {
	srv, conns := tlstest.UntrustedServer(t)
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "SECRET", "AWS_REGION": "us-east-1",
		"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CA_BUNDLE": "", "AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_DYNAMODB": "", "AWS_PROFILE": ""} {
		t.Setenv(k, v)
	}
	f := newFixture(t, 1)
	_, err := f.prepare(context.Background(), func(c *Config) {
		c.NewAPI, c.Endpoint, c.RetryBudget = nil, srv.URL, 50
	})
	var re *RequestError
	if !errors.As(err, &re) || re.Detail.Class != ClassTLS || !re.CustomEndpoint {
		t.Fatalf("Prepare = %v (%T), want a TLS RequestError", err, err)
	}
	host := strings.TrimPrefix(srv.URL, "https://")
	if !strings.Contains(err.Error(), "the server at "+host+" presents a certificate signed by an unknown authority") {
		t.Errorf("message %q", err)
	}
	if h := re.Hint(); !strings.Contains(h, "AWS_CA_BUNDLE") || !strings.Contains(h, host) {
		t.Errorf("hint %q", h)
	}
	if fault.ClassOf(err) != fault.Usage {
		t.Errorf("fault class %s, want usage", fault.ClassOf(err))
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	logged := f.log.String()
	if strings.Contains(logged, `"msg":"retry"`) || !strings.Contains(logged, `"class":"tls"`) || !strings.Contains(logged, `"tls_reason":"unknown-authority"`) {
		t.Errorf("forensic log:\n%s", logged)
	}
	if _, err := os.Stat(f.dir + "/out.jsonl.checkpoint.lock"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file left behind: %v", err)
	}
}

func TestFaultClasses(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want fault.Class
	}{
		{&PermissionError{}, fault.CheckFailed},
		{&AuthError{}, fault.CheckFailed},
		{&BudgetError{}, fault.Unreachable},
		{&KerberosError{}, fault.CheckFailed},
		{&KerberosError{Unreachable: true}, fault.Unreachable},
		{&WriteError{Err: errors.New("disk full")}, fault.Unreachable},
		{&RequestError{Detail: Classified{Class: ClassTransient}}, fault.Unreachable},
		{&RequestError{Detail: Classified{Class: ClassInvalid}}, fault.Usage},
		{&RequestError{Detail: Classified{Class: ClassCredentials}}, fault.Usage},
		{&RequestError{Detail: Classified{Class: ClassTLS}, CustomEndpoint: true}, fault.Usage},
		{&RequestError{Detail: Classified{Class: ClassTLS}}, fault.Unreachable},
		{&BrokerError{Class: ClassTLS}, fault.Usage},
		{&BrokerError{Class: ClassTransient}, fault.Unreachable},
		{&BrokerError{Class: ClassPermission}, fault.CheckFailed},
		{&FieldError{Field: "Out"}, fault.Usage},
		{&ConfigError{Err: errors.New("x")}, fault.Usage},
		{&BindingError{}, fault.Usage},
		{&CheckpointError{}, fault.Usage},
	} {
		if got := fault.ClassOf(fmt.Errorf("wrapped: %w", tc.err)); got != tc.want {
			t.Errorf("%T %+v: %s, want %s", tc.err, tc.err, got, tc.want)
		}
	}
}

// Validation names the offending field; the message spells it in the
// package's words unless the caller spells it.
func TestValidateNamesTheField(t *testing.T) {
	ok := Config{Spec: Spec{Table: "t", Scan: true, Segments: 2}, Out: "o", TicketMargin: time.Minute}
	krb := &KerberosConfig{Keytab: "k", Principal: "p"}
	for _, tc := range []struct {
		mod   func(*Config)
		field string
		msg   string
	}{
		{func(c *Config) { c.Spec.Table = "" }, "Spec.Table", "TableName is required"},
		{func(c *Config) { c.Spec.Scan = false }, "Spec.KeyCondition", "a query needs KeyConditionExpression (or pass Scan)"},
		{func(c *Config) { c.Spec.KeyCondition = "pk = :p" }, "Spec.KeyCondition", "KeyConditionExpression is for a query; a Scan reads every item (use FilterExpression)"},
		{func(c *Config) { c.Spec.Segments = 0 }, "Spec.Segments", "TotalSegments 0 must be at least 1"},
		{func(c *Config) { c.Spec.PageSize = -1 }, "Spec.PageSize", "Limit -1 must not be negative"},
		{func(c *Config) { c.Spec.Names = map[string]string{"s": "status"} }, "Spec.Names", `ExpressionAttributeNames: placeholder "s" must start with '#'`},
		{func(c *Config) { c.Workers = 3 }, "Workers", "workers 3 must be between 1 and TotalSegments 2"},
		{func(c *Config) { c.Out = "" }, "Out", "output file is required"},
		{func(c *Config) { c.RetryBudget = -1 }, "RetryBudget", "retry budget -1 must not be negative"},
		{func(c *Config) { c.MaxRCU = -1 }, "MaxRCU", "read-capacity limit -1 must not be negative"},
		{func(c *Config) { c.TicketMargin = 0 }, "TicketMargin", "ticket margin must be positive"},
		{func(c *Config) { c.Kerberos = krb }, "Kerberos", "keytab, principal and credential broker URL go together"},
		{func(c *Config) { c.Broker = "https://b" }, "Kerberos", "keytab, principal and credential broker URL go together"},
		{func(c *Config) { c.BrokerSPN = "HTTP/b" }, "BrokerSPN", "broker SPN needs credential broker URL"},
	} {
		c := ok
		tc.mod(&c)
		err := c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || err.Error() != tc.msg {
			t.Errorf("%v (field %v), want %s: %q", err, fe, tc.field, tc.msg)
			continue
		}
		if got := fe.Render(func(string) string { return "<x>" }); strings.Contains(got, "{") {
			t.Errorf("rendered %q keeps a placeholder", got)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	// Braces that came in with a value are not placeholders.
	if _, err := ParseValues(`{"{Spec.Table}": 1}`); err == nil || !strings.Contains(err.Error(), "ExpressionAttributeValues") {
		t.Errorf("ParseValues: %v", err)
	}
	fe := &FieldError{Field: "Out", Msg: `{Out} "{Nope}" is bad`}
	if got := fe.Render(nil); got != `output file "{Nope}" is bad` {
		t.Errorf("unknown placeholder: %q", got)
	}
}
