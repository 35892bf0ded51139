package keylogin

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/krbops/krbops/internal/fault"
)

func TestClassifyKeyErrors(t *testing.T) {
	for text, want := range map[string]struct {
		reason           string
		key, unreachable bool
	}{
		"KDC_Error: AS Exchange Error: kerberos error response from KDC: KRB Error: (24) KDC_ERR_PREAUTH_FAILED Pre-authentication information was invalid": {"KDC_ERR_PREAUTH_FAILED", true, false},
		"KRB Error: (6) KDC_ERR_C_PRINCIPAL_UNKNOWN Client not found in Kerberos database":                                                                  {"KDC_ERR_C_PRINCIPAL_UNKNOWN", true, false},
		"KRB Error: (37) KRB_AP_ERR_SKEW Clock skew too great":                                                                                              {"KRB_AP_ERR_SKEW", false, false},
		"[Root cause: Networking_Error] failed to communicate with KDC 127.0.0.1:88":                                                                        {"no KDC answered", false, true},
		"[Root cause: Decrypting_Error] ... integrity verification failed":                                                                                  {"the KDC's reply does not decrypt with the keytab's key (integrity verification failed)", true, false},
	} {
		e := Classify("svc@R", "login", errors.New(text))
		if e.Reason != want.reason || e.Key != want.key || e.Unreachable != want.unreachable || e.Hint() == "" {
			t.Errorf("%q: %+v", text, e)
		}
	}
}

// Neither keytab readable: the error names both failures, is a key error
// (so a held ticket may be kept) and a usage error (the files must change).
func TestLoginBothKeytabsUnreadable(t *testing.T) {
	cfg := config.New()
	cfg.LibDefaults.DefaultRealm = "KRBOPS.TEST"
	dir := t.TempDir()
	l, err := New(Options{Primary: Identity{Principal: "svc", Keytab: filepath.Join(dir, "a.keytab")},
		Fallback: &Identity{Principal: "standby@KRBOPS.TEST", Keytab: filepath.Join(dir, "b.keytab")}, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if l.Principal() != "svc@KRBOPS.TEST" || l.FallbackPrincipal() != "standby@KRBOPS.TEST" {
		t.Errorf("principals %q %q", l.Principal(), l.FallbackPrincipal())
	}
	_, err = l.Login(context.Background(), "initial")
	var e *Error
	if !errors.As(err, &e) || !e.Key || e.Fallback == nil || fault.ClassOf(err) != fault.Usage {
		t.Fatalf("Login = %v", err)
	}
	if !strings.Contains(err.Error(), "kerberos login as svc@KRBOPS.TEST: keytab ") || !strings.Contains(err.Error(), "; fallback login as standby@KRBOPS.TEST: keytab ") {
		t.Errorf("error %q", err)
	}
}

func TestNewNeedsARealm(t *testing.T) {
	if _, err := New(Options{Primary: Identity{Principal: "svc", Keytab: "k"}, Config: config.New()}); err == nil {
		t.Error("a principal without a realm and no default_realm was accepted")
	}
}

// A KDC that never answers does not hold a login: cancelling ctx (SIGINT)
// ends it at once with context.Canceled, not after every KDC's and
// transport's timeout with "no KDC answered".
func TestLoginCancelledAgainstASilentKDC(t *testing.T) {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	asked := make(chan struct{})
	go func() {
		buf := make([]byte, 65536)
		if _, _, err := udp.ReadFrom(buf); err == nil {
			close(asked) // read, never answered
		}
	}()
	cfg, err := config.NewFromString("[libdefaults]\n default_realm = KRBOPS.TEST\n udp_preference_limit = 1465\n[realms]\n KRBOPS.TEST = {\n  kdc = " + udp.LocalAddr().String() + "\n }\n")
	if err != nil {
		t.Fatal(err)
	}
	kt := keytab.New()
	if err := kt.AddEntry("svc", "KRBOPS.TEST", "password", time.Unix(1700000000, 0), 1, etypeID.AES256_CTS_HMAC_SHA1_96); err != nil {
		t.Fatal(err)
	}
	b, err := kt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "svc.keytab")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := New(Options{Primary: Identity{Principal: "svc", Keytab: path}, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := l.Login(ctx, "initial")
		done <- err
	}()
	<-asked
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Login = %v, want context.Canceled", err)
		}
	case <-time.After(time.Minute): // hang guard only
		t.Fatal("Login did not return after cancel")
	}
}
