package cabundle

import (
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/internal/tlstest"
)

// A client with the bundle of a server's CA trusts that server; without
// it, it does not; a file without a certificate is refused.
func TestLoadTrustsTheBundle(t *testing.T) {
	srv, _ := tlstest.UntrustedServer(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	cert := srv.Certificate()
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	get := func(path string) error {
		cfg, err := Load(path)
		if err != nil {
			return err
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := c.Get(srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(ca); err != nil {
		t.Errorf("with the bundle: %v", err)
	}
	if err := get(""); err == nil {
		t.Error("without the bundle the server was trusted")
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate\n"), 0o600)
	if _, err := Load(junk); !errors.Is(err, ErrNoCertificates) {
		t.Errorf("junk: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("a missing bundle loaded")
	}
}

// The bundle decides which servers receive keytabs: a file another user
// could write, or a link krbops would follow, is refused before it is read.
func TestLoadRefusesUntrustedBundle(t *testing.T) {
	srv, _ := tlstest.UntrustedServer(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.pem")
	if err := os.Symlink(ca, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(link); !errors.Is(err, durable.ErrUntrusted) || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("symlink: %v", err)
	}
	if err := os.Chmod(ca, 0o664); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(ca); !errors.Is(err, durable.ErrUntrusted) || !strings.Contains(err.Error(), "mode 0664 lets other users write it") {
		t.Errorf("group-writable: %v", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chmod(ca, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(ca, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(ca); !errors.Is(err, durable.ErrUntrusted) || !strings.Contains(err.Error(), "belongs to uid 65534") {
			t.Errorf("another user's file: %v", err)
		}
	}
}
