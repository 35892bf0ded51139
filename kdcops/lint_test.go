package kdcops_test

import (
	"errors"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
)

func ruleIDs(fs []kdcops.Finding) []string {
	var ids []string
	for _, f := range fs {
		ids = append(ids, f.Rule)
	}
	sort.Strings(ids)
	return ids
}

func findRule(fs []kdcops.Finding, id string) kdcops.Finding {
	for _, f := range fs {
		if f.Rule == id {
			return f
		}
	}
	return kdcops.Finding{}
}

func parse(t *testing.T, entries ...ktEntry) []kdcops.KeytabEntry {
	t.Helper()
	kt, err := kdcops.ParseKeytab(ktBytes(2, entries...), kdcops.KeytabOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return kt.Entries
}

func at(e ktEntry, ts time.Time) ktEntry { e.ts = ts; return e }

// TestRules runs every rule of the catalogue on a case that must trigger
// it (and only the listed rules), and fails if a rule has no case.
func TestRules(t *testing.T) {
	now := t0.Add(time.Hour)
	opts := kdcops.LintOptions{Now: now, MinRemaining: time.Hour, MaxAge: 90 * 24 * time.Hour}
	healthyTGT := tgt("EXAMPLE.COM", t0, now.Add(9*time.Hour), now.Add(6*24*time.Hour), kdcops.FlagRenewable|kdcops.FlagInitial)
	cc := func(creds ...ccCred) *kdcops.CCache {
		c, err := kdcops.ParseCCache(ccBytes(4, "EXAMPLE.COM", alice, creds...), kdcops.CCacheOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	recent := now.Add(-24 * time.Hour)
	aes := func(p string, kvno uint32) []ktEntry {
		return []ktEntry{at(entry(p, kvno, 18), recent), at(entry(p, kvno, 17), recent)}
	}
	other := entry("p", 1, 18)
	other.key = []byte("a-different-key-of-same-length!!")
	withOpts := func(f func(o *kdcops.LintOptions)) kdcops.LintOptions { o := opts; f(&o); return o }
	group := writeTemp(t, "k", nil, 0o640)
	groupFI, _ := os.Stat(group)

	cases := []struct {
		name string
		got  func() []kdcops.Finding
		want []string
		msg  []string // substrings of the first finding's message
	}{
		{"healthy ccache", func() []kdcops.Finding { return kdcops.LintCCache("cc", cc(healthyTGT), opts) }, nil, nil},
		{"CC001", func() []kdcops.Finding {
			return kdcops.ReadErrorFinding("ccache", "cc", &kdcops.FileError{Kind: "credential cache", Path: "cc", Err: &kdcops.FormatError{Offset: 9, Msg: "x"}}, opts.Rules)
		}, []string{"CC001"}, []string{"credential cache corrupt at byte 9"}},
		{"CC002 CC003", func() []kdcops.Finding {
			return kdcops.CCacheAccessFindings("cc", groupFI, withOpts(func(o *kdcops.LintOptions) { o.UID = 12345 }))
		}, []string{"CC002", "CC003"}, []string{"credential cache mode 0640 gives access to its group"}},
		{"CC004", func() []kdcops.Finding {
			return kdcops.LintCCache("cc", cc(ccCred{client: alice, server: []string{"HTTP", "x"}, enctype: 18, auth: t0, end: now.Add(time.Hour)}), opts)
		}, []string{"CC004"}, []string{"no TGT krbtgt/EXAMPLE.COM@EXAMPLE.COM in the cache (1 other tickets)"}},
		{"CC005", func() []kdcops.Finding {
			return kdcops.LintCCache("cc", cc(tgt("EXAMPLE.COM", t0, now.Add(-30*time.Minute), time.Time{}, 0)), opts)
		}, []string{"CC005"}, []string{"TGT expired 30m ago"}},
		{"CC006", func() []kdcops.Finding {
			return kdcops.LintCCache("cc", cc(tgt("EXAMPLE.COM", t0, now.Add(10*time.Minute), now.Add(48*time.Hour), kdcops.FlagRenewable)), opts)
		}, []string{"CC006"}, []string{"TGT expires in 10m", "less than --min-remaining 1h"}},
		{"CC007", func() []kdcops.Finding {
			return kdcops.LintCCache("cc", cc(tgt("EXAMPLE.COM", t0, now.Add(5*time.Hour), time.Time{}, kdcops.FlagInitial)), opts)
		}, []string{"CC007"}, []string{"TGT is not renewable"}},
		{"CC008", func() []kdcops.Finding {
			return kdcops.LintCCache("cc", cc(tgt("EXAMPLE.COM", t0, now.Add(2*time.Hour), now.Add(150*time.Minute), kdcops.FlagRenewable)),
				withOpts(func(o *kdcops.LintOptions) { o.MinRemaining = 3 * time.Hour }))
		}, []string{"CC006", "CC008"}, []string{"TGT expires in 2h", "less than --min-remaining 3h"}},
		{"CC009", func() []kdcops.Finding {
			return kdcops.LintCCache("cc", cc(tgt("EXAMPLE.COM", now.Add(7*time.Minute), now.Add(10*time.Hour), now.Add(48*time.Hour), kdcops.FlagRenewable)), opts)
		}, []string{"CC009"}, []string{"7m ahead of this host's clock"}},
		{"postdated is not CC009", func() []kdcops.Finding {
			return kdcops.LintCCache("cc", cc(tgt("EXAMPLE.COM", now.Add(7*time.Minute), now.Add(10*time.Hour), now.Add(48*time.Hour), kdcops.FlagRenewable|kdcops.FlagPostdated)), opts)
		}, nil, nil},
		{"CC010", func() []kdcops.Finding {
			return kdcops.LintCCache("cc", cc(healthyTGT, ccCred{client: alice, server: []string{"HTTP", "old.example.com"}, enctype: 23, auth: t0, end: now.Add(time.Hour)}), opts)
		}, []string{"CC010"}, []string{"weak enctype arcfour-hmac (HTTP/old.example.com@EXAMPLE.COM)"}},
		{"CC011", func() []kdcops.Finding {
			return kdcops.LintCCache("cc", cc(healthyTGT), withOpts(func(o *kdcops.LintOptions) { o.Principal = "bob" }))
		}, []string{"CC011"}, []string{"default principal is alice@EXAMPLE.COM, expected bob"}},
		{"expected principal without realm matches", func() []kdcops.Finding {
			return kdcops.LintCCache("cc", cc(healthyTGT), withOpts(func(o *kdcops.LintOptions) { o.Principal = "alice" }))
		}, nil, nil},

		{"healthy keytab", func() []kdcops.Finding { return kdcops.LintKeytab("kt", parse(t, aes("host/a", 3)...), opts) }, nil, nil},
		{"KT001", func() []kdcops.Finding {
			return kdcops.ReadErrorFinding("keytab", "kt", &kdcops.FileError{Kind: "keytab", Path: "kt", Err: os.ErrPermission}, opts.Rules)
		}, []string{"KT001"}, []string{"keytab permission denied"}},
		{"KT002 KT003", func() []kdcops.Finding {
			return kdcops.KeytabAccessFindings("kt", groupFI, withOpts(func(o *kdcops.LintOptions) { o.UID = 12345 }))
		}, []string{"KT002", "KT003"}, []string{"keytab mode 0640 gives access to its group"}},
		{"root is not KT003", func() []kdcops.Finding {
			return kdcops.KeytabAccessFindings("kt", groupFI, withOpts(func(o *kdcops.LintOptions) { o.UID = 0 }))
		}, []string{"KT002"}, nil},
		{"KT004 KT005", func() []kdcops.Finding {
			return kdcops.LintKeytab("kt", nil, withOpts(func(o *kdcops.LintOptions) { o.Principal = "host/a" }))
		}, []string{"KT004", "KT005"}, []string{"keytab has no entries"}},
		{"KT005", func() []kdcops.Finding {
			return kdcops.LintKeytab("kt", parse(t, aes("host/a", 3)...), withOpts(func(o *kdcops.LintOptions) { o.Principal = "host/b@EXAMPLE.COM" }))
		}, []string{"KT005"}, []string{"expected principal host/b@EXAMPLE.COM is not in the keytab (it holds host/a@EXAMPLE.COM)"}},
		{"KT006", func() []kdcops.Finding {
			return kdcops.LintKeytab("kt", parse(t, append(aes("p", 2), at(entry("p", 1, 23), recent), at(entry("p", 2, 23), recent))...), opts)
		}, []string{"KT006"}, []string{"weak enctype arcfour-hmac at kvno 1, 2"}},
		{"KT006 KT007", func() []kdcops.Finding {
			return kdcops.LintKeytab("kt", parse(t, at(entry("p", 2, 23), recent), at(entry("p", 2, 16), recent)), opts)
		}, []string{"KT006", "KT007"}, []string{"weak enctype arcfour-hmac, des3-cbc-sha1 at kvno 2"}},
		{"KT008", func() []kdcops.Finding {
			return kdcops.LintKeytab("kt", parse(t, at(entry("p", 3, 18), recent), at(entry("p", 2, 17), recent)), opts)
		}, []string{"KT008"}, []string{"newest kvno differs by enctype: aes256-cts-hmac-sha1-96=3, aes128-cts-hmac-sha1-96=2"}},
		{"KT009", func() []kdcops.Finding {
			return kdcops.LintKeytab("kt", parse(t, slices.Concat(aes("p", 1), aes("p", 2), aes("p", 3))...), opts)
		}, []string{"KT009"}, []string{"3 kvnos kept (1, 2, 3); two are enough"}},
		{"KT010", func() []kdcops.Finding {
			return kdcops.LintKeytab("kt", parse(t, at(entry("p", 3, 18), now.Add(-100*24*time.Hour))), opts)
		}, []string{"KT010"}, []string{"newest kvno 3 was written 100d ago", "older than --max-age 90d"}},
		{"max-age 0 disables KT010", func() []kdcops.Finding {
			return kdcops.LintKeytab("kt", parse(t, at(entry("p", 3, 18), now.Add(-1000*24*time.Hour))), withOpts(func(o *kdcops.LintOptions) { o.MaxAge = 0 }))
		}, nil, nil},
		{"KT011", func() []kdcops.Finding {
			return kdcops.LintKeytab("kt", parse(t, at(entry("p", 1, 18), recent), at(entry("p", 1, 18), recent)), opts)
		}, []string{"KT011"}, []string{"2 identical entries for kvno 1 aes256-cts-hmac-sha1-96"}},
		{"KT012", func() []kdcops.Finding {
			return kdcops.LintKeytab("kt", parse(t, at(entry("p", 1, 18), recent), at(other, recent)), opts)
		}, []string{"KT012"}, []string{"2 different keys for kvno 1 aes256-cts-hmac-sha1-96"}},
		{"KT013", func() []kdcops.Finding {
			return kdcops.LintKeytab("kt", parse(t, aes("p", 259)...), opts)
		}, []string{"KT013"}, []string{"kvno 259 is above 255: readers of the 8-bit field see kvno 3"}},

		{"ON001", func() []kdcops.Finding {
			return kdcops.LintOnlineKVNO("kt", &kdcops.OnlineResult{Principal: "p@R", KeytabKVNO: 2, KDCKVNO: 3, KVNOKnown: true, KVNOSource: "ccache alice@R"}, opts)
		}, []string{"ON001"}, []string{"keytab is stale: its newest kvno is 2, the KDC has kvno 3"}},
		{"ON002", func() []kdcops.Finding {
			return kdcops.LintOnlineKVNO("kt", &kdcops.OnlineResult{Principal: "p@R", KeytabKVNO: 5, KDCKVNO: 4, KVNOKnown: true}, opts)
		}, []string{"ON002"}, []string{"keytab kvno 5 is ahead of the KDC's kvno 4"}},
		{"ON003", func() []kdcops.Finding {
			res := &kdcops.OnlineResult{Principal: "p@R", KeytabKVNO: 4, KDCKVNO: 4, KVNOKnown: true,
				KDCKeys: []kdcops.KDCKey{{Enctype: 18, Salt: "R.SPECIALsalt"}},
				Checks:  []kdcops.KeyCheck{{KVNO: 4, Enctype: 18, Error: "KDC_ERR_PREAUTH_FAILED"}}}
			return kdcops.LintOnlineKeys("kt", res, parse(t, entry("p", 4, 18)), opts)
		}, []string{"ON003"}, []string{"the KDC rejects the aes256-cts-hmac-sha1-96 key at kvno 4 (KDC_ERR_PREAUTH_FAILED)"}},
		{"ON004", func() []kdcops.Finding {
			res := &kdcops.OnlineResult{Principal: "p@R", KeytabKVNO: 4, KVNONote: "the KDC rejected every kvno tried",
				Checks: []kdcops.KeyCheck{{KVNO: 4, Enctype: 18, Error: "KDC_ERR_PREAUTH_FAILED"}}}
			return kdcops.LintOnlineKVNO("kt", res, opts)
		}, []string{"ON004"}, []string{"keytab cannot authenticate (newest kvno 4) and the KDC's kvno is unknown"}},
		{"ON005", func() []kdcops.Finding {
			res := &kdcops.OnlineResult{Principal: "p@EXAMPLE.COM", KeytabKVNO: 4, KDCKVNO: 4, KVNOKnown: true,
				KDCKeys: []kdcops.KDCKey{{Enctype: 18, DefaultSalt: true}, {Enctype: 17, DefaultSalt: true}}}
			return kdcops.LintOnlineKeys("kt", res, parse(t, entry("p", 4, 18), entry("p", 4, 23)), opts)
		}, []string{"ON005"}, []string{"keytab enctypes at kvno 4 differ from the KDC's: missing aes128-cts-hmac-sha1-96; the KDC has no arcfour-hmac"}},
		{"ON006", func() []kdcops.Finding {
			return kdcops.LintOnlineKVNO("kt", &kdcops.OnlineResult{Principal: "p@R", KeytabKVNO: 2, Unknown: true}, opts)
		}, []string{"ON006"}, []string{"the KDC does not know p@R"}},
		{"ON007", func() []kdcops.Finding {
			return kdcops.LintOnlineKVNO("kt", &kdcops.OnlineResult{Principal: "p@R", KeytabKVNO: 2, Refused: "KDC_ERR_CLIENT_REVOKED"}, opts)
		}, []string{"ON007"}, []string{"the KDC refuses tickets for p@R (KDC_ERR_CLIENT_REVOKED)"}},
		{"kvno lookup failed but the key works", func() []kdcops.Finding {
			res := &kdcops.OnlineResult{Principal: "p@R", KeytabKVNO: 4, KVNONote: "x", Checks: []kdcops.KeyCheck{{KVNO: 4, Enctype: 18, OK: true}}}
			return kdcops.LintOnlineKVNO("kt", res, opts)
		}, nil, nil},
	}
	covered := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := tc.got()
			got := ruleIDs(fs)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("rules = %v, want %v\n%+v", got, tc.want, fs)
			}
			for _, f := range fs {
				covered[f.Rule] = true
				r, _ := kdcops.RuleByID(f.Rule)
				if f.Severity != r.Severity || f.Hint == "" || f.Message == "" || f.Evidence == nil {
					t.Errorf("%s: severity %q (catalogue %q), hint %q, message %q", f.Rule, f.Severity, r.Severity, f.Hint, f.Message)
				}
				noKeyMaterial(t, f.Message+f.Hint+fmtEvidence(f.Evidence))
			}
			for _, m := range tc.msg {
				if !strings.Contains(fs[0].Message, m) {
					t.Errorf("%s message %q lacks %q", fs[0].Rule, fs[0].Message, m)
				}
			}
		})
	}
	for _, r := range kdcops.Rules {
		if !covered[r.ID] {
			t.Errorf("rule %s has no test case", r.ID)
		}
	}
}

