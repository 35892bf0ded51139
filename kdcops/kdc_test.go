package kdcops_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/krbops/krbops/kdcops"
)

func TestParseKDC(t *testing.T) {
	for _, tc := range []struct {
		entry string
		pref  kdcops.Transport
		want  kdcops.KDC
		addr  string
	}{
		{"kdc.example.com", kdcops.UDP, kdcops.KDC{Entry: "kdc.example.com", Host: "kdc.example.com", Port: 88, Transport: kdcops.UDP}, "kdc.example.com:88"},
		{"kdc.example.com", kdcops.TCP, kdcops.KDC{Entry: "kdc.example.com", Host: "kdc.example.com", Port: 88, Transport: kdcops.TCP}, "kdc.example.com:88"},
		{"kdc.example.com:750", kdcops.UDP, kdcops.KDC{Entry: "kdc.example.com:750", Host: "kdc.example.com", Port: 750, Transport: kdcops.UDP}, "kdc.example.com:750"},
		{"10.1.2.3:88", kdcops.UDP, kdcops.KDC{Entry: "10.1.2.3:88", Host: "10.1.2.3", Port: 88, Transport: kdcops.UDP}, "10.1.2.3:88"},
		{"[::1]:750", kdcops.UDP, kdcops.KDC{Entry: "[::1]:750", Host: "::1", Port: 750, Transport: kdcops.UDP}, "[::1]:750"},
		{"[::1]", kdcops.UDP, kdcops.KDC{Entry: "[::1]", Host: "::1", Port: 88, Transport: kdcops.UDP}, "[::1]:88"},
		{"::1", kdcops.UDP, kdcops.KDC{Entry: "::1", Host: "::1", Port: 88, Transport: kdcops.UDP}, "[::1]:88"},
		{"2001:db8::5", kdcops.UDP, kdcops.KDC{Entry: "2001:db8::5", Host: "2001:db8::5", Port: 88, Transport: kdcops.UDP}, "[2001:db8::5]:88"},
		{"tcp/kdc.example.com:88", kdcops.UDP, kdcops.KDC{Entry: "tcp/kdc.example.com:88", Host: "kdc.example.com", Port: 88, Transport: kdcops.TCP, Forced: true}, "kdc.example.com:88"},
		{"tcp/kdc.example.com", kdcops.UDP, kdcops.KDC{Entry: "tcp/kdc.example.com", Host: "kdc.example.com", Port: 88, Transport: kdcops.TCP, Forced: true}, "kdc.example.com:88"},
		{"udp/kdc.example.com:1088", kdcops.TCP, kdcops.KDC{Entry: "udp/kdc.example.com:1088", Host: "kdc.example.com", Port: 1088, Transport: kdcops.UDP, Forced: true}, "kdc.example.com:1088"},
		{"tcp/[::1]:88", kdcops.UDP, kdcops.KDC{Entry: "tcp/[::1]:88", Host: "::1", Port: 88, Transport: kdcops.TCP, Forced: true}, "[::1]:88"},
		{"  kdc.example.com  ", kdcops.UDP, kdcops.KDC{Entry: "  kdc.example.com  ", Host: "kdc.example.com", Port: 88, Transport: kdcops.UDP}, "kdc.example.com:88"},
		{"kdc:65535", kdcops.UDP, kdcops.KDC{Entry: "kdc:65535", Host: "kdc", Port: 65535, Transport: kdcops.UDP}, "kdc:65535"},
	} {
		t.Run(tc.entry, func(t *testing.T) {
			got, err := kdcops.ParseKDC(tc.entry, tc.pref)
			if err != nil {
				t.Fatalf("ParseKDC(%q): %v", tc.entry, err)
			}
			if got != tc.want {
				t.Errorf("ParseKDC(%q) = %+v, want %+v", tc.entry, got, tc.want)
			}
			if got.Addr() != tc.addr {
				t.Errorf("Addr() = %q, want %q", got.Addr(), tc.addr)
			}
		})
	}
}

func TestParseKDCErrors(t *testing.T) {
	for _, tc := range []struct {
		entry, want string
	}{
		{"", "empty host"},
		{"   ", "empty host"},
		{"tcp/", "empty host"},
		{"udp/", "empty host"},
		{":88", "empty host"},
		{"[]:88", "empty host"},
		{"kdc.example.com:abc", `bad port "abc"`},
		{"kdc.example.com:", `bad port ""`},
		{"kdc.example.com:0", `bad port "0"`},
		{"kdc.example.com:65536", `bad port "65536"`},
		{"kdc.example.com:-1", `bad port "-1"`},
		{"tcp/kdc.example.com:x", `bad port "x"`},
		{"https://kdcproxy.example.com/KdcProxy", "HTTPS (MS-KKDCP) proxies are not supported"},
		{"http://kdc", "not supported"},
	} {
		t.Run(tc.entry, func(t *testing.T) {
			k, err := kdcops.ParseKDC(tc.entry, kdcops.UDP)
			if err == nil {
				t.Fatalf("ParseKDC(%q) = %+v, want an error", tc.entry, k)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), `"`+tc.entry+`"`) {
				t.Errorf("error %q does not quote the entry", err)
			}
		})
	}
}

