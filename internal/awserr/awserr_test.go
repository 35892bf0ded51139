package awserr

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// sdkWrap wraps a transport error the way the SDK and net/http do:
// OperationError → RequestSendError → *url.Error → the cause.
func sdkWrap(cause error) error {
	return &smithy.OperationError{ServiceID: "DynamoDB", OperationName: "Scan", Err: &smithyhttp.RequestSendError{
		Err: &url.Error{Op: "Post", URL: "https://db.example.test:8443/", Err: cause}}}
}

// httpErr is an HTTP error reply as the SDK wraps one.
func httpErr(status int, cause error) error {
	return &smithy.OperationError{ServiceID: "DynamoDB", OperationName: "Scan", Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status, Header: http.Header{}}},
			Err:      cause,
		},
		RequestID: "REQ1",
	}}
}

func TestCodeTable(t *testing.T) {
	cases := map[string]Class{
		"ExpiredTokenException": Auth, "ExpiredToken": Auth, "RequestExpired": Auth,
		"UnrecognizedClientException": Auth, "InvalidSignatureException": Auth, "SignatureDoesNotMatch": Auth,
		"InvalidClientTokenId": Auth, "MissingAuthenticationToken": Auth, "IncompleteSignature": Auth,
		"AccessDeniedException": Permission, "AccessDenied": Permission, "KMSAccessDeniedException": Permission,
		"DecryptionFailure":                      Permission,
		"ProvisionedThroughputExceededException": Transient, "ThrottlingException": Transient,
		"RequestLimitExceeded": Transient, "InternalServerError": Transient, "InternalServiceError": Transient,
		"ServiceUnavailable": Transient, "SlowDown": Transient,
		"ValidationException": Invalid, "InvalidParameterException": Invalid, "SerializationException": Invalid,
		"ResourceNotFoundException": NotFound,
		"ResourceExistsException":   Conflict, "InvalidRequestException": Conflict, "PreconditionNotMetException": Conflict,
	}
	for code, want := range cases {
		c := Classify(httpErr(400, &smithy.GenericAPIError{Code: code, Message: "first line\nsecond line"}))
		if c.Class != want || c.Code != code || c.Message != "first line" || c.HTTPStatus != 400 || c.RequestID != "REQ1" {
			t.Errorf("%s: %+v, want class %s", code, c, want)
		}
	}
	for _, tc := range []struct {
		status int
		code   string
		want   Class
	}{
		{400, "ConditionalCheckFailedException", Other},
		{500, "SomethingNew", Transient},
		{429, "SomethingNew", Transient},
		{403, "SomethingNew", Permission},
		{404, "SomethingNew", NotFound},
		// The code wins over the status.
		{500, "ExpiredTokenException", Auth},
	} {
		if c := Classify(httpErr(tc.status, &smithy.GenericAPIError{Code: tc.code})); c.Class != tc.want {
			t.Errorf("HTTP %d %s: %+v, want %s", tc.status, tc.code, c, tc.want)
		}
	}
}

func TestStatusWithoutCode(t *testing.T) {
	for status, want := range map[int]Class{403: Permission, 404: NotFound, 429: Transient, 502: Transient, 400: Other} {
		if c := Classify(httpErr(status, errors.New("no code"))); c.Class != want || c.HTTPStatus != status {
			t.Errorf("bare HTTP %d: %+v, want %s", status, c, want)
		}
	}
}

func TestXMLBodyInSnapshot(t *testing.T) {
	body := `<?xml version="1.0"?><ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User x is not authorized</Message></Error></Errors></ErrorResponse>`
	c := Classify(httpErr(403, &smithy.DeserializationError{Err: errors.New("invalid character '<'"), Snapshot: []byte(body)}))
	if c.Class != Permission || c.Code != "AccessDenied" || c.Message != "User x is not authorized" {
		t.Errorf("moto 403: %+v", c)
	}
	// A snapshot that starts mid-body still has its code.
	c = Classify(httpErr(400, &smithy.DeserializationError{Snapshot: []byte(body[40:])}))
	if c.Class != Permission || c.Code != "AccessDenied" {
		t.Errorf("partial snapshot: %+v", c)
	}
	if c := Classify(httpErr(200, &smithy.DeserializationError{Snapshot: []byte(`{"Items": [`)})); c.Class != Transient {
		t.Errorf("a reply cut short: %+v", c)
	}
}

func TestCredentialFailureKeepsNoHelperOutput(t *testing.T) {
	err := &smithy.OperationError{ServiceID: "DynamoDB", OperationName: "Scan",
		Err: fmt.Errorf("failed to sign request: failed to retrieve credentials: %w", errors.New(`credential_process: {"SecretAccessKey":"wJalrXUtnFEMI"}`))}
	c := Classify(err)
	if c.Class != Credentials || strings.Contains(c.Message, "wJalr") {
		t.Errorf("credentials: %+v", c)
	}
}

