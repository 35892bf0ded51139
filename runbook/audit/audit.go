package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/krbops/krbops/internal/readcap"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/kdcops/kdclog"
	"github.com/krbops/krbops/runbook"
)

// Step ids of the audit runbook, in order.
const (
	StepLogs      = "audit.logs"      // read and merge the KDC logs: AU010
	StepUsage     = "audit.usage"     // per principal: AU001-AU006
	StepKeytabs   = "audit.keytabs"   // --dir: the keytab inventory
	StepInventory = "audit.inventory" // keytabs against the logs: AU001, AU007-AU009
	StepSummary   = "audit.summary"   // findings by rule
)

// StepIDs lists the steps in order.
var StepIDs = []string{StepLogs, StepUsage, StepKeytabs, StepInventory, StepSummary}

// Check describes one audit run.
type Check struct {
	Logs      []string      // --kdc-log files, any format kdclog reads
	Dirs      []string      // --dir keytab trees; none: no inventory steps
	Since     time.Duration // unused for longer than this: AU001
	MaxAge    time.Duration // newest key older than this: AU009; 0 off
	MaxHosts  int           // more client addresses than this: AU005; 0 off
	Principal string        // path.Match pattern on principal names; "" all
	// Metrics adds per-principal gauges to the report (-o prometheus).
	// Off, a fleet of 100,000 principals saves half a million samples.
	Metrics bool
	Now     func() time.Time
}

// run is what the steps of one audit share; they run in order.
type run struct {
	usage   *kdclog.Usage
	stats   kdclog.Stats
	keytabs []keytabPrincipal
}

// keytabPrincipal is one principal of one keytab on disk.
type keytabPrincipal struct {
	Path      string
	Cluster   string // first directory below the --dir root, "" at the root
	Principal string
	KVNO      uint32    // newest kvno in the keytab
	Written   time.Time // timestamp of the newest kvno's entries
}

// Steps returns the audit runbook.
func (c Check) Steps() []runbook.Step {
	if c.Now == nil {
		c.Now = time.Now
	}
	r := &run{}
	steps := []runbook.Step{
		{ID: StepLogs, Title: "read and merge the KDC logs", Run: func(ctx context.Context, _ *runbook.State) runbook.Result { return c.readLogs(ctx, r) }},
		{ID: StepUsage, Title: "use per principal", Needs: []string{StepLogs}, Run: func(context.Context, *runbook.State) runbook.Result { return c.usage(r) }},
	}
	if len(c.Dirs) > 0 {
		steps = append(steps,
			runbook.Step{ID: StepKeytabs, Title: "keytabs on disk", Run: func(ctx context.Context, _ *runbook.State) runbook.Result { return c.inventory(ctx, r) }},
			runbook.Step{ID: StepInventory, Title: "keytabs against the logs", Needs: []string{StepLogs, StepKeytabs},
				Run: func(context.Context, *runbook.State) runbook.Result { return c.keytabRules(r) }},
		)
	}
	return append(steps, runbook.Step{ID: StepSummary, Title: "findings by rule", Run: c.summary})
}

// keep is the --principal filter.
func (c Check) keep(name string) bool {
	if c.Principal == "" {
		return true
	}
	ok, _ := path.Match(c.Principal, name)
	return ok
}

// ctxEvery is how many events pass between checks of the context.
const ctxEvery = 1 << 16