func TestResolveKDCs(t *testing.T) {
	cfg, _, err := loadString(t, `[libdefaults]
  default_realm = R.TEST
  dns_lookup_kdc = false
[realms]
  R.TEST = {
    kdc = kdc1.r.test
    kdc = tcp/kdc2.r.test:750
    kdc = [::1]:88
  }
  EMPTY.TEST = {
    admin_server = admin.empty.test
  }
`)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	kdcs, err := cfg.ResolveKDCs(ctx, "R.TEST", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []kdcops.KDC
	for _, k := range kdcs {
		k.Entry = "" // gokrb5 normalises entries (adds :88); compare the parse
		got = append(got, k)
	}
	want := []kdcops.KDC{
		{Host: "kdc1.r.test", Port: 88, Transport: kdcops.UDP},
		{Host: "kdc2.r.test", Port: 750, Transport: kdcops.TCP, Forced: true},
		{Host: "::1", Port: 88, Transport: kdcops.UDP},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("KDCs\n got %+v\nwant %+v", got, want)
	}

	t.Run("overrides replace the list", func(t *testing.T) {
		kdcs, err := cfg.ResolveKDCs(ctx, "R.TEST", []string{"override.test:1088", "tcp/o2.test"})
		if err != nil {
			t.Fatal(err)
		}
		if len(kdcs) != 2 || kdcs[0].Entry != "override.test:1088" || kdcs[0].Port != 1088 || kdcs[1].Transport != kdcops.TCP || !kdcs[1].Forced {
			t.Errorf("KDCs %+v", kdcs)
		}
	})
	t.Run("overrides work for an unknown realm", func(t *testing.T) {
		kdcs, err := cfg.ResolveKDCs(ctx, "UNKNOWN.TEST", []string{"x.test"})
		if err != nil || len(kdcs) != 1 || kdcs[0].Host != "x.test" {
			t.Errorf("KDCs %+v, %v", kdcs, err)
		}
	})
	t.Run("bad override", func(t *testing.T) {
		_, err := cfg.ResolveKDCs(ctx, "R.TEST", []string{"ok.test", "bad:port"})
		if err == nil || !strings.Contains(err.Error(), `bad port "port"`) {
			t.Errorf("error %v", err)
		}
	})
	for _, realm := range []string{"EMPTY.TEST", "NOPE.TEST"} {
		t.Run("no kdc for "+realm, func(t *testing.T) {
			_, err := cfg.ResolveKDCs(ctx, realm, nil)
			var ce *kdcops.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want *ConfigError", err, err)
			}
			if ce.Path != cfg.Path || !strings.Contains(ce.Msg, "no KDC for realm "+realm) || !strings.Contains(ce.Msg, "dns_lookup_kdc is off") {
				t.Errorf("ConfigError %+v", ce)
			}
		})
	}
}

func TestPreferredTransport(t *testing.T) {
	for _, tc := range []struct {
		conf string
		want kdcops.Transport
	}{
		{"[libdefaults]\n  default_realm = P.TEST\n", kdcops.UDP},
		{"[libdefaults]\n  udp_preference_limit = 1\n", kdcops.TCP},
		{"[libdefaults]\n  udp_preference_limit = 1465\n", kdcops.UDP},
	} {
		cfg, _, err := loadString(t, tc.conf+"[realms]\n  P.TEST = {\n    kdc = p.test\n    kdc = udp/q.test\n  }\n")
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.PreferredTransport(); got != tc.want {
			t.Errorf("%q: PreferredTransport %q, want %q", tc.conf, got, tc.want)
		}
		kdcs, err := cfg.ResolveKDCs(context.Background(), "P.TEST", nil)
		if err != nil {
			t.Fatal(err)
		}
		if kdcs[0].Transport != tc.want || kdcs[0].Forced {
			t.Errorf("%q: unforced KDC %+v", tc.conf, kdcs[0])
		}
		// An explicit prefix wins over the preference.
		if kdcs[1].Transport != kdcops.UDP || !kdcs[1].Forced {
			t.Errorf("%q: udp/ KDC %+v", tc.conf, kdcs[1])
		}
	}
}
