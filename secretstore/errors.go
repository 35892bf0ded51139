package secretstore

import (
	"errors"
	"fmt"

	"github.com/krbops/krbops/internal/fault"
)

// Error kinds. Every error a Store returns for a backend failure is an
// *Error whose Kind is one of these (or nil: an unclassified failure, not
// retried); match with errors.Is.
var (
	// ErrNotFound: the secret, the stage or the version does not exist.
	ErrNotFound = errors.New("not found")
	// ErrPermission: the caller may not do this (IAM or KMS denial, file
	// permissions). Never retried: the same request is denied again.
	ErrPermission = errors.New("permission denied")
	// ErrAuth: the credentials are expired or unknown. Refresh them once,
	// then retry; if the refresh fails, stop.
	ErrAuth = errors.New("authentication failed")
	// ErrTransient: throttling, a 5xx, a timeout or an unreachable service
	// that outlived the backend's own retries. Retry later with backoff.
	ErrTransient = errors.New("transient failure")
	// ErrConflict: the secret's state does not allow the operation (a
	// token reused for other data, promoting a version that is not
	// pending, seeding a secret that has a current version, a secret
	// scheduled for deletion or rotated by a Lambda).
	ErrConflict = errors.New("conflict")
	// ErrLocked: another process holds the file store's lock on the secret.
	ErrLocked = errors.New("locked by another krbops")
	// ErrCorrupt: stored data does not match what the store recorded (a
	// version file whose size or SHA-256 differs from the manifest, a
	// manifest that does not parse, a Secrets Manager version holding a
	// string instead of a binary keytab).
	ErrCorrupt = errors.New("corrupt")
	// ErrInsecure: a file store's directory or file is open to other users.
	ErrInsecure = errors.New("insecure permissions")
	// ErrTLS: the TLS handshake with the store's endpoint failed (a
	// certificate this host does not trust, expired or for another name;
	// a port that does not speak TLS). Never retried, by krbops or the
	// SDK: the trust store, the endpoint or the certificate must change.
	ErrTLS = errors.New("tls handshake failed")
	// ErrCredentials: no AWS credentials could be obtained at all.
	ErrCredentials = errors.New("no credentials")
)

// Error is a failed Store operation. Its message names the operation, the
// secret and the store, never the keytab.
type Error struct {
	Op     string // "get", "get-version", "versions", "seed", "put-pending", "promote", "check"
	Store  string // the store's URL, without credentials
	Secret string // the secret's name (awssm: with the URL's prefix)
	Kind   error  // one of the Err* kinds, or nil
	Err    error  // the cause; for awssm the SDK's error (which never carries SecretBinary)
	// HintText says what the on-call should do next; empty when there is
	// nothing better than retrying later.
	HintText string

	class fault.Class // when the kind alone does not decide it
}

func (e *Error) Error() string {
	msg := "secretstore: " + e.Op + " " + e.Secret + " in " + e.Store + ": "
	if e.Err != nil {
		return msg + e.Err.Error()
	}
	if e.Kind != nil {
		return msg + e.Kind.Error()
	}
	return msg + "failed"
}

// Unwrap exposes both the kind and the cause to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Hint says what the on-call should do next, or "".
func (e *Error) Hint() string { return e.HintText }

// FaultClass sorts the failure for the exit-code table (internal/fault):
//
//   - not found, conflict, insecure permissions, no credentials, an
//     invalid request, a file store's permission error, and a TLS failure
//     against an endpoint the operator configured: fault.Usage. The
//     invocation, the store's setup or local configuration must change.
//   - an IAM/KMS denial, authentication failing, transient failures, a
//     lock held by another run, corrupt stored data, a TLS failure
//     against AWS's own endpoint, and anything unclassified:
//     fault.Unreachable. The store refused, failed or answered with
//     something unusable; the run could not complete.
func (e *Error) FaultClass() fault.Class {
	if e.class != fault.Unclassified {
		return e.class
	}
	switch e.Kind {
	case ErrNotFound, ErrConflict, ErrInsecure, ErrCredentials:
		return fault.Usage
	}
	return fault.Unreachable
}

// IsTransient reports whether err is worth retrying later unchanged.
func IsTransient(err error) bool { return errors.Is(err, ErrTransient) }

// HintOf returns the hint of the first *Error in err's chain, or "".
func HintOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.HintText
	}
	return ""
}

// kindError is a cause that also tells its kind, so the inner helpers of a
// backend can decide the kind where they know it and the method wrapping
// them builds one *Error.
type kindError struct {
	kind error
	msg  string
	hint string
}

func (k *kindError) Error() string { return k.msg }

func failf(kind error, format string, a ...any) *kindError {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, a...)}
}

func (k *kindError) withHint(h string) *kindError { k.hint = h; return k }