func (c Check) readLogs(ctx context.Context, r *run) runbook.Result {
	m, err := kdclog.OpenAll(c.Logs)
	if err != nil {
		return logError(err)
	}
	defer m.Close()
	r.usage = kdclog.NewUsage(c.keep)
	defer r.usage.Wait() // also on an error: it ends the shards' goroutines
	for n := 0; ; n++ {
		if n%ctxEvery == 0 && ctx.Err() != nil {
			return runbook.Errorf("interrupted while reading the logs: %v", ctx.Err())
		}
		ev, _, err := m.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return logError(err)
		}
		r.usage.Add(ev)
	}
	r.stats = m.Stats()
	st := r.stats
	var formats []string
	for _, rd := range m.Readers() {
		f := string(rd.Format())
		if f == "" {
			f = "empty"
		}
		formats = append(formats, rd.Path()+": "+f)
	}
	principals := len(r.usage.Sorted())
	ev := runbook.Evidence{"files": len(c.Logs), "formats": formats, "lines": st.Lines, "events": st.Events,
		"ignored": st.Ignored, "bad": st.Bad, "principals": principals}
	if st.First != 0 {
		ev["from"], ev["to"] = stamp(st.First), stamp(st.Last)
	}
	msg := fmt.Sprintf("%d lines in %d log(s): %d events, %d principals", st.Lines, len(c.Logs), st.Events, principals)
	if st.First != 0 {
		msg += fmt.Sprintf(", %s to %s", stamp(st.First), stamp(st.Last))
	}
	res := runbook.Passf("%s", msg).With(ev)
	if st.Events == 0 {
		res = runbook.Warnf("%s: no AS, TGS or key-change record", msg).With(ev).
			WithHint("pass the KDC's request log (MIT [logging] kdc = FILE:..., Heimdal's kdc log, a Samba AD DC's log with log level kerberos:3) or an AD 4768/4769 export")
	}
	if st.Bad > 0 {
		var samples []string
		for _, s := range st.Samples {
			samples = append(samples, fmt.Sprintf("%s:%d: %s", s.File, s.Line, s.Text))
		}
		res = res.WithFindings(finding("AU010", "", "", fmt.Sprintf("%d of %d lines not understood", st.Bad, st.Lines),
			runbook.Evidence{"bad": st.Bad, "lines": st.Lines, "samples": samples}))
	}
	return res
}

func logError(err error) runbook.Result {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return runbook.Usagef("--kdc-log %s: %s", pe.Path, describeFileErr(pe.Err)).
			WithHint("pass readable KDC log files (plain or .gz); a pipe or device is not read")
	}
	return runbook.Usagef("--kdc-log: %v", err).WithHint("a damaged .gz log can be left out, or repaired with gzip -dc FILE > FILE.txt")
}

func describeFileErr(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	return err.Error()
}

func stamp(unix int64) string { return time.Unix(unix, 0).UTC().Format(time.RFC3339) }

// stampIf sets ev[key] to the time t unless t is 0 (never).
func stampIf(ev runbook.Evidence, key string, t int64) {
	if t != 0 {
		ev[key] = stamp(t)
	}
}

// role is the role rotate should use, "" when the logs show no use.
func role(p *kdclog.Principal) string {
	client := p.AS > 0 || p.TGSAsked > 0
	switch {
	case client && p.Server():
		return "both"
	case client:
		return "client"
	case p.Server():
		return "server"
	}
	return ""
}

func (c Check) usage(r *run) runbook.Result {
	now := c.Now()
	var metrics []runbook.Metric
	ps := r.usage.Sorted()
	// One role finding per principal and a few others: one allocation.
	fs := make([]runbook.Finding, 0, len(ps)+len(ps)/8)
	for _, p := range ps {
		if c.Metrics {
			metrics = append(metrics, principalMetrics(p)...)
		}
		// Every principal has a role finding: its evidence is the little
		// rotate needs, so a fleet's report stays small. The other
		// findings, rare, carry everything the logs say.
		rl := role(p)
		short := make(runbook.Evidence, 5)
		short["role"], short["as"], short["tgs"] = rl, p.AS, p.TGS
		stampIf(short, "last_as", p.LastAS)
		stampIf(short, "last_tgs", p.LastTGS)
		switch rl {
		case "client":
			fs = append(fs, finding("AU002", "", p.Name, fmt.Sprintf("logs in (%d AS) and is never asked for as a service", p.AS), short))
		case "server":
			fs = append(fs, finding("AU003", "", p.Name, fmt.Sprintf("asked for as a service (%d TGS), never logs in", p.TGS), short))
		case "both":
			fs = append(fs, finding("AU004", "", p.Name, fmt.Sprintf("logs in (%d AS) and is asked for as a service (%d TGS)", p.AS, p.TGS), short))
		}
		var full runbook.Evidence
		ev := func() runbook.Evidence {
			if full == nil {
				full = principalEvidence(p)
			}
			return full
		}
		if last := p.LastUsed(); last > 0 && now.Sub(time.Unix(last, 0)) > c.Since {
			fs = append(fs, finding("AU001", "", p.Name, fmt.Sprintf("last used %s, more than --since %s ago", stamp(last), sinceText(c.Since)), ev()))
		}
		if c.MaxHosts > 0 && len(p.Addrs) > c.MaxHosts {
			n := fmt.Sprint(len(p.Addrs))
			if p.AddrsTruncated {
				n = "more than " + n
			}
			fs = append(fs, finding("AU005", "", p.Name, fmt.Sprintf("used from %s addresses, more than --max-hosts %d", n, c.MaxHosts), ev()))
		}
		if p.FailedSince > 0 {
			fs = append(fs, finding("AU006", "", p.Name, fmt.Sprintf("%d refused logins from %s after its key changed at %s",
				p.FailedSince, strings.Join(p.FailedSinceAddrs, ", "), stamp(p.LastKeyChange)), ev()))
		}
	}
	res := fromFindings(fs, fmt.Sprintf("%d principals", len(ps)))
	return res.With(runbook.Evidence{"principals": len(ps)}).WithMetrics(metrics...)
}

