package runbook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/krbops/krbops/kdcops"
)

// Step ids of the klist-lint runbook. Steps about one file carry the file
// as their Group; keytab.dir is grouped by the directory.
const (
	StepCCacheRead  = "ccache.read"  // read the ccache: CC001-CC003
	StepCCacheTGT   = "ccache.tgt"   // its tickets: CC004-CC011
	StepKeytabRead  = "keytab.read"  // read a keytab: KT001-KT003
	StepKeytabRules = "keytab.rules" // its entries: KT004-KT013
	StepKeytabDir   = "keytab.dir"   // every keytab under a directory: KT001-KT013
	StepOnlineKVNO  = "online.kvno"  // --online: ON001, ON002, ON004, ON006, ON007
	StepOnlineKeys  = "online.keys"  // --online: ON003, ON005
	StepLintSummary = "lint.summary" // findings per rule
)

// KlistLint describes one klist-lint run.
type KlistLint struct {
	CCache  string   // ccache path to lint; "" lints none
	Keytabs []string // keytab paths to lint
	Dirs    []string // directories whose keytabs to lint
	Lint    kdcops.LintOptions
	Workers int // --dir worker pool size; 0 picks one from the CPU count

	Online  bool
	Config  *kdcops.Config // krb5.conf, for --online
	Timeout time.Duration  // per KDC call
	// OnlineCCache is the ccache whose TGT --online may use to ask the KDC
	// for a principal's kvno when the keytab itself cannot log in: the
	// linted --ccache, or the default cache. "" means none.
	OnlineCCache string
	Log          *slog.Logger

	// NewOnlineClient replaces the KDC client in tests.
	NewOnlineClient func(cc *kdcops.CCache) *kdcops.OnlineClient
}

// state keys, suffixed with the file path
const (
	keyCCache = "lint.ccache:"
	keyKeytab = "lint.keytab:"
	keyOnline = "lint.online:"
)

// Steps returns the klist-lint runbook: the ccache, then each keytab (with
// its online checks), then each directory, then the summary.
func (l KlistLint) Steps() []Step {
	if l.Log == nil {
		l.Log = slog.New(slog.DiscardHandler)
	}
	var steps []Step
	if l.CCache != "" {
		p := l.CCache
		steps = append(steps,
			Step{ID: StepCCacheRead, Title: "read credential cache", Group: p, Run: func(ctx context.Context, st *State) Result { return l.ccacheRead(st, p) }},
			Step{ID: StepCCacheTGT, Title: "TGT lifetime and flags", Group: p, Run: func(ctx context.Context, st *State) Result { return l.ccacheTGT(st, p) }},
		)
	}
	for _, p := range l.Keytabs {
		steps = append(steps,
			Step{ID: StepKeytabRead, Title: "read keytab", Group: p, Run: func(ctx context.Context, st *State) Result { return l.keytabRead(st, p) }},
			Step{ID: StepKeytabRules, Title: "keytab entries", Group: p, Run: func(ctx context.Context, st *State) Result { return l.keytabRules(st, p) }},
		)
		if l.Online {
			steps = append(steps,
				Step{ID: StepOnlineKVNO, Title: "kvno at the KDC", Group: p, Run: func(ctx context.Context, st *State) Result { return l.onlineKVNO(ctx, st, p) }},
				Step{ID: StepOnlineKeys, Title: "keys against the KDC", Group: p, Run: func(ctx context.Context, st *State) Result { return l.onlineKeys(st, p) }},
			)
		}
	}
	for _, d := range l.Dirs {
		steps = append(steps, Step{ID: StepKeytabDir, Title: "keytabs under a directory", Group: d,
			Run: func(ctx context.Context, st *State) Result { return l.keytabDir(ctx, d) }})
	}
	steps = append(steps, Step{ID: StepLintSummary, Title: "findings by rule", Run: l.summary})
	return steps
}

// convert moves kdcops findings into the report's type.
func convert(fs []kdcops.Finding) []Finding {
	out := make([]Finding, len(fs))
	for i, f := range fs {
		out[i] = Finding{
			Rule: f.Rule, Severity: Severity(f.Severity), File: f.File, Principal: f.Principal,
			Message: f.Message, Hint: f.Hint, Evidence: Evidence(f.Evidence),
		}
	}
	return out
}

