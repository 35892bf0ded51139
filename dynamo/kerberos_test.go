package dynamo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/krbops/krbops/kdcops"
)

func writeKeytab(t *testing.T, entries []struct {
	princ string
	kvno  uint8
}) string {
	t.Helper()
	kt := keytab.New()
	ts := time.Unix(1700000000, 0)
	for _, e := range entries {
		// Same timestamp for every kvno: the case gokrb5 gets wrong.
		if err := kt.AddEntry(e.princ, "KRBOPS.TEST", "password-"+string(rune('a'+e.kvno)), ts, e.kvno, etypeID.AES256_CTS_HMAC_SHA1_96); err != nil {
			t.Fatal(err)
		}
	}
	b, err := kt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "svc.keytab")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadLoginKeytabKeepsOnlyTheNewestKvno(t *testing.T) {
	path := writeKeytab(t, []struct {
		princ string
		kvno  uint8
	}{{"svc", 3}, {"svc", 5}, {"svc", 4}, {"other", 9}})
	kt, kvno, err := kdcops.LoadLoginKeytab(path, "svc@KRBOPS.TEST")
	if err != nil {
		t.Fatal(err)
	}
	if kvno != 5 || len(kt.Entries) != 1 || kt.Entries[0].KVNO8 != 5 || kt.Entries[0].Principal.Components[0] != "svc" {
		t.Errorf("selected kvno %d, entries %v", kvno, kt.Entries)
	}
	if _, _, err := kdcops.LoadLoginKeytab(path, "nobody@KRBOPS.TEST"); err == nil || !strings.Contains(err.Error(), "has no key for nobody@KRBOPS.TEST") {
		t.Errorf("missing principal: %v", err)
	}
}

// gokrb5's parse errors quote the raw buffer, which is key material: the
// error must name the file only.
func TestLoadLoginKeytabNeverQuotesTheFile(t *testing.T) {
	path := writeKeytab(t, []struct {
		princ string
		kvno  uint8
	}{{"svc", 1}})
	b, _ := os.ReadFile(path)
	bad := filepath.Join(t.TempDir(), "bad.keytab")
	os.WriteFile(bad, b[:len(b)-7], 0o600)
	_, _, err := kdcops.LoadLoginKeytab(bad, "svc@KRBOPS.TEST")
	if err == nil {
		t.Fatal("a truncated keytab loaded")
	}
	if want := "keytab " + bad + ": not a readable keytab (truncated or another format)"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestTicketThreshold(t *testing.T) {
	now := time.Unix(1700000000, 0)
	k := &KerberosLogin{opts: KerberosOptions{Margin: 10 * time.Minute}}
	k.authTime, k.endTime = now, now.Add(10*time.Hour)
	if k.threshold() != 10*time.Minute {
		t.Errorf("10h ticket: threshold %v, want the margin", k.threshold())
	}
	// A ticket no longer than the margin would be "expiring" from the
	// start: half its lifetime is used instead.
	k.endTime = now.Add(4 * time.Minute)
	if k.threshold() != 2*time.Minute {
		t.Errorf("4m ticket: threshold %v, want 2m", k.threshold())
	}
}

func TestDefaultBrokerSPN(t *testing.T) {
	for url, want := range map[string]string{
		"https://Broker.Example.com/aws/creds": "HTTP/broker.example.com",
		"http://localhost:8080/x":              "HTTP/localhost",
	} {
		if got, err := DefaultBrokerSPN(url); err != nil || got != want {
			t.Errorf("%s: %q %v", url, got, err)
		}
	}
	for _, bad := range []string{"ftp://x/", "broker.example.com", "http:///nohost"} {
		if _, err := DefaultBrokerSPN(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
