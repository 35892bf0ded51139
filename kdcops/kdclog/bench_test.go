package kdclog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkReadAndAggregate reads a busy MIT log (mostly TGS, logins in
// two rounds, a few refusals) of 20,000 principals into a Usage: bytes
// per second is the figure auditbench compares with grep.
func BenchmarkReadAndAggregate(b *testing.B) {
	var sb strings.Builder
	const et = "8 etypes {aes256-cts-hmac-sha1-96(18), aes128-cts-hmac-sha1-96(17), aes256-cts-hmac-sha384-192(20), aes128-cts-hmac-sha256-128(19), DEPRECATED:des3-cbc-sha1(16), DEPRECATED:arcfour-hmac(23), camellia128-cts-cmac(25), camellia256-cts-cmac(26)}"
	for i := range 200_000 {
		c := (i * 7919) % 10_000
		ts := fmt.Sprintf("Dec %02d %02d:%02d:%02d", 1+i/86400%28, i/3600%24, i/60%60, i%60)
		switch i % 10 {
		case 0, 1, 2, 3, 4, 5:
			fmt.Fprintf(&sb, "%s kdc1 krb5kdc[2211](info): TGS_REQ (%s) 10.0.%d.%d: ISSUE: authtime 1796193807, etypes {rep=aes256-cts-hmac-sha1-96(18), tkt=aes256-cts-hmac-sha1-96(18), ses=aes256-cts-hmac-sha1-96(18)}, user%06d@EXAMPLE.COM for host/node%06d.example.com@EXAMPLE.COM\n", ts, et, c>>8, c&255, c, (i*31)%10_000)
		case 6, 7:
			fmt.Fprintf(&sb, "%s kdc1 krb5kdc[2211](info): AS_REQ (%s) 10.0.%d.%d: NEEDED_PREAUTH: user%06d@EXAMPLE.COM for krbtgt/EXAMPLE.COM@EXAMPLE.COM, Additional pre-authentication required\n", ts, et, c>>8, c&255, c)
		default:
			fmt.Fprintf(&sb, "%s kdc1 krb5kdc[2211](info): AS_REQ (%s) 10.0.%d.%d: ISSUE: authtime 1796193807, etypes {rep=aes256-cts-hmac-sha1-96(18), tkt=aes256-cts-hmac-sha1-96(18), ses=aes256-cts-hmac-sha1-96(18)}, user%06d@EXAMPLE.COM for krbtgt/EXAMPLE.COM@EXAMPLE.COM\n", ts, et, c>>8, c&255, c)
		}
	}
	p := filepath.Join(b.TempDir(), "kdc.log")
	if err := os.WriteFile(p, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(sb.Len()))
	b.ReportAllocs()
	for b.Loop() {
		m, err := OpenAll([]string{p})
		if err != nil {
			b.Fatal(err)
		}
		u := NewUsage(nil)
		for {
			ev, _, err := m.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			u.Add(ev)
		}
		u.Wait()
		m.Close()
	}
}
