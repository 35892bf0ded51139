package dynamo

import (
	"errors"
	"fmt"
	"strings"

	"github.com/krbops/krbops/internal/awserr"
	"github.com/krbops/krbops/internal/fault"
)

// Class is an error class of DESIGN.md: what a failed request may do
// next. The classes and their code table are internal/awserr's, shared
// with the secret store.
type Class = awserr.Class

const (
	// ClassAuth: the credentials or the ticket are expired or not
	// recognised. Refresh the ticket and the credentials, resend the same
	// page once.
	ClassAuth = awserr.Auth
	// ClassPermission: the identity may not do this. Never retried.
	ClassPermission = awserr.Permission
	// ClassTransient: throttling, 5xx, timeouts, connection failures.
	// Back off with full jitter within the retry budget.
	ClassTransient = awserr.Transient
	// ClassInvalid: DynamoDB rejected the request itself (bad expression,
	// unknown table). Retrying cannot help; the invocation must change.
	ClassInvalid = awserr.Invalid
	// ClassNotFound: an HTTP 404 without a DynamoDB error code, i.e. the
	// endpoint is not DynamoDB. (ResourceNotFoundException is ClassInvalid
	// here: see Classify.)
	ClassNotFound = awserr.NotFound
	// ClassConflict: a look-alike's state conflict; not retried.
	ClassConflict = awserr.Conflict
	// ClassCredentials: no AWS credentials could be obtained at all.
	ClassCredentials = awserr.Credentials
	// ClassTLS: the TLS handshake with the endpoint (or the credential
	// broker) failed. Never retried.
	ClassTLS = awserr.TLS
	// ClassOther: anything else; not retried.
	ClassOther = awserr.Other
)

// Classified is a request error sorted into its class, with what the
// forensic log and the report need. Message is the service's own message
// (never a credential helper's output).
type Classified = awserr.Classified

// Classify sorts a request error. A context cancellation of the caller is
// not classified here: check ctx.Err() first.
func Classify(err error) Classified {
	var be *BrokerError
	if errors.As(err, &be) {
		return Classified{Class: be.Class, Message: be.Error(), HTTPStatus: be.Status, TLSHost: be.TLSHost, TLSReason: be.TLSReason}
	}
	var ke *KerberosError
	if errors.As(err, &ke) {
		c := Classified{Class: ClassAuth, Message: ke.Error()}
		if ke.Unreachable {
			c.Class = ClassTransient
		}
		return c
	}
	c := awserr.Classify(err)
	if c.Code == "ResourceNotFoundException" {
		// A read creates nothing, so a missing table or index is the
		// invocation's mistake, as a bad expression is.
		c.Class = ClassInvalid
	}
	return c
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}

// The fault classes (internal/fault) of the errors that stop a run, by
// what fixes them:
//
//   - permission denied, authentication failing again right after a
//     refresh, a Kerberos login the KDC refused, a broker that denies or
//     refuses the credentials: fault.CheckFailed (exit 1). The run
//     answered the question "may this identity do this?" with no; the
//     on-call must act on the identity, not retry.
//   - a spent retry budget, an unreachable KDC, a failing service or
//     broker: fault.Unreachable (exit 3). The dependency failed and the run
//     could not complete; the invocation itself may be right.
//   - an invalid request (an expression DynamoDB rejects, an unknown table
//     or index), a 404 from an endpoint that is not DynamoDB, no AWS
//     credentials at all, and every FieldError, ConfigError, BindingError
//     and CheckpointError: fault.Usage. Fixing the invocation or local
//     configuration fixes the run.
//   - a TLS failure: fault.Usage when the endpoint is the operator's own
//     (a configured endpoint URL, the credential broker): trusting its CA
//     or correcting its URL is local configuration (exit 2). Against AWS's
//     default endpoint nothing the operator typed is wrong, so it is
//     fault.Unreachable.
//   - a failed write of the output or checkpoint: fault.Unreachable.

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
	return fmt.Sprintf("grant %s on %s to the identity krbops runs as (the forensic log has the service's message), then resume with the same command: committed pages are kept", e.Action, e.Resource)
}

// FaultClass: see the mapping above.
func (e *PermissionError) FaultClass() fault.Class { return fault.CheckFailed }

// AuthError stops a run: authentication failed again right after the
// worker refreshed its ticket and credentials.
type AuthError struct {
	Segment int
	Detail  Classified
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("authentication failed again right after refreshing the ticket and credentials: %s: %s", e.Detail.Code, e.Detail.Message)
}

// ClockSkew reports whether the service refused the signature's time:
// this host's clock, not the credentials, is what is wrong.
func (e *AuthError) ClockSkew() bool {
	return strings.Contains(e.Detail.Message, "Signature expired") || e.Detail.Code == "RequestExpired"
}

// Hint says what to do next.
func (e *AuthError) Hint() string {
	if e.ClockSkew() {
		return "this host's clock is off from the service's (SigV4 allows 5 minutes): fix the clock, then resume with the same command"
	}
	return "the refreshed credentials are refused too: check the credential broker's role and the keytab's principal, then resume with the same command"
}

// FaultClass: see the mapping above.
func (e *AuthError) FaultClass() fault.Class { return fault.CheckFailed }

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
	return "the service keeps failing or throttling: lower the read-capacity limit or the number of workers, or wait, then resume with the same command"
}

// FaultClass: see the mapping above.
func (e *BudgetError) FaultClass() fault.Class { return fault.Unreachable }

// RequestError stops a run on an error that retrying cannot fix.
type RequestError struct {
	Operation string
	Detail    Classified
	// CustomEndpoint: the request went to an endpoint the operator
	// configured, not AWS's default for the region.
	CustomEndpoint bool
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
		return "fix the key condition, filter or projection expression, the attribute names or values, or the table or index name"
	case ClassCredentials:
		return "set AWS credentials (AWS_PROFILE, aws sso login, ...) or use a Kerberos identity with a credential broker"
	case ClassTransient:
		return "check the endpoint, the region and the network, then resume with the same command"
	case ClassNotFound:
		return "the endpoint answered 404 Not Found: check that it is a DynamoDB endpoint"
	case ClassTLS:
		// The SDK's HTTP client reads AWS_CA_BUNDLE.
		return e.Detail.TLSHint("AWS_CA_BUNDLE")
	}
	return "the forensic log has the request's error; resume with the same command once it is fixed"
}

// FaultClass: see the mapping above.
func (e *RequestError) FaultClass() fault.Class {
	switch e.Detail.Class {
	case ClassInvalid, ClassNotFound, ClassCredentials:
		return fault.Usage
	case ClassTLS:
		if e.CustomEndpoint {
			return fault.Usage
		}
	}
	return fault.Unreachable
}