// fromFindings makes a step's result: its status is the worst finding's
// severity (info counts as pass), its message says what passed or lists
// the rule ids found.
func fromFindings(fs []kdcops.Finding, okMsg string, ev Evidence) Result {
	res := Result{Status: Pass, Message: okMsg, Evidence: ev, Findings: convert(fs)}
	if len(fs) == 0 {
		return res
	}
	var ids []string
	seen := map[string]bool{}
	for _, f := range fs {
		switch f.Severity {
		case kdcops.SeverityFail:
			res.Status = Fail
		case kdcops.SeverityWarn:
			if res.Status == Pass {
				res.Status = Warn
			}
		}
		if !seen[f.Rule] {
			seen[f.Rule] = true
			ids = append(ids, f.Rule)
		}
	}
	noun := "findings"
	if len(fs) == 1 {
		noun = "finding"
	}
	res.Message = fmt.Sprintf("%s; %d %s: %s", okMsg, len(fs), noun, strings.Join(ids, ", "))
	if len(fs) == 1 {
		res.Message = fmt.Sprintf("%s; %s: %s", okMsg, fs[0].Rule, fs[0].Message)
		res.Hint = fs[0].Hint
	} else if res.Status != Pass {
		res.Hint = "see the findings below (-o json has their evidence)"
	}
	return res
}

func (l KlistLint) ccacheRead(st *State, path string) Result {
	var fs []kdcops.Finding
	if fi, err := os.Stat(path); err == nil {
		fs = append(fs, kdcops.CCacheAccessFindings(path, fi, l.Lint)...)
	}
	cc, err := kdcops.ReadCCacheFile(path, kdcops.CCacheOptions{KeepTGT: l.Online})
	if err != nil {
		fs = append(fs, kdcops.ReadErrorFinding("ccache", path, err, l.Lint.Rules)...)
		res := fromFindings(fs, "cannot read the credential cache", Evidence{"path": path})
		if res.Status == Pass {
			// CC001 is disabled, but the cache still could not be read.
			res.Status, res.Message = Error, "cannot read the credential cache: "+err.Error()
		}
		return res
	}
	st.Set(keyCCache+path, cc)
	ev := Evidence{"path": path, "version": cc.Version, "principal": cc.Principal, "tickets": len(cc.Creds), "config_entries": cc.ConfigCount}
	if cc.HasKDCOffset {
		ev["kdc_offset_seconds"] = cc.KDCOffset.Seconds()
	}
	return fromFindings(fs, fmt.Sprintf("version %d cache of %s, %s", cc.Version, cc.Principal, plural(len(cc.Creds), "ticket")), ev)
}

func (l KlistLint) ccacheTGT(st *State, path string) Result {
	cc, ok := Value[*kdcops.CCache](st, keyCCache+path)
	if !ok {
		return Result{Status: Skip, Message: "skipped: the credential cache could not be read"}
	}
	fs := kdcops.LintCCache(path, cc, l.Lint)
	tgt, ok := cc.TGT()
	if !ok {
		return fromFindings(fs, "no TGT", Evidence{"principal": cc.Principal})
	}
	now := l.now()
	labels := map[string]string{"ccache": path, "principal": cc.Principal, "server": tgt.Server}
	metrics := []Metric{{Name: "krb5_ticket_expiry_seconds", Help: "Unix time the TGT of a credential cache expires.",
		Labels: labels, Value: float64(tgt.EndTime.Unix())}}
	ev := Evidence{"principal": cc.Principal, "server": tgt.Server, "expires_at": tgt.EndTime,
		"remaining_seconds": tgt.EndTime.Sub(now).Round(time.Second).Seconds(), "flags": fmt.Sprintf("0x%08x", tgt.Flags),
		"session_enctype": kdcops.EnctypeName(tgt.SessionEnctype)}
	msg := fmt.Sprintf("TGT of %s expires %s (in %s)", cc.Principal, tgt.EndTime.UTC().Format(time.RFC3339), kdcops.HumanDuration(tgt.EndTime.Sub(now)))
	if tgt.EndTime.Before(now) {
		msg = fmt.Sprintf("TGT of %s expired %s", cc.Principal, tgt.EndTime.UTC().Format(time.RFC3339))
	}
	if tgt.Flags&kdcops.FlagRenewable != 0 && !tgt.RenewTill.IsZero() {
		metrics = append(metrics, Metric{Name: "krb5_ticket_renew_until_seconds", Help: "Unix time until which the TGT of a credential cache can be renewed (absent when not renewable).",
			Labels: labels, Value: float64(tgt.RenewTill.Unix())})
		ev["renew_until"] = tgt.RenewTill
		msg += ", renewable until " + tgt.RenewTill.UTC().Format(time.RFC3339)
	}
	res := fromFindings(fs, msg, ev)
	return res.WithMetrics(metrics...)
}

