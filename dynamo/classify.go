package dynamo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// Class is an error class of DESIGN.md: what a failed request may do next.
type Class string

const (
	// ClassAuth: the credentials or the ticket are expired or not
	// recognised. Refresh the ticket and the credentials, resend the same
	// page once.
	ClassAuth Class = "authentication"
	// ClassPermission: the identity may not do this. Never retried.
	ClassPermission Class = "permission"
	// ClassTransient: throttling, 5xx, timeouts, connection failures.
	// Back off with full jitter within the retry budget.
	ClassTransient Class = "transient"
	// ClassInvalid: DynamoDB rejected the request itself (bad expression,
	// unknown table). Retrying cannot help; the invocation must change.
	ClassInvalid Class = "invalid-request"
	// ClassCredentials: no AWS credentials could be obtained at all.
	ClassCredentials Class = "credentials"
	// ClassOther: anything else; not retried.
	ClassOther Class = "other"
)

// Classified is a request error sorted into its class, with what the
// forensic log and the report need. Message is the service's own message
// (never a credential helper's output).
type Classified struct {
	Class      Class
	Code       string // DynamoDB/IAM error code, e.g. ExpiredTokenException; "" for network errors
	Message    string
	HTTPStatus int
	RequestID  string
}

var (
	authCodes = map[string]bool{
		"ExpiredToken": true, "ExpiredTokenException": true, "RequestExpired": true,
		"UnrecognizedClientException": true, "InvalidSignatureException": true,
		"InvalidClientTokenId": true, "SignatureDoesNotMatch": true,
		"MissingAuthenticationToken": true, "MissingAuthenticationTokenException": true,
	}
	permissionCodes = map[string]bool{
		"AccessDeniedException": true, "AccessDenied": true, "UnauthorizedOperation": true,
	}
	transientCodes = map[string]bool{
		"ProvisionedThroughputExceededException": true, "ThrottlingException": true,
		"Throttling": true, "ThrottledException": true, "RequestLimitExceeded": true,
		"TooManyRequestsException": true, "RequestThrottled": true,
		"RequestThrottledException": true, "SlowDown": true,
		"InternalServerError": true, "InternalFailure": true, "InternalError": true,
		"ServiceUnavailable": true, "ServiceUnavailableException": true,
		"TransactionInProgressException": true, "RequestTimeout": true,
		"RequestTimeoutException": true,
	}
	invalidCodes = map[string]bool{
		"ValidationException": true, "SerializationException": true,
		"ResourceNotFoundException": true, "InvalidParameterValue": true,
		"IncompleteSignature": true, "UnknownOperationException": true,
	}
)

// xmlCode and xmlMessage read the code and message of an AWS query-style
// XML error body, as moto sends for an IAM denial (HTTP 403,
// <Code>AccessDenied</Code>) where DynamoDB would send JSON: the SDK's JSON
// deserializer cannot parse it and keeps only a snapshot of the body.
var (
	xmlCode    = regexp.MustCompile(`<Code>([^<]{1,128})</Code>`)
	xmlMessage = regexp.MustCompile(`<Message>(?:<!\[CDATA\[)?([^<\]]{1,1000})`)
)

