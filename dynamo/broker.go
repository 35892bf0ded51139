package dynamo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/krbops/krbops/internal/awserr"
	"github.com/krbops/krbops/internal/fault"
)

// logKey carries the logger of the worker and segment a call is made for,
// so the credential provider (called by the SDK, deep in a request) logs
// with the right segment.
type logKey struct{}

func withLog(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, logKey{}, l)
}

func logFrom(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(logKey{}).(*slog.Logger); ok && l != nil {
		return l
	}
	if fallback == nil {
		return slog.New(slog.DiscardHandler)
	}
	return fallback
}

// BrokerError is a failed credential-broker request. It never contains the
// broker's reply body: that is where the secrets are.
type BrokerError struct {
	URL    string
	Status int // HTTP status, 0 when there was no reply
	Class  Class
	Msg    string
	// With ClassTLS: the server and what is wrong with its certificate.
	TLSHost   string
	TLSReason awserr.TLSReason
}

func (e *BrokerError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("credential broker %s: HTTP %d: %s", e.URL, e.Status, e.Msg)
	}
	return fmt.Sprintf("credential broker %s: %s", e.URL, e.Msg)
}

// Hint says what to do next.
func (e *BrokerError) Hint() string {
	switch e.Class {
	case ClassPermission:
		return "the broker refuses this principal: ask its owners to allow it"
	case ClassAuth:
		return "the broker did not accept the Kerberos ticket: check the broker's SPN and that the broker's keytab is current"
	case ClassTLS:
		// The broker's client is plain net/http: it reads SSL_CERT_FILE,
		// not AWS_CA_BUNDLE.
		return Classified{Class: e.Class, TLSHost: e.TLSHost, TLSReason: e.TLSReason}.TLSHint("SSL_CERT_FILE")
	}
	return "check the broker's URL and that the broker is up, then resume with the same command"
}

// FaultClass: the broker's URL is always the operator's, so a TLS failure
// is local configuration (fault.Usage); a broker that denies or refuses
// the identity is a failed check (fault.CheckFailed); anything else is the
// broker failing (fault.Unreachable). See classify.go.
func (e *BrokerError) FaultClass() fault.Class {
	switch e.Class {
	case ClassTLS:
		return fault.Usage
	case ClassPermission, ClassAuth:
		return fault.CheckFailed
	}
	return fault.Unreachable
}

// DefaultBrokerSPN is the SPN krbops asks a ticket for: HTTP/<host of the
// URL>, as browsers and curl --negotiate do (without their DNS
// canonicalisation, which a test or a load balancer can defeat).
func DefaultBrokerSPN(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Hostname() == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("%q is not an http(s) URL", rawURL)
	}
	return "HTTP/" + strings.ToLower(u.Hostname()), nil
}

// BrokerProvider is an aws.CredentialsProvider that GETs credentials from
// a broker with SPNEGO (the worker's own Kerberos ticket). The broker
// answers like a credential_process helper:
//
//	{"Version": 1, "AccessKeyId": "...", "SecretAccessKey": "...",
//	 "SessionToken": "...", "Expiration": "2030-01-01T00:00:00Z"}
type BrokerProvider struct {
	URL  string
	SPN  string
	Krb  *KerberosLogin
	HTTP *http.Client
	Log  *slog.Logger
	// Timeout bounds one broker request.
	Timeout time.Duration
}

// maxBrokerReply bounds what is read of a reply: credentials are well
// under 8 KiB, and an endless body must not exhaust memory.
const maxBrokerReply = 64 << 10

type processCredentials struct {
	Version         int
	AccessKeyId     string
	SecretAccessKey string
	SessionToken    string
	Expiration      *time.Time
}

// Retrieve fetches a fresh set of credentials.
func (p *BrokerProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	log := logFrom(ctx, p.Log)
	failErr := func(be *BrokerError) (aws.Credentials, error) {
		be.URL = p.URL
		attrs := []slog.Attr{slog.String("broker", p.URL), slog.Int("http_status", be.Status),
			slog.String("class", string(be.Class)), slog.String("error", be.Msg)}
		if be.Class == ClassTLS {
			attrs = append(attrs, slog.String("tls_host", be.TLSHost), slog.String("tls_reason", string(be.TLSReason)))
		}
		log.LogAttrs(ctx, slog.LevelWarn, "credentials error", attrs...)
		return aws.Credentials{}, be
	}
	fail := func(status int, class Class, msg string) (aws.Credentials, error) {
		return failErr(&BrokerError{Status: status, Class: class, Msg: msg})
	}
	log.LogAttrs(ctx, slog.LevelInfo, "credentials request", slog.String("broker", p.URL), slog.String("principal", p.Krb.Principal()))
	if p.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Timeout)
		defer cancel()
	}
	auth, err := p.Krb.NegotiateHeader(ctx, p.SPN)
	if err != nil {
		return aws.Credentials{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return fail(0, ClassOther, "bad URL")
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "application/json")
	hc := p.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return aws.Credentials{}, ctx.Err()
		}
		if c := awserr.Classify(err); c.Class == ClassTLS {
			return failErr(&BrokerError{Class: ClassTLS, Msg: c.Message, TLSHost: c.TLSHost, TLSReason: c.TLSReason})
		}
		return fail(0, ClassTransient, awserr.NetworkMessage(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBrokerReply+1))
	if err != nil {
		return fail(resp.StatusCode, ClassTransient, "reading the reply: "+awserr.NetworkMessage(err))
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return fail(resp.StatusCode, ClassAuth, "the broker did not accept the Kerberos ticket")
	case resp.StatusCode == http.StatusForbidden:
		return fail(resp.StatusCode, ClassPermission, "the broker refused this principal")
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fail(resp.StatusCode, ClassTransient, "the broker failed")
	case resp.StatusCode != http.StatusOK:
		return fail(resp.StatusCode, ClassOther, "unexpected status")
	case len(body) > maxBrokerReply:
		return fail(resp.StatusCode, ClassOther, "reply larger than 64 KiB")
	}
	var pc processCredentials
	// The decode error is not reported: encoding/json quotes the bytes
	// around the problem, which may be a secret.
	if json.Unmarshal(body, &pc) != nil {
		return fail(resp.StatusCode, ClassOther, "reply is not credential_process JSON")
	}
	switch {
	case pc.Version != 1:
		return fail(resp.StatusCode, ClassOther, fmt.Sprintf("reply has Version %d, want 1", pc.Version))
	case pc.AccessKeyId == "" || pc.SecretAccessKey == "":
		return fail(resp.StatusCode, ClassOther, "reply lacks AccessKeyId or SecretAccessKey")
	}
	creds := aws.Credentials{
		AccessKeyID:     pc.AccessKeyId,
		SecretAccessKey: pc.SecretAccessKey,
		SessionToken:    pc.SessionToken,
		Source:          "krbops-credential-broker",
	}
	attrs := []slog.Attr{slog.String("broker", p.URL), slog.String("access_key_suffix", keySuffix(pc.AccessKeyId))}
	if pc.Expiration != nil {
		creds.CanExpire, creds.Expires = true, *pc.Expiration
		attrs = append(attrs, slog.Time("expiration", *pc.Expiration))
	}
	log.LogAttrs(ctx, slog.LevelInfo, "credentials granted", attrs...)
	return creds, nil
}

// keySuffix identifies an access key in the log without writing it out:
// the last four characters, as the AWS console shows them.
func keySuffix(id string) string {
	if len(id) <= 4 {
		return "****"
	}
	return "…" + id[len(id)-4:]
}
