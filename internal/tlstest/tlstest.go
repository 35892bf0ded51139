// Package tlstest starts HTTPS servers with a self-signed certificate no
// client trusts, counting the connections made to them: a test proves
// with the count that a TLS failure was tried once and never retried.
package tlstest

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// UntrustedServer starts the server, closed when t ends; conns counts the
// TCP connections clients opened to it.
func UntrustedServer(t testing.TB) (srv *httptest.Server, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	srv = httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	// The handshake failures the tests cause are expected, not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, conns
}
