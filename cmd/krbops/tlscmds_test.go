package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// cmdTLSProxy starts a reverse proxy to TARGET that an AWS client cannot
// trust, for the script's lifetime:
//
//	tls-proxy MODE TARGET
//
// MODE is selfsigned (a certificate for 127.0.0.1 only, signed by a CA
// this host does not know), expired (a self-signed certificate that
// expired yesterday) or plain (no TLS at all: the URL says https but the
// port speaks HTTP). It sets TLS_URL (https://127.0.0.1:PORT), TLS_HOST
// (127.0.0.1:PORT), TLS_PORT, and TLS_CA: a PEM file with the CA to trust.
func cmdTLSProxy(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: tls-proxy selfsigned|expired|plain TARGET")
	}
	target, err := url.Parse(args[1])
	ts.Check(err)
	srv := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	// Every handshake here fails on purpose.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	now := time.Now()
	var ca *x509.Certificate
	switch args[0] {
	case "selfsigned":
		caCert, caKey := newCert(ts, nil, nil, "krbops e2e CA", now.Add(-time.Hour), now.Add(time.Hour), true)
		leaf, _ := newCert(ts, caCert, caKey, "127.0.0.1", now.Add(-time.Hour), now.Add(time.Hour), false)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{*leaf}}
		ca = caCert.Leaf
		srv.StartTLS()
	case "expired":
		c, _ := newCert(ts, nil, nil, "127.0.0.1", now.Add(-48*time.Hour), now.Add(-24*time.Hour), true)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{*c}}
		ca = c.Leaf
		srv.StartTLS()
	case "plain":
		srv.Start()
	default:
		ts.Fatalf("tls-proxy: unknown mode %q", args[0])
	}
	ts.Defer(srv.Close)
	host := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(host)
	ts.Setenv("TLS_URL", "https://"+host)
	ts.Setenv("TLS_HOST", host)
	ts.Setenv("TLS_PORT", port)
	caFile := filepath.Join(ts.Getenv("WORK"), "tls-ca.pem")
	var pemData []byte
	if ca != nil {
		pemData = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	}
	ts.Check(os.WriteFile(caFile, pemData, 0o644))
	ts.Setenv("TLS_CA", caFile)
}

// newCert makes a certificate for name (an IP address or a DNS name),
// signed by parent (self-signed when nil).
func newCert(ts *testscript.TestScript, parent *tls.Certificate, parentKey *ecdsa.PrivateKey, name string, notBefore, notAfter time.Time, isCA bool) (*tls.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ts.Check(err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else if !strings.Contains(name, " ") {
		tmpl.DNSNames = []string{name}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.Leaf, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	ts.Check(err)
	leaf, err := x509.ParseCertificate(der)
	ts.Check(err)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, key
}
