// Package klistlint is the klist-lint runbook: a credential cache, keytabs
// and keytab directories against the lint rules of kdcops, optionally
// checked online against the KDC, and a summary by rule. Start with
// [Check.Steps]. [FromFindings] turns kdcops findings into a step result;
// verify uses it for its keytab step.
package klistlint

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
	"github.com/krbops/krbops/runbook"
)

// runbook.Step ids of the klist-lint runbook. Steps about one file carry the file
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

// Check describes one klist-lint run.
type Check struct {
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

// run is what the steps of one klist-lint run share, per file: the
// parsed ccache or keytab and the online results. Steps of one run execute
// in order, so the map needs no lock.
type run struct{ files map[string]*file }

type file struct {
	cc     *kdcops.CCache
	kt     *kdcops.Keytab
	online *onlineState
}

func (r *run) file(path string) *file {
	f, ok := r.files[path]
	if !ok {
		f = &file{}
		r.files[path] = f
	}
	return f
}

// Steps returns the klist-lint runbook: the ccache, then each keytab (with
// its online checks), then each directory, then the summary.
func (l Check) Steps() []runbook.Step {
	if l.Log == nil {
		l.Log = slog.New(slog.DiscardHandler)
	}
	r := &run{files: map[string]*file{}}
	var steps []runbook.Step
	if l.CCache != "" {
		p := l.CCache
		steps = append(steps,
			runbook.Step{ID: StepCCacheRead, Title: "read credential cache", Group: p, Run: func(ctx context.Context, st *runbook.State) runbook.Result { return l.ccacheRead(r, p) }},
			runbook.Step{ID: StepCCacheTGT, Title: "TGT lifetime and flags", Group: p, Run: func(ctx context.Context, st *runbook.State) runbook.Result { return l.ccacheTGT(r, p) }},
		)
	}
	for _, p := range l.Keytabs {
		steps = append(steps,
			runbook.Step{ID: StepKeytabRead, Title: "read keytab", Group: p, Run: func(ctx context.Context, st *runbook.State) runbook.Result { return l.keytabRead(r, p) }},
			runbook.Step{ID: StepKeytabRules, Title: "keytab entries", Group: p, Run: func(ctx context.Context, st *runbook.State) runbook.Result { return l.keytabRules(r, p) }},
		)
		if l.Online {
			steps = append(steps,
				runbook.Step{ID: StepOnlineKVNO, Title: "kvno at the KDC", Group: p, Run: func(ctx context.Context, st *runbook.State) runbook.Result { return l.onlineKVNO(ctx, r, p) }},
				runbook.Step{ID: StepOnlineKeys, Title: "keys against the KDC", Group: p, Run: func(ctx context.Context, st *runbook.State) runbook.Result { return l.onlineKeys(r, p) }},
			)
		}
	}
	for _, d := range l.Dirs {
		steps = append(steps, runbook.Step{ID: StepKeytabDir, Title: "keytabs under a directory", Group: d,
			Run: func(ctx context.Context, st *runbook.State) runbook.Result { return l.keytabDir(ctx, d) }})
	}
	steps = append(steps, runbook.Step{ID: StepLintSummary, Title: "findings by rule", Run: l.summary})
	return steps
}

// convertFindings moves kdcops findings into the report's type.
func convertFindings(fs []kdcops.Finding) []runbook.Finding {
	out := make([]runbook.Finding, len(fs))
	for i, f := range fs {
		out[i] = runbook.Finding{
			Rule: f.Rule, Severity: runbook.Severity(f.Severity), File: f.File, Principal: f.Principal,
			Message: f.Message, Hint: f.Hint, Evidence: runbook.Evidence(f.Evidence),
		}
	}
	return out
}

// FromFindings makes a step's result: its status is the worst finding's
// severity (info counts as pass), its message says what passed or lists
// the rule ids found.
func FromFindings(fs []kdcops.Finding, okMsg string, ev runbook.Evidence) runbook.Result {
	res := runbook.Result{Status: runbook.Pass, Message: okMsg, Evidence: ev, Findings: convertFindings(fs)}
	if len(fs) == 0 {
		return res
	}
	var ids []string
	seen := map[string]bool{}
	for _, f := range fs {
		switch f.Severity {
		case kdcops.SeverityFail:
			res.Status = runbook.Fail
		case kdcops.SeverityWarn:
			if res.Status == runbook.Pass {
				res.Status = runbook.Warn
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
	} else if res.Status != runbook.Pass {
		res.Hint = "see the findings below (-o json has their evidence)"
	}
	return res
}

func (l Check) ccacheRead(r *run, path string) runbook.Result {
	var fs []kdcops.Finding
	if fi, err := os.Stat(path); err == nil {
		fs = append(fs, kdcops.CCacheAccessFindings(path, fi, l.Lint)...)
	}
	cc, err := kdcops.ReadCCacheFile(path, kdcops.CCacheOptions{KeepTGT: l.Online})
	if err != nil {
		fs = append(fs, kdcops.ReadErrorFinding("ccache", path, err, l.Lint.Rules)...)
		res := FromFindings(fs, "cannot read the credential cache", runbook.Evidence{"path": path})
		if res.Status == runbook.Pass {
			// CC001 is disabled, but the cache still could not be read.
			res.Status, res.Message = runbook.Error, "cannot read the credential cache: "+err.Error()
		}
		return res
	}
	r.file(path).cc = cc
	ev := runbook.Evidence{"path": path, "version": cc.Version, "principal": cc.Principal, "tickets": len(cc.Creds), "config_entries": cc.ConfigCount}
	if cc.HasKDCOffset {
		ev["kdc_offset_seconds"] = cc.KDCOffset.Seconds()
	}
	return FromFindings(fs, fmt.Sprintf("version %d cache of %s, %s", cc.Version, cc.Principal, plural(len(cc.Creds), "ticket")), ev)
}

func (l Check) ccacheTGT(r *run, path string) runbook.Result {
	cc := r.file(path).cc
	if cc == nil {
		return runbook.Result{Status: runbook.Skip, Message: "skipped: the credential cache could not be read"}
	}
	fs := kdcops.LintCCache(path, cc, l.Lint)
	tgt, ok := cc.TGT()
	if !ok {
		return FromFindings(fs, "no TGT", runbook.Evidence{"principal": cc.Principal})
	}
	now := l.now()
	labels := map[string]string{"ccache": path, "principal": cc.Principal, "server": tgt.Server}
	metrics := []runbook.Metric{{Name: "krb5_ticket_expiry_seconds", Help: "Unix time the TGT of a credential cache expires.",
		Labels: labels, Value: float64(tgt.EndTime.Unix())}}
	ev := runbook.Evidence{"principal": cc.Principal, "server": tgt.Server, "expires_at": tgt.EndTime,
		"remaining_seconds": tgt.EndTime.Sub(now).Round(time.Second).Seconds(), "flags": fmt.Sprintf("0x%08x", tgt.Flags),
		"session_enctype": kdcops.EnctypeName(tgt.SessionEnctype)}
	msg := fmt.Sprintf("TGT of %s expires %s (in %s)", cc.Principal, tgt.EndTime.UTC().Format(time.RFC3339), kdcops.HumanDuration(tgt.EndTime.Sub(now)))
	if tgt.EndTime.Before(now) {
		msg = fmt.Sprintf("TGT of %s expired %s", cc.Principal, tgt.EndTime.UTC().Format(time.RFC3339))
	}
	if tgt.Flags&kdcops.FlagRenewable != 0 && !tgt.RenewTill.IsZero() {
		metrics = append(metrics, runbook.Metric{Name: "krb5_ticket_renew_until_seconds", Help: "Unix time until which the TGT of a credential cache can be renewed (absent when not renewable).",
			Labels: labels, Value: float64(tgt.RenewTill.Unix())})
		ev["renew_until"] = tgt.RenewTill
		msg += ", renewable until " + tgt.RenewTill.UTC().Format(time.RFC3339)
	}
	res := FromFindings(fs, msg, ev)
	return res.WithMetrics(metrics...)
}

func (l Check) now() time.Time {
	if l.Lint.Now.IsZero() {
		return time.Now()
	}
	return l.Lint.Now
}

func (l Check) keytabRead(r *run, path string) runbook.Result {
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
		res := FromFindings(fs, "cannot read the keytab", runbook.Evidence{"path": path})
		if res.Status == runbook.Pass {
			res.Status, res.Message = runbook.Error, "cannot read the keytab: "+err.Error()
		}
		return res
	}
	r.file(path).kt = kt
	ev := runbook.Evidence{"path": path, "version": kt.Version, "entries": len(kt.Entries), "principals": len(kt.Principals()), "holes": kt.Holes}
	return FromFindings(fs, fmt.Sprintf("version %d keytab, %s for %s", kt.Version, plural(len(kt.Entries), "entry"), plural(len(kt.Principals()), "principal")), ev)
}

func (l Check) keytabRules(r *run, path string) runbook.Result {
	kt := r.file(path).kt
	if kt == nil {
		return runbook.Result{Status: runbook.Skip, Message: "skipped: the keytab could not be read"}
	}
	fs := kdcops.LintKeytab(path, kt.Entries, l.Lint)
	now := l.now()
	var metrics []runbook.Metric
	var parts []string
	for _, s := range kdcops.SummarizeKeytab(kt.Entries) {
		labels := map[string]string{"keytab": path, "principal": s.Principal}
		metrics = append(metrics,
			runbook.Metric{Name: "krb5_keytab_kvno", Help: "Newest key version number of a principal in a keytab.", Labels: labels, Value: float64(s.Newest)},
			runbook.Metric{Name: "krb5_keytab_newest_age_seconds", Help: "Seconds since the newest key of a principal was written to a keytab (its entry timestamp).",
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
	return FromFindings(fs, msg, runbook.Evidence{"principals": len(kt.Principals()), "entries": len(kt.Entries)}).WithMetrics(metrics...)
}

type onlineState struct {
	results []*kdcops.OnlineResult
}

func (l Check) onlineClient(r *run) (*kdcops.OnlineClient, string) {
	var cc *kdcops.CCache
	note := "none"
	if l.OnlineCCache != "" {
		if c := r.file(l.OnlineCCache).cc; c != nil {
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

func (l Check) onlineKVNO(ctx context.Context, r *run, path string) runbook.Result {
	kt := r.file(path).kt
	if kt == nil {
		return runbook.Result{Status: runbook.Skip, Message: "skipped: the keytab could not be read"}
	}
	if len(kt.Entries) == 0 {
		return runbook.Result{Status: runbook.Skip, Message: "skipped: the keytab has no entries"}
	}
	client, ccNote := l.onlineClient(r)
	ons := &onlineState{}
	r.file(path).online = ons
	var fs []kdcops.Finding
	var parts []string
	for _, p := range kt.Principals() {
		res, err := client.Check(ctx, kt.EntriesFor(p))
		if err != nil {
			partial := FromFindings(fs, "", runbook.Evidence{"principal": p, "ccache_tgt": ccNote})
			return onlineError(ctx, partial, p, err)
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
	ev := runbook.Evidence{"principals": len(ons.results), "ccache_tgt": ccNote}
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
	res := FromFindings(fs, msg, ev)
	if res.Status == runbook.Pass {
		for _, o := range ons.results {
			if !o.KVNOKnown && !o.Unknown && o.Refused == "" && o.KVNONote != "" && len(fs) == 0 {
				// The key works but the kvno could not be read: say why.
				res.Status = runbook.Warn
				res.Hint = "the keytab authenticates; to compare kvnos krbops needs a ticket for the principal: " + o.KVNONote
			}
		}
	}
	return res
}

func onlineError(ctx context.Context, r runbook.Result, principal string, err error) runbook.Result {
	r.Status = runbook.Error
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

func (l Check) onlineKeys(r *run, path string) runbook.Result {
	kt := r.file(path).kt
	if kt == nil {
		return runbook.Result{Status: runbook.Skip, Message: "skipped: the keytab could not be read"}
	}
	// The keys are not needed after this step.
	defer kt.Wipe()
	ons := r.file(path).online
	if ons == nil {
		return runbook.Result{Status: runbook.Skip, Message: "skipped: no online kvno check ran"}
	}
	var fs []kdcops.Finding
	accepted, rejected := 0, 0
	for _, o := range ons.results {
		fs = append(fs, kdcops.LintOnlineKeys(path, o, kt.Entries, l.Lint)...)
		for _, c := range o.Checks {
			if c.KVNO != o.KDCKVNO || !o.KVNOKnown {
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
		return runbook.Result{Status: runbook.Skip, Message: "skipped: the online kvno check did not finish"}
	}
	msg := fmt.Sprintf("keys at the KDC's kvno: %d accepted, %d rejected", accepted, rejected)
	if accepted+rejected == 0 {
		msg = "no key at the KDC's kvno to check"
	}
	return FromFindings(fs, msg, runbook.Evidence{"accepted": accepted, "rejected": rejected})
}

func (l Check) keytabDir(ctx context.Context, dir string) runbook.Result {
	var fs []kdcops.Finding
	stats, err := kdcops.LintDir(ctx, dir, l.Lint, l.Workers, func(r kdcops.KeytabFile) {
		fs = append(fs, r.Findings...)
	})
	kdcops.SortFindings(fs)
	ev := runbook.Evidence{
		"files": stats.Files, "keytabs": stats.Keytabs, "skipped": stats.Skipped,
		"special": stats.Special, "entries": stats.Entries, "dir_errors": stats.DirError,
	}
	metric := runbook.Metric{Name: "krbops_lint_keytabs_scanned", Help: "Keytabs found and linted under a --dir directory.",
		Labels: map[string]string{"dir": dir}, Value: float64(stats.Keytabs)}
	if err != nil {
		r := FromFindings(fs, "", ev)
		r.Status = runbook.Error
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
	return FromFindings(fs, msg, ev).WithMetrics(metric)
}

func (l Check) summary(_ context.Context, st *runbook.State) runbook.Result {
	all := st.Findings()
	count := map[string]int{}
	for _, f := range all {
		count[f.Rule]++
	}
	var metrics []runbook.Metric
	for _, r := range l.Lint.Rules.EnabledRules() {
		metrics = append(metrics, runbook.Metric{
			Name: "krbops_lint_findings", Help: "Findings of the last krbops klist-lint run, by rule and severity.",
			Labels: map[string]string{"rule": r.ID, "severity": string(r.Severity)}, Value: float64(count[r.ID]),
		})
	}
	c := runbook.CountFindings(all)
	ev := runbook.Evidence{"findings": c.Total(), "fail": c.Fail, "warn": c.Warn, "info": c.Info}
	var ids []string
	for id := range count {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	ev["rules"] = ids
	res := runbook.Result{Status: runbook.Pass, Evidence: ev, Metrics: metrics}
	switch {
	case c.Total() == 0:
		res.Message = "no findings"
	default:
		res.Message = fmt.Sprintf("%s: %d fail, %d warn, %d info (%s)", plural(c.Total(), "finding"), c.Fail, c.Warn, c.Info, strings.Join(ids, ", "))
	}
	switch {
	case c.Fail > 0:
		res.Status = runbook.Fail
		res.Hint = "fix the fail findings first; each carries its own hint (docs/lint-rules.md explains every rule)"
	case c.Warn > 0:
		res.Status = runbook.Warn
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