func (l KlistLint) now() time.Time {
	if l.Lint.Now.IsZero() {
		return time.Now()
	}
	return l.Lint.Now
}

func (l KlistLint) keytabRead(st *State, path string) Result {
	var fs []kdcops.Finding
	if fi, err := os.Stat(path); err == nil {
		fs = append(fs, kdcops.KeytabAccessFindings(path, fi, l.Lint)...)
	}
	kt, err := kdcops.ReadKeytabFile(path, kdcops.KeytabOptions{KeepKeys: l.Online})
	if err != nil {
		if kt != nil {
			kt.Wipe()
		}
		fs = append(fs, kdcops.ReadErrorFinding("keytab", path, err, l.Lint.Rules)...)
		res := fromFindings(fs, "cannot read the keytab", Evidence{"path": path})
		if res.Status == Pass {
			res.Status, res.Message = Error, "cannot read the keytab: "+err.Error()
		}
		return res
	}
	st.Set(keyKeytab+path, kt)
	ev := Evidence{"path": path, "version": kt.Version, "entries": len(kt.Entries), "principals": len(kt.Principals()), "holes": kt.Holes}
	return fromFindings(fs, fmt.Sprintf("version %d keytab, %s for %s", kt.Version, plural(len(kt.Entries), "entry"), plural(len(kt.Principals()), "principal")), ev)
}

func (l KlistLint) keytabRules(st *State, path string) Result {
	kt, ok := Value[*kdcops.Keytab](st, keyKeytab+path)
	if !ok {
		return Result{Status: Skip, Message: "skipped: the keytab could not be read"}
	}
	fs := kdcops.LintKeytab(path, kt.Entries, l.Lint)
	now := l.now()
	var metrics []Metric
	var parts []string
	for _, s := range kdcops.SummarizeKeytab(kt.Entries) {
		labels := map[string]string{"keytab": path, "principal": s.Principal}
		metrics = append(metrics,
			Metric{Name: "krb5_keytab_kvno", Help: "Newest key version number of a principal in a keytab.", Labels: labels, Value: float64(s.Newest)},
			Metric{Name: "krb5_keytab_newest_age_seconds", Help: "Seconds since the newest key of a principal was written to a keytab (its entry timestamp).",
				Labels: labels, Value: now.Sub(s.NewestAt).Round(time.Second).Seconds()},
		)
		if len(parts) < 3 {
			parts = append(parts, fmt.Sprintf("%s kvno %d", s.Principal, s.Newest))
		}
	}
	msg := "no entries"
	if n := len(kt.Principals()); n > 0 {
		msg = strings.Join(parts, ", ")
		if n > len(parts) {
			msg += fmt.Sprintf(" and %d more", n-len(parts))
		}
	}
	return fromFindings(fs, msg, Evidence{"principals": len(kt.Principals()), "entries": len(kt.Entries)}).WithMetrics(metrics...)
}

type onlineState struct {
	results []*kdcops.OnlineResult
}

func (l KlistLint) onlineClient(st *State) (*kdcops.OnlineClient, string) {
	var cc *kdcops.CCache
	note := "none"
	if l.OnlineCCache != "" {
		if c, ok := Value[*kdcops.CCache](st, keyCCache+l.OnlineCCache); ok {
			cc, note = c, l.OnlineCCache
		} else if c, err := kdcops.ReadCCacheFile(l.OnlineCCache, kdcops.CCacheOptions{KeepTGT: true}); err == nil {
			cc, note = c, l.OnlineCCache
		} else {
			note = "unavailable: " + err.Error()
		}
	}
	if l.NewOnlineClient != nil {
		return l.NewOnlineClient(cc), note
	}
	return &kdcops.OnlineClient{Config: l.Config, Timeout: l.Timeout, Log: l.Log, CCache: cc}, note
}