func fmtEvidence(ev map[string]any) string {
	var b strings.Builder
	for k, v := range ev {
		b.WriteString(k)
		b.WriteString(strings.Trim(strings.ReplaceAll(strings.TrimSpace(toString(v)), "\n", " "), " "))
	}
	return b.String()
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []string:
		return strings.Join(x, " ")
	}
	return ""
}

func TestRuleEvidence(t *testing.T) {
	now := t0.Add(time.Hour)
	opts := kdcops.LintOptions{Now: now, MinRemaining: time.Hour}
	c, _ := kdcops.ParseCCache(ccBytes(4, "EXAMPLE.COM", alice, tgt("EXAMPLE.COM", t0, now.Add(10*time.Minute), time.Time{}, 0)), kdcops.CCacheOptions{})
	f := findRule(kdcops.LintCCache("cc", c, opts), "CC006")
	if f.Evidence["remaining_seconds"] != 600.0 || f.Evidence["min_remaining_seconds"] != 3600.0 {
		t.Errorf("CC006 evidence = %v", f.Evidence)
	}
	on := kdcops.LintOnlineKVNO("kt", &kdcops.OnlineResult{Principal: "p@R", KeytabKVNO: 2, KDCKVNO: 3, KVNOKnown: true, KVNOSource: "ccache alice@R"}, opts)
	if ev := on[0].Evidence; ev["keytab_kvno"] != uint32(2) || ev["kdc_kvno"] != uint32(3) || ev["kdc_kvno_source"] != "ccache alice@R" {
		t.Errorf("ON001 evidence = %v", ev)
	}
	kt := kdcops.LintKeytab("kt", parse(t, entry("p", 259, 18)), opts)
	if ev := findRule(kt, "KT013").Evidence; ev["kvno"] != uint32(259) || ev["kvno8"] != uint8(3) {
		t.Errorf("KT013 evidence = %v", ev)
	}
}