// principalEvidence is everything the logs say about p, for every finding
// about it.
func principalEvidence(p *kdclog.Principal) runbook.Evidence {
	ev := runbook.Evidence{"as": p.AS, "tgs": p.TGS, "tgs_asked": p.TGSAsked, "addresses": slices.Clone(p.Addrs),
		"addresses_truncated": p.AddrsTruncated, "role": role(p)}
	stampIf(ev, "first_as", p.FirstAS)
	stampIf(ev, "last_as", p.LastAS)
	stampIf(ev, "first_tgs", p.FirstTGS)
	stampIf(ev, "last_tgs", p.LastTGS)
	stampIf(ev, "last_tgs_asked", p.LastTGSAsked)
	stampIf(ev, "last_failure", p.LastFailure)
	stampIf(ev, "last_key_change", p.LastKeyChange)
	stampIf(ev, "failed_since_first", p.FailedSinceFirst)
	stampIf(ev, "failed_since_last", p.FailedSinceLast)
	if len(p.Failures) > 0 {
		var f []string
		for _, k := range sortedKeys(p.Failures) {
			f = append(f, fmt.Sprintf("%s=%d", k, p.Failures[k]))
		}
		ev["failures"] = f
	}
	if p.KeyChanges > 0 {
		ev["key_changes"] = p.KeyChanges
	}
	if p.FailedSince > 0 {
		ev["failed_since_key_change"] = p.FailedSince
		ev["failed_since_addresses"] = slices.Clone(p.FailedSinceAddrs)
	}
	return ev
}