func (l KlistLint) onlineKVNO(ctx context.Context, st *State, path string) Result {
	kt, ok := Value[*kdcops.Keytab](st, keyKeytab+path)
	if !ok {
		return Result{Status: Skip, Message: "skipped: the keytab could not be read"}
	}
	if len(kt.Entries) == 0 {
		return Result{Status: Skip, Message: "skipped: the keytab has no entries"}
	}
	client, ccNote := l.onlineClient(st)
	ons := &onlineState{}
	st.Set(keyOnline+path, ons)
	var fs []kdcops.Finding
	var parts []string
	for _, p := range kt.Principals() {
		res, err := client.Check(ctx, kt.EntriesFor(p))
		if err != nil {
			r := fromFindings(fs, "", Evidence{"principal": p, "ccache_tgt": ccNote})
			return onlineError(ctx, r, p, err)
		}
		ons.results = append(ons.results, res)
		fs = append(fs, kdcops.LintOnlineKVNO(path, res, l.Lint)...)
		switch {
		case res.Unknown:
			parts = append(parts, p+": unknown to the KDC")
		case res.Refused != "":
			parts = append(parts, p+": refused ("+res.Refused+")")
		case res.KVNOKnown:
			parts = append(parts, fmt.Sprintf("%s: KDC kvno %d, keytab kvno %d", p, res.KDCKVNO, res.KeytabKVNO))
		default:
			parts = append(parts, fmt.Sprintf("%s: KDC kvno unknown, keytab kvno %d", p, res.KeytabKVNO))
		}
	}
	ev := Evidence{"principals": len(ons.results), "ccache_tgt": ccNote}
	if len(ons.results) == 1 {
		r := ons.results[0]
		ev["keytab_kvno"] = r.KeytabKVNO
		if r.KVNOKnown {
			ev["kdc_kvno"] = r.KDCKVNO
			ev["kdc_kvno_source"] = r.KVNOSource
		} else if r.KVNONote != "" {
			ev["kvno_note"] = r.KVNONote
		}
	}
	msg := strings.Join(parts, "; ")
	res := fromFindings(fs, msg, ev)
	if res.Status == Pass {
		for _, r := range ons.results {
			if !r.KVNOKnown && !r.Unknown && r.Refused == "" && r.KVNONote != "" && len(fs) == 0 {
				// The key works but the kvno could not be read: say why.
				res.Status = Warn
				res.Hint = "the keytab authenticates; to compare kvnos krbops needs a ticket for the principal: " + r.KVNONote
			}
		}
	}
	return res
}

func onlineError(ctx context.Context, r Result, principal string, err error) Result {
	r.Status = Error
	var unreachable *kdcops.UnreachableError
	var bad *kdcops.BadReplyError
	var ce *kdcops.ConfigError
	switch {
	case ctx.Err() != nil:
		r.Message = "online check interrupted"
	case errors.As(err, &unreachable):
		r.Message = fmt.Sprintf("checking %s: %s", principal, err)
		r.Hint = "no KDC answered: check the realm's kdc entries in krb5.conf and that port 88 is reachable (krbops clock-check probes each KDC)"
	case errors.As(err, &ce):
		r.Message = err.Error()
		r.Hint = "add the realm's KDCs to krb5.conf (or --krb5-config) to check this principal online"
	case errors.As(err, &bad):
		r.Message = fmt.Sprintf("checking %s: %s", principal, err)
		r.Hint = "something other than a KDC answers: check the kdc entries in krb5.conf"
	default:
		r.Message = fmt.Sprintf("checking %s: %s", principal, err)
		r.Hint = "re-run with -v or --log-file to see the exchange"
	}
	return r
}