func TestRuleSet(t *testing.T) {
	all, err := kdcops.NewRuleSet(nil, nil)
	if err != nil || len(all.EnabledRules()) != len(kdcops.Rules) {
		t.Fatalf("default set: %v, %d rules", err, len(all.EnabledRules()))
	}
	only, err := kdcops.NewRuleSet([]string{"kt002", " KT006"}, []string{"KT006"})
	if err != nil {
		t.Fatal(err)
	}
	if got := only.EnabledRules(); len(got) != 1 || got[0].ID != "KT002" {
		t.Errorf("--only KT002,KT006 --disable KT006 = %v", got)
	}
	if only.AnyEnabled("CC") || !only.AnyEnabled("KT") {
		t.Error("AnyEnabled is wrong")
	}
	for _, bad := range [][2][]string{{{"KT999"}, nil}, {nil, {"XX001"}}} {
		_, err := kdcops.NewRuleSet(bad[0], bad[1])
		var ue *kdcops.UnknownRuleError
		if !errors.As(err, &ue) {
			t.Errorf("NewRuleSet(%v) = %v, want UnknownRuleError", bad, err)
		}
	}
	// Disabled rules produce nothing, the others still do.
	rs, _ := kdcops.NewRuleSet(nil, []string{"KT004"})
	if fs := kdcops.LintKeytab("kt", nil, kdcops.LintOptions{Rules: rs, Principal: "x"}); strings.Join(ruleIDs(fs), ",") != "KT005" {
		t.Errorf("with KT004 disabled: %v", ruleIDs(fs))
	}
}

func TestCatalogue(t *testing.T) {
	seen := map[string]bool{}
	for i, r := range kdcops.Rules {
		if seen[r.ID] || r.Title == "" || r.Hint == "" {
			t.Errorf("rule %+v: duplicate id or empty title/hint", r)
		}
		seen[r.ID] = true
		if i > 0 && kdcops.Rules[i-1].ID >= r.ID {
			t.Errorf("rules out of order at %s", r.ID)
		}
		switch r.Severity {
		case kdcops.SeverityInfo, kdcops.SeverityWarn, kdcops.SeverityFail:
		default:
			t.Errorf("%s: severity %q", r.ID, r.Severity)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		599600 * time.Millisecond:      "10m",
		9*time.Minute + 59*time.Second: "9m59s",
		time.Hour:                      "1h",
		90 * time.Minute:               "1h30m",
		90 * 24 * time.Hour:            "90d",
		51 * time.Hour:                 "2d3h",
		-30 * time.Minute:              "-30m",
		0:                              "0s",
	} {
		if got := kdcops.HumanDuration(d); got != want {
			t.Errorf("HumanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
