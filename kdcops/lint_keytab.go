package kdcops

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// KeytabAccessFindings checks the keytab file's mode and owner (KT002,
// KT003).
func KeytabAccessFindings(path string, fi os.FileInfo, o LintOptions) []Finding {
	f := findings{rules: o.Rules, file: path}
	accessFindings(&f, "keytab", fi, o.UID)
	return f.list
}

// PrincipalSummary is what a keytab holds for one principal: the facts the
// rules and the prometheus output need.
type PrincipalSummary struct {
	Principal   string
	Entries     int
	KVNOs       []uint32  // distinct, ascending
	Newest      uint32    // the highest kvno
	NewestAt    time.Time // the latest timestamp of an entry at Newest
	Enctypes    []int32   // distinct enctypes at Newest, in keytab order
	AllEnctypes []int32   // distinct enctypes at any kvno, in keytab order
}

// SummarizeKeytab groups entries by principal, in order of first
// appearance.
func SummarizeKeytab(entries []KeytabEntry) []PrincipalSummary {
	var order []string
	by := map[string][]KeytabEntry{}
	for _, e := range entries {
		if _, ok := by[e.Principal]; !ok {
			order = append(order, e.Principal)
		}
		by[e.Principal] = append(by[e.Principal], e)
	}
	out := make([]PrincipalSummary, 0, len(order))
	for _, p := range order {
		out = append(out, summarize(p, by[p]))
	}
	return out
}

func summarize(p string, es []KeytabEntry) PrincipalSummary {
	s := PrincipalSummary{Principal: p, Entries: len(es)}
	kvnos := map[uint32]bool{}
	for _, e := range es {
		kvnos[e.KVNO] = true
		s.Newest = max(s.Newest, e.KVNO)
		if !containsEnctype(s.AllEnctypes, e.Enctype) {
			s.AllEnctypes = append(s.AllEnctypes, e.Enctype)
		}
	}
	s.KVNOs = sortedKVNOs(kvnos)
	for _, e := range es {
		if e.KVNO != s.Newest {
			continue
		}
		if e.Timestamp.After(s.NewestAt) {
			s.NewestAt = e.Timestamp
		}
		if !containsEnctype(s.Enctypes, e.Enctype) {
			s.Enctypes = append(s.Enctypes, e.Enctype)
		}
	}
	return s
}

func containsEnctype(list []int32, e int32) bool {
	for _, x := range list {
		if x == e {
			return true
		}
	}
	return false
}

func enctypeNameList(es []int32) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = EnctypeName(e)
	}
	return out
}

// LintKeytab applies the content rules KT004 to KT013 to the entries of
// one keytab.
func LintKeytab(path string, entries []KeytabEntry, o LintOptions) []Finding {
	f := findings{rules: o.Rules, file: path}
	if len(entries) == 0 {
		f.add("KT004", "", "", map[string]any{"entries": 0}, "keytab has no entries")
		if o.Principal != "" {
			f.add("KT005", o.Principal, "", map[string]any{"expected": o.Principal, "principals": []string{}},
				"expected principal %s is not in the keytab", o.Principal)
		}
		return f.list
	}
	sums := SummarizeKeytab(entries)
	if o.Principal != "" {
		found := false
		names := make([]string, 0, min(len(sums), maxListed))
		for _, s := range sums {
			found = found || matchPrincipal(s.Principal, o.Principal)
			if len(names) < maxListed {
				names = append(names, s.Principal)
			}
		}
		if !found {
			f.add("KT005", o.Principal, "", map[string]any{"expected": o.Principal, "principals": names},
				"expected principal %s is not in the keytab (it holds %s)", o.Principal, strings.Join(names, ", "))
		}
	}
	now := o.now()
	for _, s := range sums {
		lintPrincipal(&f, s, entries, o, now)
	}
	return f.list
}

