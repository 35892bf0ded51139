package kdcops

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/krbops/krbops/internal/readcap"
	"github.com/krbops/krbops/internal/shquote"
)

// Severity of a lint rule: fixed per rule, so a script or an alert can
// key on the rule id alone.
type Severity string

const (
	SeverityInfo Severity = "info"
	SeverityWarn Severity = "warn"
	SeverityFail Severity = "fail"
)

// Rule is one lint rule. docs/lint-rules.md has a paragraph per rule; the
// ids are a contract: never renumber, never reuse a retired id.
type Rule struct {
	ID       string
	Severity Severity
	Title    string // what the rule detects, one line
	Hint     string // the default remedy; a finding may carry a more specific one
}

// Rules is the catalogue, in id order.
var Rules = []Rule{
	{"CC001", SeverityFail, "credential cache unreadable or corrupt", "kinit again (kinit -c FILE:/path principal); if the file is corrupt, kdestroy it first"},
	{"CC002", SeverityFail, "credential cache readable or writable by group or others", "chmod 600 the cache: anyone who can read it can use its tickets"},
	{"CC003", SeverityWarn, "credential cache owned by another user", "point --ccache (KRB5CCNAME) at this user's own cache, or fix the owner with chown"},
	{"CC004", SeverityFail, "no TGT in the credential cache", "kinit (or kinit -k -t KEYTAB PRINCIPAL for a service) to get a TGT"},
	{"CC005", SeverityFail, "TGT expired", "kinit again; a service should re-login from its keytab before the TGT expires"},
	{"CC006", SeverityFail, "TGT expires before --min-remaining", "kinit (or kinit -R while renewable) before starting the job, or shorten the job"},
	{"CC007", SeverityInfo, "TGT not renewable", "if jobs outlive the ticket lifetime, kinit -r 7d (and check max_renewable_life for the principal and krbtgt)"},
	{"CC008", SeverityWarn, "TGT renewable only until before --min-remaining", "kinit afresh: renewal cannot extend the ticket past renew-until"},
	{"CC009", SeverityWarn, "TGT start time in the future: this host's clock is behind the KDC", "run krbops clock-check and fix time sync on this host"},
	{"CC010", SeverityWarn, "session key uses a weak enctype", "remove des/des3/rc4 from the KDC's supported_enctypes and the principal's keys, then kinit again"},
	{"CC011", SeverityFail, "default principal is not the expected one", "kinit as the expected principal, or point --ccache at the right cache"},

	{"KT001", SeverityFail, "keytab unreadable or corrupt", "re-export the keytab from the KDC (kadmin ktadd -norandkey, or your secret store); do not hand-edit it"},
	{"KT002", SeverityFail, "keytab readable or writable by group or others", "chmod 600 the keytab and chown it to the service user: a keytab is a password"},
	{"KT003", SeverityWarn, "keytab owned by another user", "chown the keytab to the user of the service that reads it"},
	{"KT004", SeverityFail, "keytab has no entries", "re-export the principal's keys into it (kadmin ktadd -norandkey -k FILE PRINCIPAL)"},
	{"KT005", SeverityFail, "expected principal missing from the keytab", "export the principal into this keytab, or point --keytab at the keytab that holds it"},
	{"KT006", SeverityWarn, "weak enctype keys (des, des3, rc4/arcfour)", "remove the weak keys (ktutil: delent) once nothing needs them, and drop the enctypes at the KDC"},
	{"KT007", SeverityFail, "no AES key at the newest kvno", "add AES keys at the KDC (cpw -e aes256-cts-hmac-sha1-96:normal,aes128-cts-hmac-sha1-96:normal) and re-export"},
	{"KT008", SeverityWarn, "newest kvno differs across enctypes (partial update)", "re-export all of the principal's keys at its current kvno, then remove the stragglers"},
	{"KT009", SeverityWarn, "more than two kvnos kept (prune candidate)", "keep the current and the previous kvno only: ktutil delent, or re-export after the old tickets expired"},
	{"KT010", SeverityWarn, "newest kvno older than --max-age (rotation due)", "rotate the principal's key (krbops rotation runbook, or cpw -randkey + ktadd in two phases)"},
	{"KT011", SeverityWarn, "duplicate entries", "rewrite the keytab without the duplicates (ktutil rkt, delent, wkt)"},
	{"KT012", SeverityFail, "conflicting keys for the same principal, kvno and enctype", "re-export the principal's keys from the KDC: only one of the keys can be right"},
	{"KT013", SeverityWarn, "kvno above 255: the 8-bit field wraps", "make sure every reader of this keytab (Java, old MIT, Heimdal, AD tools) uses the 32-bit kvno"},

	{"ON001", SeverityFail, "keytab is stale: the KDC's kvno is newer", "export the current keys (kadmin ktadd -norandkey) and redistribute the keytab"},
	{"ON002", SeverityFail, "keytab is ahead of the KDC: wrong KDC or realm", "check that krb5.conf points at the realm's real KDCs; a restored KDC database can also be behind"},
	{"ON003", SeverityFail, "the KDC rejects the keytab's key at its current kvno", "re-export the key from the KDC; a keytab made with ktutil addent -password needs the KDC's salt (ktutil addent -f)"},
	{"ON004", SeverityFail, "keytab cannot authenticate and the KDC's kvno is unknown", "pass --ccache with a TGT of your own (kinit you@REALM) so krbops can ask the KDC for the principal's kvno"},
	{"ON005", SeverityWarn, "keytab enctypes differ from the KDC's keys", "re-export the principal's keys so the keytab holds exactly the KDC's enctypes at the current kvno"},
	{"ON006", SeverityFail, "principal unknown to the KDC", "the principal was deleted or renamed at the KDC: remove the keytab or recreate the principal"},
	{"ON007", SeverityFail, "the KDC refuses the principal tickets (disabled, expired or locked out)", "check the principal at the KDC (kadmin getprinc): allow_tix, expiration, and failed-login lockout (kadmin modprinc -unlock)"},
}