func principalMetrics(p *kdclog.Principal) []runbook.Metric {
	l := map[string]string{"principal": p.Name}
	ms := []runbook.Metric{
		{Name: "krbops_audit_as_total", Help: "TGTs issued to the principal (AS exchanges) in the audited logs.", Labels: l, Value: float64(p.AS)},
		{Name: "krbops_audit_tgs_total", Help: "Service tickets issued for the principal (TGS exchanges) in the audited logs.", Labels: l, Value: float64(p.TGS)},
		{Name: "krbops_audit_client_addresses", Help: "Distinct addresses the principal was issued tickets from (at most 64 counted).", Labels: l, Value: float64(len(p.Addrs))},
		{Name: "krbops_audit_last_used_timestamp_seconds", Help: "Unix time of the principal's last ticket as client or service, 0 never.", Labels: l, Value: float64(p.LastUsed())},
	}
	for _, st := range sortedKeys(p.Failures) {
		ms = append(ms, runbook.Metric{Name: "krbops_audit_failures_total", Help: "Requests refused by the KDC, by principal and reason.",
			Labels: map[string]string{"principal": p.Name, "reason": st}, Value: float64(p.Failures[st])})
	}
	return ms
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// fromFindings makes a step's result: its status is the worst finding's
// severity (info counts as pass).
func fromFindings(fs []runbook.Finding, msg string) runbook.Result {
	res := runbook.Result{Status: runbook.Pass, Findings: fs}
	c := runbook.CountFindings(fs)
	switch {
	case c.Fail > 0:
		res.Status = runbook.Fail
	case c.Warn > 0:
		res.Status = runbook.Warn
	}
	res.Message = fmt.Sprintf("%s; %d fail, %d warn, %d info findings", msg, c.Fail, c.Warn, c.Info)
	if res.Status != runbook.Pass {
		res.Hint = "see the findings (-o json has their evidence; docs/audit-rules.md explains each rule)"
	}
	return res
}

// maxKeytab bounds a keytab read by the inventory (as klist-lint's).
const maxKeytab = 16 << 20

func (c Check) inventory(ctx context.Context, r *run) runbook.Result {
	var files, unreadable int
	var bad []string
	for _, root := range c.Dirs {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				if p == root {
					return err
				}
				unreadable++
				bad = appendCapped(bad, p+": "+describeFileErr(err))
				return nil
			}
			// Symlinks, FIFOs and devices are never opened: a link would
			// count a keytab twice or reach outside the tree.
			if !d.Type().IsRegular() {
				return nil
			}
			files++
			kt, isKeytab, err := readKeytab(p)
			switch {
			case !isKeytab:
			case err != nil:
				unreadable++
				bad = appendCapped(bad, p+": "+err.Error())
			default:
				r.keytabs = append(r.keytabs, summarize(p, cluster(root, p), kt, c.keep)...)
			}
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return runbook.Errorf("interrupted while reading keytabs: %v", ctx.Err())
			}
			return runbook.Usagef("--dir %s: %s", root, describeFileErr(err)).WithHint("pass an existing, readable directory")
		}
	}
	ev := runbook.Evidence{"dirs": c.Dirs, "files": files, "keytab_principals": len(r.keytabs), "unreadable": unreadable}
	if unreadable > 0 {
		ev["unreadable_samples"] = bad
		return runbook.Warnf("%d keytab principals in %d files; %d files could not be read", len(r.keytabs), files, unreadable).With(ev).
			WithHint("run krbops klist-lint --dir on the tree to see why (KT001)")
	}
	return runbook.Passf("%d keytab principals in %d files", len(r.keytabs), files).With(ev)
}

func appendCapped(list []string, s string) []string {
	if len(list) < kdclog.MaxSamples {
		list = append(list, s)
	}
	return list
}

// readKeytab reads p if it starts with a keytab header.
func readKeytab(p string) (_ *kdcops.Keytab, isKeytab bool, _ error) {
	f, _, err := readcap.Open(p, maxKeytab)
	if err != nil {
		if errors.Is(err, readcap.ErrTooLarge) {
			return nil, false, nil // no keytab is that large
		}
		return nil, true, errors.New(describeFileErr(err))
	}
	head := make([]byte, 2)
	n, _ := io.ReadFull(f, head)
	f.Close()
	if !kdcops.IsKeytabHeader(head[:n]) {
		return nil, false, nil
	}
	kt, err := kdcops.ReadKeytabFile(p, kdcops.KeytabOptions{})
	if err != nil {
		var fe *kdcops.FileError
		if errors.As(err, &fe) {
			return nil, true, fe.Err
		}
		return nil, true, err
	}
	return kt, true, nil
}

// cluster is the first directory below root on the way to p.
func cluster(root, p string) string {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return ""
	}
	first, _, found := strings.Cut(filepath.ToSlash(rel), "/")
	if !found {
		return ""
	}
	return first
}

// summarize gives each principal of kt its newest kvno and that kvno's
// timestamp.
func summarize(p, cl string, kt *kdcops.Keytab, keep func(string) bool) []keytabPrincipal {
	var out []keytabPrincipal
	for _, name := range kt.Principals() {
		if !keep(name) {
			continue
		}
		k := keytabPrincipal{Path: p, Cluster: cl, Principal: name}
		for _, e := range kt.EntriesFor(name) {
			if e.KVNO > k.KVNO || (e.KVNO == k.KVNO && e.Timestamp.After(k.Written)) {
				k.KVNO, k.Written = e.KVNO, e.Timestamp
			}
		}
		out = append(out, k)
	}
	return out
}

