package keytabpull

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
)

// Step ids of the prune runbook, in order.
const (
	StepPruneKeytab = "prune.keytab"
	StepPruneGuard  = "prune.guard"
	StepPruneWrite  = "prune.write"
)

// Selection says which kvnos go. Keep and OlderThan combine: a kvno goes
// only when both select it. KVNO names one kvno and excludes the others.
type Selection struct {
	// Keep keeps each principal's Keep newest kvnos (k5srvutil delold is
	// Keep 1); 0: not used.
	Keep int
	// OlderThan removes the kvnos below a principal's newest once the
	// newest has been in the keytab longer than this (its entry's
	// timestamp): Heimdal's ktutil purge --age. 0: not used.
	OlderThan time.Duration
	// KVNO, when HasKVNO, removes that kvno (MIT ktutil/kadmin ktremove
	// PRINCIPAL KVNO).
	KVNO    uint32
	HasKVNO bool
	// Principal limits the prune to one principal (name@REALM, or a name
	// matching any realm); else every principal of the keytab.
	Principal string
}

// Removal is one principal's kvno that a prune removes.
type Removal struct {
	Principal string
	KVNO      uint32
	Keys      int // entries (enctypes) of that kvno
}

func (r Removal) String() string {
	return fmt.Sprintf("%s kvno %d (%d keys)", r.Principal, r.KVNO, r.Keys)
}

// Plan lists the kvnos sel removes from entries, by principal then kvno.
// now is the time --older-than counts back from.
func Plan(entries []kdcops.KeytabEntry, sel Selection, now time.Time) []Removal {
	var out []Removal
	kt := kdcops.Keytab{Entries: entries}
	for _, pr := range kt.Principals() {
		mine := kt.EntriesFor(pr)
		if sel.Principal != "" && !kdcops.MatchPrincipal(mine[0], sel.Principal) {
			continue
		}
		kvnos := kdcops.KVNOs(mine)
		newest := kvnos[len(kvnos)-1]
		newestAt := newestTimestamp(kdcops.AtKVNO(mine, newest))
		for i, k := range kvnos {
			if !selected(sel, k, newest, len(kvnos)-i, now.Sub(newestAt)) {
				continue
			}
			out = append(out, Removal{Principal: pr, KVNO: k, Keys: len(kdcops.AtKVNO(mine, k))})
		}
	}
	return out
}

// selected decides one kvno; rank is 1 for the newest kvno, 2 for the one
// before, and superseded how long the newest kvno has been in the keytab.
func selected(sel Selection, kvno, newest uint32, rank int, superseded time.Duration) bool {
	if sel.HasKVNO {
		return kvno == sel.KVNO
	}
	if sel.Keep > 0 && rank <= sel.Keep {
		return false
	}
	if sel.OlderThan > 0 && (kvno == newest || superseded <= sel.OlderThan) {
		return false
	}
	return sel.Keep > 0 || sel.OlderThan > 0
}

func newestTimestamp(entries []kdcops.KeytabEntry) time.Time {
	var t time.Time
	for _, e := range entries {
		if e.Timestamp.After(t) {
			t = e.Timestamp
		}
	}
	return t
}

// Prune removes old kvnos from a keytab file.
type Prune struct {
	Keytab    string
	Selection Selection
	// Offline protects each principal's newest kvno in the file instead
	// of asking the KDC which kvno is current.
	Offline bool
	DryRun  bool
	NewKDC  func() KDC
	Now     func() time.Time
	Log     *slog.Logger
	// LockWait bounds the wait for another krbops rewriting the keytab
	// (0: [durable.DefaultLockWait]).
	LockWait time.Duration

	guard   guard
	attrs   durable.Attrs
	entries []kdcops.KeytabEntry
	plan    []Removal
}

// Runbook returns the prune checklist.
func (p *Prune) Runbook() runbook.Runbook {
	return runbook.Runbook{Command: "keytab prune", Steps: []runbook.Step{
		{ID: StepPruneKeytab, Title: "the keytab is readable and replaceable; kvnos to remove", Run: p.stepKeytab},
		{ID: StepPruneGuard, Title: "the KDC's current kvno (--offline: the newest) is kept", Needs: []string{StepPruneKeytab}, Run: p.stepGuard},
		{ID: StepPruneWrite, Title: "rewritten atomically, owner, group and mode kept", Needs: []string{StepPruneGuard}, Run: p.stepWrite},
	}}
}

// Removed is the plan the run made (what went, or with DryRun what would).
func (p *Prune) Removed() []Removal { return p.plan }

// Run runs the prune checklist and releases the keytab's lock, however
// the run ends.
func (p *Prune) Run(ctx context.Context, opts runbook.Options) *runbook.Report {
	defer p.guard.release()
	return runbook.Run(ctx, p.Runbook(), opts)
}

func (p *Prune) stepKeytab(ctx context.Context, _ *runbook.State) runbook.Result {
	f, res, ok := openKeytab(ctx, p.Keytab, "prune", false, !p.DryRun, p.LockWait)
	if !ok {
		return res
	}
	p.guard = f.guard
	ev := res.Evidence
	kt := kdcops.Keytab{Entries: f.entries}
	p.attrs, p.entries = f.attrs, f.entries
	p.plan = Plan(kt.Entries, p.Selection, p.now())
	ev["remove"] = describeRemovals(p.plan)
	if sel := p.Selection.Principal; sel != "" && len(selectPrincipal(kt.Entries, sel)) == 0 {
		return runbook.Usagef("--keytab %s holds no key for --principal %s", p.Keytab, sel).With(ev).WithHint("krbops klist-lint --keytab lists its principals")
	}
	if p.Selection.HasKVNO && len(p.plan) == 0 {
		return runbook.Usagef("--keytab %s holds no kvno %d", p.Keytab, p.Selection.KVNO).With(ev).
			WithHint("pick a kvno the file holds (krbops klist-lint --keytab lists them)")
	}
	if len(p.plan) == 0 {
		return runbook.Passf("%s: nothing to remove (kvno %v)", p.Keytab, kdcops.KVNOs(kt.Entries)).With(ev)
	}
	return runbook.Passf("%s: %d kvno(s) selected: %s", p.Keytab, len(p.plan), strings.Join(describeRemovals(p.plan), ", ")).With(ev)
}

