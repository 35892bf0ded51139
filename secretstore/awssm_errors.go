package secretstore

import (
	"errors"

	"github.com/krbops/krbops/internal/awserr"
	"github.com/krbops/krbops/internal/fault"
)

// classifyAWS sorts an SDK error (internal/awserr, the table dynamo uses
// too) into a kind, and says which fault class the failure is and what to
// show of it. The SDK has already retried what its retryer deems
// retryable, so a transient kind here means its attempts are spent.
// customEndpoint: the store's endpoint is the operator's, not AWS's.
func classifyAWS(err error, customEndpoint bool) (kind error, class fault.Class, shown error, c awserr.Classified) {
	c = awserr.Classify(err)
	shown = err
	switch c.Class {
	case awserr.Permission:
		kind = ErrPermission
	case awserr.NotFound:
		kind = ErrNotFound
	case awserr.Auth:
		kind = ErrAuth
	case awserr.Transient:
		kind = ErrTransient
	case awserr.Conflict:
		kind = ErrConflict
	case awserr.Invalid:
		class = fault.Usage
	case awserr.Credentials:
		// The SDK's text can quote a credential_process helper's output:
		// show the classifier's own words, and keep no link to the cause.
		kind, shown = ErrCredentials, errors.New(c.Message)
	case awserr.TLS:
		kind, shown = ErrTLS, &tlsError{msg: c.Message, err: err}
		class = fault.Unreachable
		if customEndpoint {
			class = fault.Usage
		}
	}
	return kind, class, shown, c
}

// tlsError says what is wrong with the server's certificate in one line
// instead of the SDK's chain of wrappers.
type tlsError struct {
	msg string
	err error
}

func (e *tlsError) Error() string { return e.msg }
func (e *tlsError) Unwrap() error { return e.err }

func awsHint(kind error, c awserr.Classified, op, secretID string) string {
	action := map[string]string{
		"get":         "secretsmanager:GetSecretValue",
		"get-version": "secretsmanager:GetSecretValue",
		"versions":    "secretsmanager:ListSecretVersionIds",
		"seed":        "secretsmanager:DescribeSecret, ListSecretVersionIds, GetSecretValue and PutSecretValue",
		"put-pending": "secretsmanager:DescribeSecret, ListSecretVersionIds, GetSecretValue and PutSecretValue",
		"promote":     "secretsmanager:DescribeSecret, ListSecretVersionIds and UpdateSecretVersionStage",
		"check":       "secretsmanager:DescribeSecret and ListSecretVersionIds",
	}[op]
	switch kind {
	case ErrPermission:
		return "grant " + action + " on secret " + secretID + " (and kms:Decrypt/GenerateDataKey on its KMS key); see docs/secret-store.md"
	case ErrAuth:
		return "refresh the AWS credentials (aws sso login, or renew the session token) and run again"
	case ErrNotFound:
		if op == "seed" || op == "put-pending" || op == "check" {
			return "create secret " + secretID + " (its KMS key and resource policy are the account owner's choice): " +
				cmdHint("", "aws secretsmanager create-secret", "aws", "secretsmanager", "create-secret", "--name", secretID)
		}
	case ErrTransient:
		return "Secrets Manager is throttling or failing; retry later"
	case ErrTLS:
		// The SDK's HTTP client reads AWS_CA_BUNDLE.
		return c.TLSHint("AWS_CA_BUNDLE")
	case ErrCredentials:
		return "set AWS credentials (AWS_PROFILE, aws sso login, environment) for the store"
	}
	return ""
}