func (c Check) keytabRules(r *run) runbook.Result {
	now := c.Now()
	covers := r.stats.First != 0 && now.Sub(time.Unix(r.stats.First, 0)) >= c.Since
	var fs []runbook.Finding
	var metrics []runbook.Metric
	for _, k := range r.keytabs {
		p := r.usage.Principals[k.Principal]
		ev := runbook.Evidence{"keytab": k.Path, "kvno": k.KVNO, "written": k.Written.UTC().Format(time.RFC3339), "cluster": k.Cluster}
		if p != nil {
			for key, v := range principalEvidence(p) {
				ev[key] = v
			}
		} else {
			ev["role"] = ""
		}
		if r.stats.First != 0 {
			ev["logs_from"], ev["logs_to"] = stamp(r.stats.First), stamp(r.stats.Last)
		}
		metrics = append(metrics, runbook.Metric{Name: "krbops_audit_keytab_written_timestamp_seconds",
			Help:   "Unix time the newest kvno of a principal was written to a keytab.",
			Labels: map[string]string{"principal": k.Principal, "keytab": k.Path}, Value: float64(k.Written.Unix())})
		if p == nil {
			fs = append(fs, finding("AU007", k.Path, k.Principal, fmt.Sprintf("keytab holds kvno %d but no KDC log line names the principal", k.KVNO), ev))
			if covers {
				fs = append(fs, finding("AU001", k.Path, k.Principal, fmt.Sprintf("never used in logs covering more than --since %s", sinceText(c.Since)), ev))
			}
		} else if p.LastKeyChange > k.Written.Unix() {
			fs = append(fs, finding("AU008", k.Path, k.Principal, fmt.Sprintf("keytab (kvno %d, written %s) predates the key change at %s",
				k.KVNO, k.Written.UTC().Format(time.RFC3339), stamp(p.LastKeyChange)), ev))
		}
		if age := now.Sub(k.Written); c.MaxAge > 0 && age > c.MaxAge {
			ev := maps.Clone(ev)
			ev["age"] = age.Round(time.Second).String()
			fs = append(fs, finding("AU009", k.Path, k.Principal, fmt.Sprintf("newest key (kvno %d) is %s old, more than --max-age %s",
				k.KVNO, roundAge(age), sinceText(c.MaxAge)), ev))
		}
	}
	return fromFindings(fs, fmt.Sprintf("%d keytab principals", len(r.keytabs))).WithMetrics(metrics...)
}

// sinceText shows a policy duration as the flag takes it: 90d, 36h0m0s.
func sinceText(d time.Duration) string {
	if d != 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func roundAge(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
	return d.Round(time.Second).String()
}

func (c Check) summary(_ context.Context, st *runbook.State) runbook.Result {
	all := st.Findings()
	count := map[string]int{}
	for _, f := range all {
		count[f.Rule]++
	}
	var metrics []runbook.Metric
	for _, r := range Rules {
		metrics = append(metrics, runbook.Metric{Name: "krbops_audit_findings", Help: "Findings of the last krbops audit run, by rule and severity.",
			Labels: map[string]string{"rule": r.ID, "severity": string(r.Severity)}, Value: float64(count[r.ID])})
	}
	ids := make([]string, 0, len(count))
	for id := range count {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var byRule []string
	for _, id := range ids {
		byRule = append(byRule, fmt.Sprintf("%s=%d", id, count[id]))
	}
	n := runbook.CountFindings(all)
	res := runbook.Result{Status: runbook.Pass, Metrics: metrics,
		Evidence: runbook.Evidence{"findings": n.Total(), "fail": n.Fail, "warn": n.Warn, "info": n.Info, "by_rule": byRule}}
	res.Message = fmt.Sprintf("%d findings: %d fail, %d warn, %d info", n.Total(), n.Fail, n.Warn, n.Info)
	if len(ids) > 0 {
		res.Message += " (" + strings.Join(ids, ", ") + ")"
	}
	return res
}
