package kdcops_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
)

type refusingLimiter struct{ waits int }

var errPaced = errors.New("paced out")

func (l *refusingLimiter) Wait(context.Context) error { l.waits++; return errPaced }

// Both KDC send paths wait on the Limiter before any packet leaves: the
// clock probe and the OnlineClient exchanges (verify --kdc-rate).
func TestLimiterGatesEveryKDCRequest(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "krb5.conf")
	os.WriteFile(conf, []byte("[libdefaults]\n default_realm = TEST.REALM\n[realms]\n TEST.REALM = {\n  kdc = 127.0.0.1:1\n }\n"), 0o600)
	cfg, err := kdcops.LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := kdcops.ParseKDC("127.0.0.1:1", kdcops.UDP)

	lim := &refusingLimiter{}
	_, err = kdcops.ProbeClock(context.Background(), cfg, k, "TEST.REALM", "host/x", kdcops.ProbeOptions{Timeout: time.Second, Limiter: lim})
	if !errors.Is(err, errPaced) || lim.waits != 1 {
		t.Fatalf("probe: err %v after %d waits, want the limiter's error after 1", err, lim.waits)
	}

	lim = &refusingLimiter{}
	sent := 0
	c := &kdcops.OnlineClient{Config: cfg, Timeout: time.Second, Limiter: lim,
		Exchange: func(context.Context, string, []byte) ([]byte, error) { sent++; return nil, errors.New("sent") }}
	_, err = c.Check(context.Background(), []kdcops.KeytabEntry{{Principal: "host/x@TEST.REALM", Realm: "TEST.REALM", Components: []string{"host", "x"}, KVNO: 1, Enctype: 18}})
	if !errors.Is(err, errPaced) || sent != 0 {
		t.Fatalf("online client: err %v, %d requests sent, want the limiter's error and none sent", err, sent)
	}
}
