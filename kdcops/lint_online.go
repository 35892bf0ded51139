package kdcops

import (
	"fmt"
	"github.com/krbops/krbops/internal/shquote"
	"strings"
)

// LintOnlineKVNO turns what the KDC said about a principal's existence and
// kvno into findings: ON006, ON007, ON001, ON002, ON004.
func LintOnlineKVNO(path string, res *OnlineResult, o LintOptions) []Finding {
	f := findings{rules: o.Rules, file: path}
	p := res.Principal
	switch {
	case res.Unknown:
		f.add("ON006", p, "", map[string]any{"keytab_kvno": res.KeytabKVNO, "kdc_error": "KDC_ERR_C_PRINCIPAL_UNKNOWN"},
			"the KDC does not know %s (KDC_ERR_C_PRINCIPAL_UNKNOWN)", p)
		return f.list
	case res.Refused != "":
		f.add("ON007", p, "", map[string]any{"keytab_kvno": res.KeytabKVNO, "kdc_error": res.Refused},
			"the KDC refuses tickets for %s (%s)", p, res.Refused)
		return f.list
	}
	if !res.KVNOKnown {
		if anyOK(res.Checks) {
			return f.list // the key works; only the kvno lookup failed (the step says why)
		}
		ev := map[string]any{"keytab_kvno": res.KeytabKVNO, "kvnos_tried": triedKVNOs(res.Checks), "reason": res.KVNONote}
		f.add("ON004", p, "", ev, "keytab cannot authenticate (newest kvno %d) and the KDC's kvno is unknown: %s",
			res.KeytabKVNO, res.KVNONote)
		return f.list
	}
	ev := map[string]any{"keytab_kvno": res.KeytabKVNO, "kdc_kvno": res.KDCKVNO, "kdc_kvno_source": res.KVNOSource}
	switch {
	case res.KDCKVNO > res.KeytabKVNO:
		export := shquote.Kadmin("ktadd", "-norandkey", "-k", path, p)
		if export == "" {
			export = "kadmin ktadd -norandkey"
		}
		f.add("ON001", p, fmt.Sprintf("export kvno %d from the KDC (%s) and redistribute it; until then %s cannot authenticate",
			res.KDCKVNO, export, p), ev,
			"keytab is stale: its newest kvno is %d, the KDC has kvno %d", res.KeytabKVNO, res.KDCKVNO)
	case res.KDCKVNO < res.KeytabKVNO:
		f.add("ON002", p, "", ev, "keytab kvno %d is ahead of the KDC's kvno %d", res.KeytabKVNO, res.KDCKVNO)
	}
	return f.list
}

// LintOnlineKeys checks the keytab's keys against the KDC's: ON003 for a
// key the KDC rejects at its current kvno, ON005 for enctypes that differ.
func LintOnlineKeys(path string, res *OnlineResult, entries []KeytabEntry, o LintOptions) []Finding {
	f := findings{rules: o.Rules, file: path}
	p := res.Principal
	if res.Unknown || res.Refused != "" || !res.KVNOKnown {
		return f.list
	}
	for _, kc := range res.Checks {
		if kc.OK || kc.KVNO != res.KDCKVNO {
			continue
		}
		k, _ := res.KDCHas(kc.Enctype)
		ev := map[string]any{"kvno": kc.KVNO, "enctype": EnctypeName(kc.Enctype), "kdc_error": kc.Error,
			"kdc_salt": k.Salt, "kdc_default_salt": k.DefaultSalt}
		hint := ""
		if !k.DefaultSalt {
			hint = fmt.Sprintf("the KDC salts this key with %q, not the default: re-export with kadmin ktadd -norandkey, or ktutil addent -password -f (fetches the salt)", k.Salt)
		}
		f.add("ON003", p, hint, ev, "the KDC rejects the %s key at kvno %d (%s)", EnctypeName(kc.Enctype), kc.KVNO, kc.Error)
	}

	var have []int32
	for _, e := range entries {
		if e.Principal == p && e.KVNO == res.KDCKVNO && !containsEnctype(have, e.Enctype) {
			have = append(have, e.Enctype)
		}
	}
	if len(have) == 0 {
		return f.list // stale or ahead: ON001/ON002 said so
	}
	var missing, extra []string
	for _, k := range res.KDCKeys {
		if !containsEnctype(have, k.Enctype) {
			missing = append(missing, EnctypeName(k.Enctype))
		}
	}
	for _, e := range have {
		if _, ok := res.KDCHas(e); !ok {
			extra = append(extra, EnctypeName(e))
		}
	}
	if len(missing)+len(extra) > 0 {
		var kdc []string
		for _, k := range res.KDCKeys {
			kdc = append(kdc, EnctypeName(k.Enctype))
		}
		var parts []string
		if len(missing) > 0 {
			parts = append(parts, "missing "+strings.Join(missing, ", "))
		}
		if len(extra) > 0 {
			parts = append(parts, "the KDC has no "+strings.Join(extra, ", "))
		}
		f.add("ON005", p, "", map[string]any{
			"kvno": res.KDCKVNO, "kdc_enctypes": kdc, "keytab_enctypes": enctypeNameList(have),
			"missing_in_keytab": nonNil(missing), "extra_in_keytab": nonNil(extra),
		}, "keytab enctypes at kvno %d differ from the KDC's: %s", res.KDCKVNO, strings.Join(parts, "; "))
	}
	return f.list
}

func anyOK(cs []KeyCheck) bool {
	for _, c := range cs {
		if c.OK {
			return true
		}
	}
	return false
}

func triedKVNOs(cs []KeyCheck) []uint32 {
	seen := map[uint32]bool{}
	for _, c := range cs {
		seen[c.KVNO] = true
	}
	return sortedKVNOs(seen)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
