package awserr

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// WithoutTLSRetries returns r, except that it never retries a TLS
// failure. The SDK's standard retryer retries every error the HTTP
// client returns (smithyhttp.RequestSendError says ConnectionError), so a
// certificate it cannot verify is tried again with backoff, up to its
// attempt limit, each time failing the same way.
//
// Use it in a client's options, after the SDK has resolved the retryer:
//
//	func(o *secretsmanager.Options) { o.Retryer = awserr.WithoutTLSRetries(o.Retryer) }
func WithoutTLSRetries(r aws.Retryer) aws.Retryer {
	if r == nil {
		return nil
	}
	v2, ok := r.(aws.RetryerV2)
	if !ok {
		v2 = retryerV2{r}
	}
	return noTLSRetry{v2}
}

type noTLSRetry struct{ aws.RetryerV2 }

func (r noTLSRetry) IsErrorRetryable(err error) bool {
	if _, ok := tlsFailure(err); ok {
		return false
	}
	return r.RetryerV2.IsErrorRetryable(err)
}

// retryerV2 adapts a retryer that predates GetAttemptToken, as the SDK's
// own unexported wrapper does.
type retryerV2 struct{ aws.Retryer }

func (r retryerV2) GetAttemptToken(ctx context.Context) (func(error) error, error) {
	return r.GetInitialToken(), nil
}