func lintPrincipal(f *findings, s PrincipalSummary, all []KeytabEntry, o LintOptions, now time.Time) {
	var es []KeytabEntry
	for _, e := range all {
		if e.Principal == s.Principal {
			es = append(es, e)
		}
	}

	// KT006: weak keys at any kvno.
	weakKVNOs := map[uint32]bool{}
	var weak []int32
	for _, e := range es {
		if WeakEnctype(e.Enctype) {
			weakKVNOs[e.KVNO] = true
			if !containsEnctype(weak, e.Enctype) {
				weak = append(weak, e.Enctype)
			}
		}
	}
	if len(weak) > 0 {
		kv := sortedKVNOs(weakKVNOs)
		f.add("KT006", s.Principal, "", map[string]any{"enctypes": enctypeNameList(weak), "kvnos": kv},
			"weak enctype %s at kvno %s", strings.Join(enctypeNameList(weak), ", "), joinKVNOs(kv))
	}

	// KT007: the newest kvno is what the KDC uses; without AES there the
	// principal authenticates with weak crypto or, on a KDC that dropped
	// it, not at all.
	hasAES := false
	for _, e := range s.Enctypes {
		hasAES = hasAES || AESEnctype(e)
	}
	if !hasAES {
		f.add("KT007", s.Principal, "", map[string]any{"kvno": s.Newest, "enctypes": enctypeNameList(s.Enctypes)},
			"no AES key at kvno %d (has %s)", s.Newest, strings.Join(enctypeNameList(s.Enctypes), ", "))
	}

	// KT008: the newest kvno per enctype should be one number.
	newestBy := map[int32]uint32{}
	for _, e := range es {
		newestBy[e.Enctype] = max(newestBy[e.Enctype], e.KVNO)
	}
	distinct := map[uint32]bool{}
	for _, k := range newestBy {
		distinct[k] = true
	}
	if len(distinct) > 1 {
		var parts []string
		for _, et := range s.AllEnctypes {
			parts = append(parts, fmt.Sprintf("%s=%d", EnctypeName(et), newestBy[et]))
		}
		f.add("KT008", s.Principal, "", map[string]any{"newest_kvno_by_enctype": parts, "newest_kvno": s.Newest},
			"newest kvno differs by enctype: %s", strings.Join(parts, ", "))
	}

	// KT009: current + previous is all a two-phase rotation needs.
	if len(s.KVNOs) > 2 {
		f.add("KT009", s.Principal, "", map[string]any{"kvnos": s.KVNOs, "kvno_count": len(s.KVNOs)},
			"%d kvnos kept (%s); two are enough", len(s.KVNOs), joinKVNOs(s.KVNOs))
	}

	// KT010: the timestamp is when the newest key was written to a keytab,
	// the closest a keytab gets to "when was this key made".
	if o.MaxAge > 0 && !s.NewestAt.IsZero() {
		if age := now.Sub(s.NewestAt); age > o.MaxAge {
			f.add("KT010", s.Principal, "", map[string]any{
				"newest_kvno": s.Newest, "written_at": s.NewestAt,
				"age_seconds": age.Round(time.Second).Seconds(), "max_age_seconds": o.MaxAge.Seconds(),
			}, "newest kvno %d was written %s ago (%s), older than --max-age %s",
				s.Newest, HumanDuration(age), s.NewestAt.Format("2006-01-02"), HumanDuration(o.MaxAge))
		}
	}

	// KT011/KT012: one key per (kvno, enctype).
	type slot struct {
		kvno uint32
		et   int32
	}
	var slots []slot
	bySlot := map[slot][]KeytabEntry{}
	for _, e := range es {
		k := slot{e.KVNO, e.Enctype}
		if _, ok := bySlot[k]; !ok {
			slots = append(slots, k)
		}
		bySlot[k] = append(bySlot[k], e)
	}
	for _, k := range slots {
		dup := bySlot[k]
		if len(dup) < 2 {
			continue
		}
		offsets := make([]int64, len(dup))
		same := true
		for i, e := range dup {
			offsets[i] = e.Offset
			same = same && e.SameKey(dup[0])
		}
		ev := map[string]any{"kvno": k.kvno, "enctype": EnctypeName(k.et), "entries": len(dup), "offsets": offsets}
		if same {
			f.add("KT011", s.Principal, "", ev, "%d identical entries for kvno %d %s", len(dup), k.kvno, EnctypeName(k.et))
		} else {
			f.add("KT012", s.Principal, "", ev, "%d different keys for kvno %d %s", len(dup), k.kvno, EnctypeName(k.et))
		}
	}

	// KT013: kvno 256 is stored as 0 in the 8-bit field.
	wrapped := map[uint32]bool{}
	var top KeytabEntry
	for _, e := range es {
		if e.KVNO > 255 {
			wrapped[e.KVNO] = true
			if e.KVNO > top.KVNO {
				top = e
			}
		}
	}
	if len(wrapped) > 0 {
		kv := sortedKVNOs(wrapped)
		f.add("KT013", s.Principal, "", map[string]any{"kvnos": kv, "kvno": top.KVNO, "kvno8": top.KVNO8},
			"kvno %d is above 255: readers of the 8-bit field see kvno %d", top.KVNO, top.KVNO8)
	}
}

func joinKVNOs(kv []uint32) string {
	parts := make([]string, len(kv))
	for i, k := range kv {
		parts[i] = fmt.Sprint(k)
	}
	return strings.Join(parts, ", ")
}

// SortFindings orders findings by file, then rule, then principal, so a
// report over a tree read by parallel workers is the same on every run.
func SortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Rule != b.Rule {
			return a.Rule < b.Rule
		}
		return a.Principal < b.Principal
	})
}
