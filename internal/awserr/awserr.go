// Package awserr sorts the errors of AWS (and AWS-compatible) HTTP APIs
// into the classes of DESIGN.md "Error classes", once for every client
// krbops builds: dynamo and secretstore decide what to retry from the same
// table, so one AWS error code never means "refresh" in one command and
// "stop" in another.
//
// Start with [Classify]. TLS failures are a class of their own ([TLS]):
// they arrive wrapped in *url.Error, which satisfies net.Error, and would
// otherwise be retried as network trouble although no retry can fix a
// certificate. [WithoutTLSRetries] keeps the SDK's own retryer from
// retrying them.
//
// The package never prints, and the messages it builds never quote a
// credential provider's error text: a credential_process helper's output
// can hold secrets.
package awserr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// Class is what a failed request may do next. The string values appear
// in forensic logs and reports: keep them stable.
type Class string

const (
	// Auth: the credentials or the ticket are expired, unknown or do not
	// sign. Refresh them once and resend; stop if that fails again.
	Auth Class = "authentication"
	// Permission: the identity may not do this (IAM, KMS or a resource
	// policy). Never retried.
	Permission Class = "permission"
	// Transient: throttling, 5xx, timeouts, connection failures. Back off
	// with full jitter within a retry budget.
	Transient Class = "transient"
	// Invalid: the service rejected the request itself (bad expression,
	// bad parameter). The invocation must change.
	Invalid Class = "invalid-request"
	// NotFound: the named resource does not exist.
	NotFound Class = "not-found"
	// Conflict: the resource's state does not allow the operation.
	Conflict Class = "conflict"
	// Credentials: no credentials could be obtained to sign with.
	Credentials Class = "credentials"
	// TLS: the TLS handshake failed (untrusted, expired or misnamed
	// certificate; a port that does not speak TLS). Never retried: the
	// same handshake fails the same way until the trust store, the
	// endpoint or the server's certificate changes.
	TLS Class = "tls"
	// Other: anything else; not retried.
	Other Class = "other"
)

// Classified is a request error sorted into its class, with what a
// forensic log and a report need.
type Classified struct {
	Class Class
	// Code is the service's error code (e.g. ExpiredTokenException); ""
	// for network and TLS errors.
	Code string
	// Message is the first line of the service's own message, or a
	// description written here; never a credential provider's text.
	Message    string
	HTTPStatus int
	RequestID  string
	// For TLS only: the server (host:port) and what is wrong with it.
	TLSHost   string
	TLSReason TLSReason
}

// The code table. A code is in exactly one class; codes of every service
// krbops calls are listed together, since look-alikes (moto, proxies)
// answer with each other's codes.
var codeClass = map[string]Class{}

func init() {
	add := func(c Class, codes ...string) {
		for _, code := range codes {
			if prev, dup := codeClass[code]; dup {
				panic(fmt.Sprintf("awserr: %s is both %s and %s", code, prev, c))
			}
			codeClass[code] = c
		}
	}
	add(Auth,
		"ExpiredToken", "ExpiredTokenException", "RequestExpired",
		"UnrecognizedClientException", "InvalidClientTokenId",
		"InvalidSignatureException", "SignatureDoesNotMatch",
		"MissingAuthenticationToken", "MissingAuthenticationTokenException",
		// A signature that does not conform (a session token without its
		// key, a truncated header) is a signing problem like
		// SignatureDoesNotMatch: one refresh of the credentials is cheap
		// and bounded, and a second failure stops the run.
		"IncompleteSignature")
	add(Permission,
		"AccessDeniedException", "AccessDenied", "UnauthorizedOperation",
		// KMS refusing a secret's key: a key-policy problem, as permanent
		// as an IAM denial.
		"DecryptionFailure", "EncryptionFailure", "KMSAccessDeniedException")
	add(Transient,
		"ProvisionedThroughputExceededException", "ThrottlingException",
		"Throttling", "ThrottledException", "RequestLimitExceeded",
		"TooManyRequestsException", "RequestThrottled", "RequestThrottledException",
		"SlowDown", "InternalServerError", "InternalFailure", "InternalError",
		"InternalServiceError", "ServiceUnavailable", "ServiceUnavailableException",
		"TransactionInProgressException", "RequestTimeout", "RequestTimeoutException")
	add(Invalid,
		"ValidationException", "SerializationException", "InvalidParameterValue",
		"InvalidParameterException", "InvalidParameterCombination", "MissingParameter",
		"UnknownOperationException")
	add(NotFound, "ResourceNotFoundException")
	add(Conflict,
		// Secrets Manager answers InvalidRequestException for an operation
		// the secret's state forbids (scheduled for deletion, stage moves).
		"ResourceExistsException", "InvalidRequestException", "PreconditionNotMetException")
}

