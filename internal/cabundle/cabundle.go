// Package cabundle turns a --ca-bundle file into the TLS configuration
// every HTTPS client of a krbops run uses (the AWS SDK's, the credential
// broker's, the endpoint clock probe's), so a private CA is trusted
// everywhere or nowhere.
package cabundle

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/krbops/krbops/internal/durable"
)

// maxBundle bounds what is read: a full public CA bundle is ~250 KiB.
const maxBundle = 4 << 20

// Load reads the PEM bundle at path and returns a TLS configuration that
// trusts its certificates on top of the system's (as AWS_CA_BUNDLE does
// for the AWS SDK). An empty path returns nil: the default trust.
func Load(path string) (*tls.Config, error) {
	if path == "" {
		return nil, nil
	}
	// The bundle decides which TLS servers receive keytabs and ledger
	// writes: another user's file (or a link to one) must not decide that.
	b, err := durable.ReadTrusted(path, maxBundle)
	if err != nil {
		return nil, fmt.Errorf("ca bundle %s: %w", path, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("ca bundle %s: %w", path, ErrNoCertificates)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// AWSOptions are the AWS SDK load options that make its HTTP client
// trust tlsCfg's CAs; none for nil (the SDK's default, which honours
// AWS_CA_BUNDLE).
func AWSOptions(tlsCfg *tls.Config) []func(*config.LoadOptions) error {
	if tlsCfg == nil {
		return nil
	}
	return []func(*config.LoadOptions) error{config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.TLSClientConfig = tlsCfg.Clone()
	}))}
}

// ErrNoCertificates: the file holds no PEM certificate.
var ErrNoCertificates = errors.New("no PEM certificate in it")