func (p *Prune) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// stepGuard refuses a plan that removes the kvno services need: the one
// the KDC issues tickets under (asked with an AS exchange from the file's
// own keys), or with --offline the file's newest. Every principal keeps
// at least one kvno.
func (p *Prune) stepGuard(ctx context.Context, _ *runbook.State) runbook.Result {
	if len(p.plan) == 0 {
		return runbook.Result{Status: runbook.Skip, Message: "nothing to remove"}
	}
	kt := kdcops.Keytab{Entries: p.entries}
	var kept []string
	var kdc KDC
	for _, pr := range planPrincipals(p.plan) {
		mine := kt.EntriesFor(pr)
		kvnos := kdcops.KVNOs(mine)
		gone := removedKVNOs(p.plan, pr)
		ev := runbook.Evidence{"principal": pr, "kvnos": kvnos, "remove": gone}
		if len(gone) == len(kvnos) {
			return runbook.Failf("refused: removing kvno %v would leave %s with no key in %s", gone, pr, p.Keytab).With(ev).
				WithHint("keep at least one kvno; to drop the principal's keys altogether use ktutil or kadmin ktremove")
		}
		var protect uint32
		source := "the file's newest kvno (--offline)"
		if p.Offline {
			protect = kvnos[len(kvnos)-1]
		} else {
			if kdc == nil {
				kdc = p.NewKDC()
			}
			sess, attempts, err := kdc.LoginPerKVNO(ctx, mine)
			if err != nil {
				return kdcResult(ctx, err, pr).With(ev).WithHint("the KDC's current kvno of %s is unknown, so nothing was removed; with --offline krbops keeps the file's newest kvno instead", pr)
			}
			ev["attempts"] = kdcops.DescribeAttempts(attempts)
			if sess == nil {
				return runbook.Failf("refused: the KDC accepts none of kvno %v of %s, so its current kvno is unknown", kvnos, pr).With(ev).
					WithHint("the keytab is stale: install the current one (krbops keytab pull) before pruning, or pass --offline to keep the file's newest kvno")
			}
			protect, source = sess.KVNO, "the KDC's current kvno"
		}
		ev["protected_kvno"] = protect
		for _, k := range gone {
			if k == protect {
				return runbook.Failf("refused: kvno %d of %s is %s; removing it would break the service", k, pr, source).With(ev).
					WithHint("keep kvno %d: prune only older kvnos (--keep 1 keeps the newest), or rotate first", k)
			}
		}
		kept = append(kept, fmt.Sprintf("%s kvno %d (%s)", pr, protect, source))
	}
	return runbook.Passf("kept: %s", strings.Join(kept, ", "))
}

func (p *Prune) stepWrite(context.Context, *runbook.State) runbook.Result {
	ev := runbook.Evidence{"keytab": p.Keytab, "remove": describeRemovals(p.plan), "mode": fmt.Sprintf("%04o", p.attrs.Mode)}
	if len(p.plan) == 0 {
		return runbook.Result{Status: runbook.Skip, Message: "nothing to remove"}.With(ev)
	}
	if p.DryRun {
		return runbook.Passf("dry run: would remove %s", strings.Join(describeRemovals(p.plan), ", ")).With(ev)
	}
	var keep []kdcops.KeytabEntry
	for _, e := range p.entries {
		if !planned(p.plan, e) {
			keep = append(keep, e)
		}
	}
	data, err := kdcops.MarshalKeytab(keep)
	if err != nil {
		return runbook.Errorf("%s", err)
	}
	if err := p.guard.unchanged(); err != nil {
		return changedResult(p.Keytab, err, ev)
	}
	if err := durable.WriteFileAs(p.Keytab, data, p.attrs, nil); err != nil {
		return runbook.Usagef("write %s: %s", p.Keytab, describe(err)).With(ev).
			WithHint("fix the directory (space, permissions); the file is unchanged")
	}
	p.guard.release()
	if p.Log != nil {
		p.Log.Info("keytab pruned", "keytab", p.Keytab, "removed", describeRemovals(p.plan), "kept_kvnos", kdcops.KVNOs(keep))
	}
	return runbook.Passf("removed %s; %s keeps kvno %v, mode %04o", strings.Join(describeRemovals(p.plan), ", "), p.Keytab, kdcops.KVNOs(keep), p.attrs.Mode).With(ev)
}

func planned(plan []Removal, e kdcops.KeytabEntry) bool {
	for _, r := range plan {
		if r.Principal == e.Principal && r.KVNO == e.KVNO {
			return true
		}
	}
	return false
}

func removedKVNOs(plan []Removal, principal string) []uint32 {
	var out []uint32
	for _, r := range plan {
		if r.Principal == principal {
			out = append(out, r.KVNO)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// planPrincipals lists the plan's principals in order.
func planPrincipals(plan []Removal) []string {
	var out []string
	for _, r := range plan {
		if !slices.Contains(out, r.Principal) {
			out = append(out, r.Principal)
		}
	}
	return out
}

func describeRemovals(plan []Removal) []string {
	out := make([]string, len(plan))
	for i, r := range plan {
		out[i] = r.String()
	}
	return out
}
