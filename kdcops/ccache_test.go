package kdcops_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
)

var (
	t0    = time.Date(2025, 3, 4, 4, 0, 0, 0, time.UTC)
	alice = []string{"alice"}
)

func TestParseCCacheVersions(t *testing.T) {
	creds := []ccCred{
		{client: alice, server: []string{"krb5_ccache_conf_data", "fast_avail", "krbtgt/EXAMPLE.COM@EXAMPLE.COM"}, serverRealm: "X-CACHECONF:"},
		tgt("EXAMPLE.COM", t0, t0.Add(10*time.Hour), t0.Add(7*24*time.Hour), kdcops.FlagRenewable|kdcops.FlagInitial),
		{client: alice, server: []string{"HTTP", "web1.example.com"}, enctype: 23, auth: t0, start: t0.Add(time.Minute), end: t0.Add(10 * time.Hour)},
	}
	for _, v := range []byte{1, 2, 3, 4} {
		cc, err := kdcops.ParseCCache(ccBytes(v, "EXAMPLE.COM", alice, creds...), kdcops.CCacheOptions{})
		if err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
		if cc.Version != int(v) || cc.Principal != "alice@EXAMPLE.COM" || len(cc.Creds) != 2 || cc.ConfigCount != 1 {
			t.Fatalf("version %d: %+v", v, cc)
		}
		if (v == 4) != cc.HasKDCOffset || v == 4 && cc.KDCOffset != -2*time.Second {
			t.Errorf("version %d: kdc offset %v (has %t)", v, cc.KDCOffset, cc.HasKDCOffset)
		}
		tg, ok := cc.TGT()
		if !ok || tg.Server != "krbtgt/EXAMPLE.COM@EXAMPLE.COM" || !tg.EndTime.Equal(t0.Add(10*time.Hour)) || tg.SessionEnctype != 18 {
			t.Errorf("version %d: TGT = %+v", v, tg)
		}
		if !tg.Start().Equal(t0) {
			t.Errorf("version %d: start without starttime = %v, want authtime", v, tg.Start())
		}
		if svc := cc.Creds[1]; svc.SessionEnctype != 23 || !svc.Start().Equal(t0.Add(time.Minute)) || svc.IsTGT() {
			t.Errorf("version %d: service ticket = %+v", v, svc)
		}
	}
}

func TestParseCCacheCorrupt(t *testing.T) {
	good := ccBytes(4, "EXAMPLE.COM", alice, tgt("EXAMPLE.COM", t0, t0.Add(time.Hour), time.Time{}, 0))
	// Every proper prefix is reported, never a panic, except the one that
	// ends right after the default principal: a cache without tickets.
	noCreds := len(ccBytes(4, "EXAMPLE.COM", alice))
	for n := 0; n < len(good); n++ {
		_, err := kdcops.ParseCCache(good[:n], kdcops.CCacheOptions{KeepTGT: true})
		var fe *kdcops.FormatError
		if n != noCreds {
			if !errors.As(err, &fe) {
				t.Fatalf("prefix %d: err = %v, want *FormatError", n, err)
			}
			if fe.Offset < 0 || fe.Offset > int64(n) {
				t.Errorf("prefix %d: offset %d outside the file", n, fe.Offset)
			}
			noKeyMaterial(t, err.Error())
		}
	}
	for _, tc := range []struct {
		name   string
		data   []byte
		offset int64
		msg    string
	}{
		{"not 0x05", []byte{6, 4}, 0, "first byte is 0x06"},
		{"version 9", []byte{5, 9}, 1, "version 0x09 is not 1 to 4"},
		{"header past end", []byte{5, 4, 0, 40}, 2, "header length 40 runs past"},
		{"bad kdc offset field", []byte{5, 4, 0, 6, 0, 1, 0, 2, 0, 0}, 4, "KDC time offset field is 2 bytes"},
		{"component count", append([]byte{5, 4, 0, 0, 0, 0, 0, 1}, 0x7f, 0, 0, 0), 8, "default principal component count 2130706432 does not fit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kdcops.ParseCCache(tc.data, kdcops.CCacheOptions{})
			var fe *kdcops.FormatError
			if !errors.As(err, &fe) || fe.Offset != tc.offset || !strings.Contains(fe.Msg, tc.msg) {
				t.Errorf("err = %v, want offset %d containing %q", err, tc.offset, tc.msg)
			}
		})
	}
}

func TestReadCCacheFile(t *testing.T) {
	p := writeTemp(t, "cc", ccBytes(4, "EXAMPLE.COM", alice)[:9], 0o600)
	_, err := kdcops.ReadCCacheFile(p, kdcops.CCacheOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "credential cache "+p+": corrupt at byte ") {
		t.Errorf("err = %v", err)
	}
}