var rulesByID = func() map[string]Rule {
	m := make(map[string]Rule, len(Rules))
	for _, r := range Rules {
		m[r.ID] = r
	}
	return m
}()

// RuleByID returns a rule of the catalogue.
func RuleByID(id string) (Rule, bool) {
	r, ok := rulesByID[strings.ToUpper(id)]
	return r, ok
}

// RuleIDs lists every rule id in order.
func RuleIDs() []string {
	ids := make([]string, len(Rules))
	for i, r := range Rules {
		ids[i] = r.ID
	}
	return ids
}

// UnknownRuleError is an id given to --only or --disable that is not in
// the catalogue.
type UnknownRuleError struct{ ID string }

func (e *UnknownRuleError) Error() string { return fmt.Sprintf("unknown rule id %q", e.ID) }

// RuleSet says which rules run. The zero value runs every rule.
type RuleSet struct {
	off map[string]bool
}

// NewRuleSet builds the set from --only (when non-empty, just these) and
// --disable (never these). Ids are case-insensitive.
func NewRuleSet(only, disable []string) (RuleSet, error) {
	off := map[string]bool{}
	if len(only) > 0 {
		keep := map[string]bool{}
		for _, id := range only {
			r, ok := RuleByID(strings.TrimSpace(id))
			if !ok {
				return RuleSet{}, &UnknownRuleError{ID: id}
			}
			keep[r.ID] = true
		}
		for _, r := range Rules {
			if !keep[r.ID] {
				off[r.ID] = true
			}
		}
	}
	for _, id := range disable {
		r, ok := RuleByID(strings.TrimSpace(id))
		if !ok {
			return RuleSet{}, &UnknownRuleError{ID: id}
		}
		off[r.ID] = true
	}
	return RuleSet{off: off}, nil
}

// Enabled reports whether rule id runs.
func (s RuleSet) Enabled(id string) bool { return !s.off[id] }

// EnabledRules lists the rules that run, in id order.
func (s RuleSet) EnabledRules() []Rule {
	var out []Rule
	for _, r := range Rules {
		if s.Enabled(r.ID) {
			out = append(out, r)
		}
	}
	return out
}

// AnyEnabled reports whether a rule with one of the prefixes ("CC", "KT",
// "ON") runs: a step whose rules are all off need not read anything.
func (s RuleSet) AnyEnabled(prefix string) bool {
	for _, r := range Rules {
		if strings.HasPrefix(r.ID, prefix) && s.Enabled(r.ID) {
			return true
		}
	}
	return false
}

// Finding is one rule's verdict on one file (and principal). Evidence
// holds numbers, strings, times and slices of those; never key material.
type Finding struct {
	Rule      string
	Severity  Severity
	File      string
	Principal string
	Message   string
	Hint      string
	Evidence  map[string]any
}

// LintOptions are the settings every rule reads.
type LintOptions struct {
	Rules        RuleSet
	Principal    string        // --principal: expected principal; "" checks nothing
	MinRemaining time.Duration // --min-remaining
	MaxAge       time.Duration // --max-age
	Now          time.Time     // zero: time.Now()
	UID          int           // the running user's uid (RunningUID); -1 skips the owner rules
}

func (o LintOptions) now() time.Time {
	if o.Now.IsZero() {
		return time.Now()
	}
	return o.Now
}

// findings collects the findings of one file, dropping those of disabled
// rules and filling severity and default hint from the catalogue.
type findings struct {
	rules RuleSet
	file  string
	list  []Finding
}