// Classify sorts a request error. A context cancellation of the caller is
// not classified here: check ctx.Err() first.
func Classify(err error) Classified {
	c := Classified{Class: ClassOther}
	if err == nil {
		return c
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		c.HTTPStatus = re.HTTPStatusCode()
		c.RequestID = re.ServiceRequestID()
	}
	var be *BrokerError
	if errors.As(err, &be) {
		c.Class, c.Message, c.HTTPStatus = be.Class, be.Error(), be.Status
		return c
	}
	var ke *KerberosError
	if errors.As(err, &ke) {
		c.Class, c.Message = ClassAuth, ke.Error()
		if ke.Unreachable {
			c.Class = ClassTransient
		}
		return c
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() != "" && ae.ErrorCode() != "UnknownError" {
		c.Code, c.Message = ae.ErrorCode(), firstLine(ae.ErrorMessage())
		switch {
		case authCodes[c.Code]:
			c.Class = ClassAuth
		case permissionCodes[c.Code]:
			c.Class = ClassPermission
		case transientCodes[c.Code], c.HTTPStatus >= 500:
			c.Class = ClassTransient
		case invalidCodes[c.Code]:
			c.Class = ClassInvalid
		}
		return c
	}
	var de *smithy.DeserializationError
	if errors.As(err, &de) && c.HTTPStatus != 0 {
		// A reply that is not DynamoDB's JSON: a proxy's or moto's XML.
		if m := xmlCode.FindSubmatch(de.Snapshot); m != nil {
			c.Code = string(m[1])
		}
		if m := xmlMessage.FindSubmatch(de.Snapshot); m != nil {
			c.Message = strings.TrimSpace(string(m[1]))
		}
		switch {
		case authCodes[c.Code]:
			c.Class = ClassAuth
		case permissionCodes[c.Code], c.Code == "" && c.HTTPStatus == 403:
			c.Class = ClassPermission
		case transientCodes[c.Code], c.HTTPStatus >= 500, c.HTTPStatus == 429:
			c.Class = ClassTransient
		case c.HTTPStatus < 400:
			// A success whose body does not parse was cut short on the way.
			c.Class = ClassTransient
		}
		if c.Message == "" {
			c.Message = fmt.Sprintf("HTTP %d with a body that is not DynamoDB JSON", c.HTTPStatus)
		}
		return c
	}
	if c.HTTPStatus >= 500 || c.HTTPStatus == 429 {
		c.Class, c.Message = ClassTransient, fmt.Sprintf("HTTP %d", c.HTTPStatus)
		return c
	}
	if isCredentialRetrieval(err) {
		// The standard chain's errors can carry a credential_process
		// helper's raw output (secrets): keep none of it.
		c.Class = ClassCredentials
		c.Message = "no AWS credentials: the standard chain (environment, profile, SSO, credential_process, instance role) gave none"
		return c
	}
	if errors.Is(err, context.DeadlineExceeded) {
		c.Class, c.Message = ClassTransient, "request timed out"
		return c
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &oe) || errors.As(err, &ne) || isConnReset(err) {
		c.Class, c.Message = ClassTransient, networkMessage(err)
		return c
	}
	c.Message = firstLine(err.Error())
	return c
}

// isCredentialRetrieval recognises the SDK's wrapping of a credentials
// provider failure (the signer could not get credentials to sign with).
func isCredentialRetrieval(err error) bool {
	s := err.Error()
	return strings.Contains(s, "failed to retrieve credentials") || strings.Contains(s, "failed to refresh cached credentials")
}

func isConnReset(err error) bool {
	s := err.Error()
	return strings.Contains(s, "connection reset") || strings.Contains(s, "EOF") || strings.Contains(s, "broken pipe")
}

// networkMessage keeps the innermost network error: the SDK's wrapping
// repeats the operation name the caller already logs.
func networkMessage(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Error()
	}
	s := err.Error()
	if i := strings.LastIndex(s, ", "); i >= 0 {
		return s[i+2:]
	}
	return s
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}

// PermissionError stops a run: the identity may not perform Action on
// Resource. It is never retried.
type PermissionError struct {
	Action   string // e.g. dynamodb:Scan
	Resource string // table (or index) ARN
	Segment  int    // -1 before the run
	Detail   Classified
}

func (e *PermissionError) Error() string {
	msg := fmt.Sprintf("access denied: %s on %s", e.Action, e.Resource)
	if e.Detail.Code != "" {
		msg += " (" + e.Detail.Code + ")"
	}
	return msg
}

// Hint says what to do next.
func (e *PermissionError) Hint() string {
	return fmt.Sprintf("grant %s on %s to the identity krbops runs as (see --log-file for the service's message), then resume with the same command: committed pages are kept", e.Action, e.Resource)
}

// AuthError stops a run: authentication failed again right after the
// worker refreshed its ticket and credentials.
type AuthError struct {
	Segment int
	Detail  Classified
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("authentication failed again right after refreshing the ticket and credentials: %s: %s", e.Detail.Code, e.Detail.Message)
}

// Hint says what to do next.
func (e *AuthError) Hint() string {
	if strings.Contains(e.Detail.Message, "Signature expired") || e.Detail.Code == "RequestExpired" {
		return "this host's clock is off: run krbops clock-check --aws-endpoint <endpoint>, fix the clock, then resume with the same command"
	}
	return "the refreshed credentials are refused too: check the credential broker's role and the keytab's principal, then resume with the same command"
}

// BudgetError stops a run: transient failures used up the retry budget.
type BudgetError struct {
	Budget int
	Last   Classified
}

func (e *BudgetError) Error() string {
	last := e.Last.Code
	if last == "" {
		last = e.Last.Message
	}
	return fmt.Sprintf("retry budget of %d exhausted; last error: %s", e.Budget, last)
}

// Hint says what to do next.
func (e *BudgetError) Hint() string {
	return "the service keeps failing or throttling: lower --max-rcu or --workers, or wait, then resume with the same command"
}

// RequestError stops a run on an error that retrying cannot fix.
type RequestError struct {
	Operation string
	Detail    Classified
}

func (e *RequestError) Error() string {
	if e.Detail.Code != "" {
		return fmt.Sprintf("dynamodb %s rejected: %s: %s", e.Operation, e.Detail.Code, e.Detail.Message)
	}
	return fmt.Sprintf("dynamodb %s failed: %s", e.Operation, e.Detail.Message)
}

// Hint says what to do next.
func (e *RequestError) Hint() string {
	switch e.Detail.Class {
	case ClassInvalid:
		return "fix the expressions (--key-condition, --filter, --projection, --names, --values) or --table/--index"
	case ClassCredentials:
		return "set AWS credentials (AWS_PROFILE, aws sso login, ...) or pass --keytab, --principal and --credential-broker"
	case ClassTransient:
		return "check --endpoint-url/--region and the network, then resume with the same command"
	}
	return "see --log-file for the request's error, then resume with the same command"
}