func TestNetworkAndTimeouts(t *testing.T) {
	refused := sdkWrap(&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")})
	if c := Classify(refused); c.Class != Transient || !strings.Contains(c.Message, "refused") {
		t.Errorf("refused: %+v", c)
	}
	if c := Classify(fmt.Errorf("scan: %w", context.DeadlineExceeded)); c.Class != Transient {
		t.Errorf("deadline: %+v", c)
	}
	if c := Classify(sdkWrap(errors.New("read: connection reset by peer"))); c.Class != Transient {
		t.Errorf("reset: %+v", c)
	}
}

func TestTLSErrorTypes(t *testing.T) {
	leaf := &x509.Certificate{Issuer: pkix.Name{CommonName: "Test Root"}, Subject: pkix.Name{CommonName: "db"},
		DNSNames:  []string{"other.example.test"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}
	future := &x509.Certificate{NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}
	verify := func(err error) error {
		return &tls.CertificateVerificationError{UnverifiedCertificates: []*x509.Certificate{leaf}, Err: err}
	}
	cases := []struct {
		name   string
		cause  error
		reason TLSReason
		msg    string
		hint   string
	}{
		{"unknown authority", verify(x509.UnknownAuthorityError{Cert: leaf}), TLSUnknownAuthority,
			`the server at db.example.test:8443 presents a certificate signed by an unknown authority (issuer "CN=Test Root")`,
			"the server at db.example.test:8443 presents a certificate signed by an unknown authority: point AWS_CA_BUNDLE at the CA's PEM file or add the CA to the system trust store"},
		{"hostname", verify(x509.HostnameError{Certificate: leaf, Host: "db.example.test"}), TLSHostname,
			"the server at db.example.test:8443 presents a certificate that is valid for other.example.test, not db.example.test", "host name"},
		{"expired", verify(x509.CertificateInvalidError{Cert: leaf, Reason: x509.Expired}), TLSExpired,
			"the server at db.example.test:8443 presents a certificate that expired at " + leaf.NotAfter.UTC().Format(time.RFC3339), "renewed"},
		{"not yet valid", verify(x509.CertificateInvalidError{Cert: future, Reason: x509.Expired}), TLSNotYetValid,
			"presents a certificate that is not valid before", "clock"},
		{"other invalid", verify(x509.CertificateInvalidError{Cert: leaf, Reason: x509.IncompatibleUsage}), TLSInvalid,
			"presents a certificate that does not verify: certificate specifies an incompatible key usage", "openssl s_client"},
		{"unwrapped verification", verify(errors.New("x509: something new")), TLSInvalid,
			"presents a certificate that does not verify: something new", "openssl s_client"},
		{"no roots", x509.SystemRootsError{}, TLSNoRoots, "this host has no trust store", "system trust store"},
		{"record header", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, TLSNotTLS,
			"the server at db.example.test:8443 does not speak TLS on this port", "http://"},
		{"plain http", http.ErrSchemeMismatch, TLSNotTLS, "does not speak TLS on this port (it answered plain HTTP)", "http://"},
		{"alert (quic style)", tls.AlertError(42), TLSRefused, "refused the TLS handshake (tls: bad certificate)", "client certificate"},
		{"remote alert", &net.OpError{Op: "remote error", Err: errors.New("tls: handshake failure")}, TLSRefused,
			"refused the TLS handshake (tls: handshake failure)", "client certificate"},
		{"local refusal", errors.New("tls: server selected unsupported protocol version 301"), TLSRefused,
			"failed the TLS handshake (tls: server selected unsupported protocol version 301)", "client certificate"},
	}
	for _, tc := range cases {
		c := Classify(sdkWrap(tc.cause))
		if c.Class != TLS || c.TLSReason != tc.reason || !strings.Contains(c.Message, tc.msg) || c.TLSHost != "db.example.test:8443" {
			t.Errorf("%s: %+v\nwant reason %s, message containing %q", tc.name, c, tc.reason, tc.msg)
		}
		if h := c.TLSHint("AWS_CA_BUNDLE"); !strings.Contains(h, tc.hint) || strings.Contains(h, "\n") {
			t.Errorf("%s: hint %q, want %q in it", tc.name, h, tc.hint)
		}
		if strings.Contains(c.Message, "\n") {
			t.Errorf("%s: message has several lines: %q", tc.name, c.Message)
		}
	}
	// A handshake timeout is the network's, not the certificate's.
	if c := Classify(sdkWrap(timeoutErr{})); c.Class != Transient {
		t.Errorf("handshake timeout: %+v", c)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "net/http: TLS handshake timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// The SDK's standard retryer retries every transport error, TLS ones
// included; the wrapper must say no to those and nothing else.
func TestWithoutTLSRetries(t *testing.T) {
	std := retry.NewStandard()
	tlsErr := sdkWrap(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}})
	if !std.IsErrorRetryable(tlsErr) {
		t.Fatal("the standard retryer no longer retries TLS errors: WithoutTLSRetries may be unnecessary")
	}
	r := WithoutTLSRetries(std)
	if r.IsErrorRetryable(tlsErr) {
		t.Error("a TLS error is retried")
	}
	refused := sdkWrap(&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")})
	if !r.IsErrorRetryable(refused) {
		t.Error("connection refused is no longer retried")
	}
	if r.MaxAttempts() != std.MaxAttempts() {
		t.Error("the wrapper changed MaxAttempts")
	}
	if _, ok := r.(aws.RetryerV2); !ok {
		t.Error("the wrapper is not a RetryerV2")
	}
	if WithoutTLSRetries(aws.NopRetryer{}).IsErrorRetryable(refused) {
		t.Error("NopRetryer became retrying")
	}
}

// certificate makes a self-signed server certificate.
func certificate(t *testing.T, notBefore, notAfter time.Time, names ...string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "krbops test server"},
		NotBefore:    notBefore, NotAfter: notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
		DNSNames:    names,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, cert
}

// scanTLS sends one Scan through the real SDK (with the standard
// retryer, wrapped) and returns its error and how many connections the
// server accepted.
func scanTLS(t *testing.T, endpoint string, roots *x509.CertPool, accepted *atomic.Int32) error {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer tr.CloseIdleConnections()
	cl := dynamodb.New(dynamodb.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		HTTPClient:  &http.Client{Transport: tr},
		Retryer:     WithoutTLSRetries(retry.NewStandard())})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := cl.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String("t")})
	if err == nil {
		t.Fatal("scan succeeded")
	}
	return err
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func startTLS(t *testing.T, cert tls.Certificate, accepted *atomic.Int32, clientCert bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Listener = countingListener{srv.Listener, accepted}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	if clientCert {
		srv.TLS.ClientAuth = tls.RequireAnyClientCert
		// TLS 1.3 checks the client's certificate after the client's
		// handshake is done, so the refusal can race with a reset of the
		// connection (which is retried); TLS 1.2 refuses in the handshake.
		srv.TLS.MaxVersion = tls.VersionTLS12
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake failures are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// Through the real SDK and net/http: each failure is classified TLS,
// names the host and the problem, and is sent exactly once.
func TestTLSThroughSDK(t *testing.T) {
	now := time.Now()
	good, goodX := certificate(t, now.Add(-time.Hour), now.Add(time.Hour), "db.example.test")
	old, oldX := certificate(t, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	pool := func(c *x509.Certificate) *x509.CertPool {
		p := x509.NewCertPool()
		p.AddCert(c)
		return p
	}
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()

	for _, tc := range []struct {
		name       string
		cert       tls.Certificate
		roots      *x509.CertPool
		host       string // replaces 127.0.0.1 in the URL
		clientCert bool
		reason     TLSReason
		msg        string
	}{
		{name: "self-signed", cert: good, reason: TLSUnknownAuthority, msg: "signed by an unknown authority"},
		{name: "wrong host name", cert: good, roots: pool(goodX), host: "localhost", reason: TLSHostname, msg: "not localhost"},
		{name: "expired", cert: old, roots: pool(oldX), reason: TLSExpired, msg: "expired at"},
		{name: "client certificate required", cert: good, roots: pool(goodX), clientCert: true, reason: TLSRefused, msg: "refused the TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var accepted atomic.Int32
			srv := startTLS(t, tc.cert, &accepted, tc.clientCert)
			endpoint := srv.URL
			if tc.host != "" {
				endpoint = strings.Replace(endpoint, "127.0.0.1", tc.host, 1)
			}
			c := Classify(scanTLS(t, endpoint, tc.roots, &accepted))
			wantHost := strings.TrimPrefix(endpoint, "https://")
			if c.Class != TLS || c.TLSReason != tc.reason || !strings.Contains(c.Message, tc.msg) || c.TLSHost != wantHost {
				t.Errorf("%+v, want reason %s, host %s, %q", c, tc.reason, wantHost, tc.msg)
			}
			if n := accepted.Load(); n != 1 {
				t.Errorf("%d connections, want 1 (no retry)", n)
			}
		})
	}
	t.Run("plain http behind https", func(t *testing.T) {
		var none atomic.Int32
		c := Classify(scanTLS(t, strings.Replace(plain.URL, "http://", "https://", 1), nil, &none))
		if c.Class != TLS || c.TLSReason != TLSNotTLS {
			t.Errorf("%+v", c)
		}
	})
}