func (f *findings) add(id, principal, hint string, ev map[string]any, format string, a ...any) {
	if !f.rules.Enabled(id) {
		return
	}
	r, ok := rulesByID[id]
	if !ok {
		panic("kdcops: finding for unknown rule " + id) // a typo in krbops, caught by the tests
	}
	if hint == "" {
		hint = r.Hint
	}
	if ev == nil {
		ev = map[string]any{}
	}
	f.list = append(f.list, Finding{
		Rule: id, Severity: r.Severity, File: f.file, Principal: principal,
		Message: fmt.Sprintf(format, a...), Hint: hint, Evidence: ev,
	})
}

// ReadErrorFinding turns an error reading a keytab (kind "keytab") or
// ccache into KT001 or CC001, with the byte offset when the file is
// corrupt. The error text never holds key bytes: krbops' own parsers
// produce it. A path that is not a regular file (a device, a FIFO, a
// directory) is named as what it is, with a hint that never suggests
// changing it.
func ReadErrorFinding(kind, path string, err error, rules RuleSet) []Finding {
	id, verb, flag := "KT001", "keytab", "--keytab"
	if kind != "keytab" {
		id, verb, flag = "CC001", "credential cache", "--ccache"
	}
	f := findings{rules: rules, file: path}
	ev := map[string]any{"error": describeReadError(err)}
	msg := describeReadError(err)
	if fe, ok := err.(*FileError); ok && fe.Offset() >= 0 {
		ev["offset"] = fe.Offset()
	}
	hint := ""
	var nr *readcap.NotRegularError
	if errors.As(err, &nr) {
		what := readcap.DescribeMode(nr.Mode)
		ev["file_type"] = what
		msg = "is a " + what + ", not a regular file"
		hint = fmt.Sprintf("%s is a %s, not a %s file: point %s at the file itself (krbops leaves special files alone)", path, what, verb, flag)
	}
	f.add(id, "", hint, ev, "%s %s", verb, msg)
	return f.list
}

func describeReadError(err error) string {
	if fe, ok := err.(*FileError); ok {
		if ferr, ok := fe.Err.(*FormatError); ok {
			return ferr.Error()
		}
		return describeOpenError(fe.Err)
	}
	return err.Error()
}

// permBitsMeaningful is false on Windows, where Go reports 0666/0444 for
// every file.
var permBitsMeaningful = runtime.GOOS != "windows"

// accessFindings checks mode and owner of a keytab or ccache: both hold
// secrets that anyone able to read them can use. Only a regular file is
// checked: /dev/null named as a keytab is mode 0666 and owned by root, and
// "chmod 600 /dev/null" is advice that breaks the host. Reading such a
// path fails with KT001/CC001, which says what it is.
func accessFindings(f *findings, kind string, fi os.FileInfo, uid int) {
	if !fi.Mode().IsRegular() {
		return
	}
	modeID, ownerID, what := "KT002", "KT003", "keytab"
	if kind != "keytab" {
		modeID, ownerID, what = "CC002", "CC003", "credential cache"
	}
	if permBitsMeaningful {
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			chmod := "chmod 600 the file"
			if c := shquote.Command("chmod", "600", f.file); c != "" {
				chmod = c
			}
			f.add(modeID, "", chmod+" (and chown it to the user that needs it): anyone who can read it can act as its principals",
				map[string]any{"mode": fmt.Sprintf("%04o", perm)},
				"%s mode %04o gives access to %s", what, perm, who(perm))
		}
	}
	// Root inspects other users' files as a matter of course; for anyone
	// else a file owned by another user is someone else's identity.
	if owner, ok := fileOwner(fi); ok && uid > 0 && owner != uid {
		f.add(ownerID, "", "", map[string]any{"owner_uid": owner, "running_uid": uid},
			"%s is owned by uid %d, not by the running user (uid %d)", what, owner, uid)
	}
}

func who(perm os.FileMode) string {
	var parts []string
	if perm&0o070 != 0 {
		parts = append(parts, "its group")
	}
	if perm&0o007 != 0 {
		parts = append(parts, "all users")
	}
	return strings.Join(parts, " and ")
}

// HumanDuration prints a duration the way the on-call types it in a flag:
// "9m59s", "1h", "90d", "2d3h".
func HumanDuration(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	d = d.Round(time.Second)
	var s string
	if d >= 48*time.Hour {
		days := d / (24 * time.Hour)
		s = strconv.Itoa(int(days)) + "d"
		if h := (d % (24 * time.Hour)).Round(time.Hour) / time.Hour; h > 0 {
			s += strconv.Itoa(int(h)) + "h"
		}
	} else {
		s = d.String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
	}
	if neg {
		return "-" + s
	}
	return s
}

// sortedKVNOs returns the distinct kvnos of entries, ascending.
func sortedKVNOs(set map[uint32]bool) []uint32 {
	out := make([]uint32, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// matchPrincipal reports whether have (name@REALM) is the expected
// principal; an expectation without a realm matches any realm.
func matchPrincipal(have, want string) bool {
	if have == want {
		return true
	}
	if !strings.Contains(want, "@") {
		name, _ := SplitPrincipal(have)
		return name == want
	}
	return false
}