func (l KlistLint) onlineKeys(st *State, path string) Result {
	kt, ok := Value[*kdcops.Keytab](st, keyKeytab+path)
	if !ok {
		return Result{Status: Skip, Message: "skipped: the keytab could not be read"}
	}
	// The keys are not needed after this step.
	defer kt.Wipe()
	ons, ok := Value[*onlineState](st, keyOnline+path)
	if !ok {
		return Result{Status: Skip, Message: "skipped: no online kvno check ran"}
	}
	var fs []kdcops.Finding
	accepted, rejected := 0, 0
	for _, r := range ons.results {
		fs = append(fs, kdcops.LintOnlineKeys(path, r, kt.Entries, l.Lint)...)
		for _, c := range r.Checks {
			if c.KVNO != r.KDCKVNO || !r.KVNOKnown {
				continue
			}
			if c.OK {
				accepted++
			} else {
				rejected++
			}
		}
	}
	if len(ons.results) < len(kt.Principals()) {
		return Result{Status: Skip, Message: "skipped: the online kvno check did not finish"}
	}
	msg := fmt.Sprintf("keys at the KDC's kvno: %d accepted, %d rejected", accepted, rejected)
	if accepted+rejected == 0 {
		msg = "no key at the KDC's kvno to check"
	}
	return fromFindings(fs, msg, Evidence{"accepted": accepted, "rejected": rejected})
}

func (l KlistLint) keytabDir(ctx context.Context, dir string) Result {
	var fs []kdcops.Finding
	stats, err := kdcops.LintDir(ctx, dir, l.Lint, l.Workers, func(r kdcops.KeytabFile) {
		fs = append(fs, r.Findings...)
	})
	kdcops.SortFindings(fs)
	ev := Evidence{
		"files": stats.Files, "keytabs": stats.Keytabs, "skipped": stats.Skipped,
		"special": stats.Special, "entries": stats.Entries, "dir_errors": stats.DirError,
	}
	metric := Metric{Name: "krbops_lint_keytabs_scanned", Help: "Keytabs found and linted under a --dir directory.",
		Labels: map[string]string{"dir": dir}, Value: float64(stats.Keytabs)}
	if err != nil {
		r := fromFindings(fs, "", ev)
		r.Status = Error
		if ctx.Err() != nil {
			r.Message = fmt.Sprintf("interrupted after %d keytabs", stats.Keytabs)
		} else {
			r.Message = err.Error()
			r.Hint = "check that the directory exists and is readable"
		}
		return r
	}
	msg := fmt.Sprintf("%s linted (%s); %d other files skipped", plural(stats.Keytabs, "keytab"), plural(stats.Entries, "entry"), stats.Skipped)
	if stats.Special > 0 {
		msg += fmt.Sprintf(", %d symlinks or special files not followed", stats.Special)
	}
	return fromFindings(fs, msg, ev).WithMetrics(metric)
}

func (l KlistLint) summary(_ context.Context, st *State) Result {
	all := st.Findings()
	count := map[string]int{}
	for _, f := range all {
		count[f.Rule]++
	}
	var metrics []Metric
	for _, r := range l.Lint.Rules.EnabledRules() {
		metrics = append(metrics, Metric{
			Name: "krbops_lint_findings", Help: "Findings of the last krbops klist-lint run, by rule and severity.",
			Labels: map[string]string{"rule": r.ID, "severity": string(r.Severity)}, Value: float64(count[r.ID]),
		})
	}
	c := CountFindings(all)
	ev := Evidence{"findings": c.Total(), "fail": c.Fail, "warn": c.Warn, "info": c.Info}
	var ids []string
	for id := range count {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	ev["rules"] = ids
	res := Result{Status: Pass, Evidence: ev, Metrics: metrics}
	switch {
	case c.Total() == 0:
		res.Message = "no findings"
	default:
		res.Message = fmt.Sprintf("%s: %d fail, %d warn, %d info (%s)", plural(c.Total(), "finding"), c.Fail, c.Warn, c.Info, strings.Join(ids, ", "))
	}
	switch {
	case c.Fail > 0:
		res.Status = Fail
		res.Hint = "fix the fail findings first; each carries its own hint (docs/lint-rules.md explains every rule)"
	case c.Warn > 0:
		res.Status = Warn
		res.Hint = "each finding carries its own hint (docs/lint-rules.md explains every rule)"
	}
	return res
}

// plural says "1 entry", "2 entries", "0 tickets".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(noun, "y"))
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
