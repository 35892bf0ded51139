package awserr

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// TLSReason is what went wrong in a TLS handshake, for hints and logs.
type TLSReason string

const (
	// TLSUnknownAuthority: no trusted CA signed the server's certificate
	// (self-signed, a private CA, a TLS-intercepting proxy).
	TLSUnknownAuthority TLSReason = "unknown-authority"
	// TLSHostname: the certificate does not name the host connected to.
	TLSHostname TLSReason = "hostname-mismatch"
	// TLSExpired: the certificate's validity ended.
	TLSExpired TLSReason = "expired"
	// TLSNotYetValid: the certificate's validity has not begun (often
	// this host's clock is behind).
	TLSNotYetValid TLSReason = "not-yet-valid"
	// TLSInvalid: the certificate chain does not verify for another
	// reason (usage, constraints, algorithm).
	TLSInvalid TLSReason = "invalid-certificate"
	// TLSNotTLS: the port does not speak TLS (plain HTTP behind https://).
	TLSNotTLS TLSReason = "not-tls"
	// TLSRefused: the server ended the handshake with an alert, or the
	// two sides share no protocol version or cipher suite.
	TLSRefused TLSReason = "handshake-refused"
	// TLSNoRoots: this host has no trust store to verify with.
	TLSNoRoots TLSReason = "no-trust-store"
)

type tlsProblem struct {
	host   string
	reason TLSReason
	what   string // a predicate of "the server at HOST"
}

func (t tlsProblem) message() string {
	if t.host == "" {
		return "the server " + t.what
	}
	return "the server at " + t.host + " " + t.what
}

// tlsFailure recognises a failed TLS handshake in err's chain. Only typed
// errors and crypto/tls's own message prefix are trusted, so nothing of a
// credential provider's text can end up in the description.
func tlsFailure(err error) (tlsProblem, bool) {
	t := tlsProblem{host: hostOf(err)}
	var (
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		sr  x509.SystemRootsError
		cve *tls.CertificateVerificationError
		rh  tls.RecordHeaderError
		al  tls.AlertError
	)
	switch {
	case errors.As(err, &ua):
		t.reason, t.what = TLSUnknownAuthority, "presents a certificate signed by an unknown authority"
		if ua.Cert != nil && ua.Cert.Issuer.String() != "" {
			t.what += fmt.Sprintf(" (issuer %q)", ua.Cert.Issuer.String())
		}
	case errors.As(err, &he):
		t.reason = TLSHostname
		if t.host == "" {
			t.host = he.Host
		}
		if s := strings.TrimPrefix(he.Error(), "x509: "); strings.HasPrefix(s, "certificate is ") {
			t.what = "presents a certificate that is " + strings.TrimPrefix(s, "certificate is ")
		} else {
			t.what = "presents a certificate that does not match the host: " + s
		}
	case errors.As(err, &ci):
		t.reason, t.what = certInvalid(ci, time.Now())
	case errors.As(err, &sr):
		t.reason, t.what = TLSNoRoots, "cannot be verified: this host has no trust store (no system roots)"
	case errors.As(err, &cve):
		// A verification failure of a kind not singled out above.
		t.reason, t.what = TLSInvalid, "presents a certificate that does not verify: "+strings.TrimPrefix(firstLine(cve.Err.Error()), "x509: ")
	case errors.As(err, &rh), errors.Is(err, http.ErrSchemeMismatch):
		// net/http turns a RecordHeaderError whose bytes read "HTTP/"
		// into ErrSchemeMismatch.
		t.reason, t.what = TLSNotTLS, "does not speak TLS on this port"
		if errors.Is(err, http.ErrSchemeMismatch) {
			t.what += " (it answered plain HTTP)"
		}
	case errors.As(err, &al):
		t.reason, t.what = TLSRefused, "refused the TLS handshake ("+al.Error()+")"
	default:
		// A TCP TLS connection reports the peer's alert as
		// net.OpError{Op: "remote error"} around an unexported type, and
		// its own handshake refusals (no common version or cipher suite)
		// as plain errors: both read "tls: ...".
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "remote error" && oe.Err != nil && strings.HasPrefix(oe.Err.Error(), "tls: ") {
			t.reason, t.what = TLSRefused, "refused the TLS handshake ("+oe.Err.Error()+")"
			return t, true
		}
		var ue *url.Error
		if errors.As(err, &ue) && ue.Err != nil && strings.HasPrefix(ue.Err.Error(), "tls: ") {
			t.reason, t.what = TLSRefused, "failed the TLS handshake ("+firstLine(ue.Err.Error())+")"
			return t, true
		}
		return t, false
	}
	return t, true
}

func certInvalid(ci x509.CertificateInvalidError, now time.Time) (TLSReason, string) {
	if ci.Reason == x509.Expired && ci.Cert != nil {
		if now.Before(ci.Cert.NotBefore) {
			return TLSNotYetValid, "presents a certificate that is not valid before " + ci.Cert.NotBefore.UTC().Format(time.RFC3339) +
				" (this host's clock says " + now.UTC().Format(time.RFC3339) + ")"
		}
		return TLSExpired, "presents a certificate that expired at " + ci.Cert.NotAfter.UTC().Format(time.RFC3339)
	}
	return TLSInvalid, "presents a certificate that does not verify: " + strings.TrimPrefix(ci.Error(), "x509: ")
}

// hostOf is the host:port the failed request went to, from the *url.Error
// net/http wraps every transport failure in.
func hostOf(err error) string {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return ""
	}
	u, perr := url.Parse(ue.URL)
	if perr != nil {
		return ""
	}
	return u.Host
}

// TLSHint says what to do about a TLS failure. caVar names the
// environment variable the failing client reads extra CA certificates
// from: AWS_CA_BUNDLE for the SDK's clients, SSL_CERT_FILE for a plain
// Go HTTP client.
func (c Classified) TLSHint(caVar string) string {
	at := "the server"
	if c.TLSHost != "" {
		at += " at " + c.TLSHost
	}
	trust := "add the CA to the system trust store"
	if caVar != "" {
		trust = "point " + caVar + " at the CA's PEM file or add the CA to the system trust store"
	}
	switch c.TLSReason {
	case TLSUnknownAuthority:
		return at + " presents a certificate signed by an unknown authority: " + trust
	case TLSHostname:
		return "connect with a host name the certificate lists, or have the server's certificate reissued for the name in use"
	case TLSExpired:
		return at + " presents an expired certificate: have it renewed; if it should still be valid, check this host's clock"
	case TLSNotYetValid:
		return "this host's clock is probably behind: fix it (chronyc tracking; chronyc makestep), or wait until the certificate is valid"
	case TLSNotTLS:
		return "use http:// for a plain-HTTP endpoint, or the port the server serves TLS on"
	case TLSRefused:
		return "check that the endpoint is the service meant (and whether it requires a client certificate)"
	case TLSNoRoots:
		return trust
	}
	return "check the server's certificate chain (openssl s_client -connect " + c.TLSHost + " -showcerts); if its CA is private, " + trust
}