// CodeClass returns the class of an AWS error code, and false for a code
// the table does not know.
func CodeClass(code string) (Class, bool) {
	c, ok := codeClass[code]
	return c, ok
}

// Classify sorts a request error. A cancellation by the caller is not
// classified here: check ctx.Err() first.
func Classify(err error) Classified {
	c := Classified{Class: Other}
	if err == nil {
		return c
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		c.HTTPStatus = re.HTTPStatusCode()
		c.RequestID = re.ServiceRequestID()
	}
	// Before anything that looks at net.Error: a TLS failure is one too.
	if t, ok := tlsFailure(err); ok {
		c.Class, c.TLSHost, c.TLSReason, c.Message = TLS, t.host, t.reason, t.message()
		return c
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() != "" && ae.ErrorCode() != "UnknownError" {
		c.Code, c.Message = ae.ErrorCode(), firstLine(ae.ErrorMessage())
		c.Class = byCodeOrStatus(c.Code, c.HTTPStatus)
		return c
	}
	var de *smithy.DeserializationError
	if errors.As(err, &de) && c.HTTPStatus != 0 {
		// A reply in another protocol than the client's: moto's or a
		// proxy's XML where the service speaks JSON.
		c.Code, c.Message, _ = XMLError(de.Snapshot)
		c.Message = firstLine(c.Message)
		c.Class = byCodeOrStatus(c.Code, c.HTTPStatus)
		if c.Class == Other && c.HTTPStatus < 400 {
			// A success whose body does not parse was cut short on the way.
			c.Class = Transient
		}
		if c.Message == "" {
			c.Message = fmt.Sprintf("HTTP %d with a body the client cannot parse", c.HTTPStatus)
		}
		return c
	}
	if c.HTTPStatus != 0 {
		if c.Class = byCodeOrStatus("", c.HTTPStatus); c.Class != Other {
			c.Message = fmt.Sprintf("HTTP %d", c.HTTPStatus)
			return c
		}
	}
	if IsCredentialRetrieval(err) {
		// The standard chain's errors can carry a credential_process
		// helper's raw output (secrets): keep none of it.
		c.Class = Credentials
		c.Message = "no AWS credentials: the standard chain (environment, profile, SSO, credential_process, instance role) gave none"
		return c
	}
	if errors.Is(err, context.DeadlineExceeded) {
		c.Class, c.Message = Transient, "request timed out"
		return c
	}
	var ne net.Error
	if errors.As(err, &ne) || isConnReset(err) {
		c.Class, c.Message = Transient, NetworkMessage(err)
		return c
	}
	c.Message = firstLine(err.Error())
	return c
}

// byCodeOrStatus is the code table, and for a code it does not know (or
// none) the HTTP status: a 403 from a proxy or look-alike is a denial,
// and refusing to retry it is the safe reading.
func byCodeOrStatus(code string, status int) Class {
	if c, ok := codeClass[code]; ok {
		return c
	}
	switch {
	case status >= 500, status == 429:
		return Transient
	case status == 403:
		return Permission
	case status == 404:
		return NotFound
	}
	return Other
}

// IsCredentialRetrieval recognises the SDK's wrapping of a credentials
// provider failure (the signer could not get credentials to sign with).
func IsCredentialRetrieval(err error) bool {
	s := err.Error()
	return strings.Contains(s, "failed to retrieve credentials") || strings.Contains(s, "failed to refresh cached credentials")
}

func isConnReset(err error) bool {
	s := err.Error()
	return strings.Contains(s, "connection reset") || strings.Contains(s, "EOF") || strings.Contains(s, "broken pipe")
}

// NetworkMessage keeps the innermost network error: the SDK's wrapping
// repeats the operation name the caller already logs.
func NetworkMessage(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Error()
	}
	s := firstLine(err.Error())
	if i := strings.LastIndex(s, ", "); i >= 0 {
		return s[i+2:]
	}
	return s
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}
