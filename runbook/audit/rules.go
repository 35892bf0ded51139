// Package audit is the audit runbook: who really uses each principal,
// from KDC logs (kdcops/kdclog) and keytab inventories. Start with
// [Check.Steps]; the rules are in [Rules] and docs/audit-rules.md.
package audit

import (
	"github.com/krbops/krbops/runbook"
)

// Rule is one audit rule. The ids are a contract: never renumber, never
// reuse a retired id.
type Rule struct {
	ID       string
	Severity runbook.Severity
	Title    string
	Hint     string
}

// Rules is the catalogue, in id order.
var Rules = []Rule{
	{"AU001", runbook.SeverityWarn, "unused for longer than --since (deletion candidate)",
		"confirm with the owner, disable the principal (kadmin modprinc -allow_tix), wait a cycle, then delete it"},
	{"AU002", runbook.SeverityInfo, "role client: logs in, never asked for as a service",
		"rotate it as a client (rotate --role client): time the change to its next login"},
	{"AU003", runbook.SeverityInfo, "role server: asked for as a service, never logs in",
		"rotate it as a server (rotate --role server): two phases, old and new kvno in the keytab"},
	{"AU004", runbook.SeverityInfo, "role both: logs in and is asked for as a service",
		"rotate it as both (rotate --role both)"},
	{"AU005", runbook.SeverityWarn, "used from more than --max-hosts addresses (shared principal)",
		"give each host its own principal (host/NAME@REALM): one shared key widens every outage and rotation"},
	{"AU006", runbook.SeverityFail, "refused logins after its key changed (hosts that missed the rotation)",
		"push the new keytab to the addresses in the evidence, or roll the change back there"},
	{"AU007", runbook.SeverityWarn, "keytab on disk for a principal the KDC never saw",
		"find who installed the keytab; if nothing uses it, remove it (and the principal if it exists)"},
	{"AU008", runbook.SeverityFail, "keytab older than the principal's last key change (its kvno is no longer the KDC's)",
		"re-export the principal's current keys into this keytab (or deploy the keytab of the last rotation)"},
	{"AU009", runbook.SeverityWarn, "keytab's newest key older than --max-age (rotation due)",
		"rotate the principal (krbops rotate); -o json lists these for a rotate --targets file (docs/audit.md)"},
	{"AU010", runbook.SeverityInfo, "log lines not understood (counted and sampled)",
		"check that every --kdc-log is a KDC log (MIT, Heimdal) or an AD 4768/4769 export; the samples show what was skipped"},
}

// RuleIDs lists the rule ids in catalogue order.
func RuleIDs() []string {
	ids := make([]string, len(Rules))
	for i, r := range Rules {
		ids[i] = r.ID
	}
	return ids
}

func rule(id string) Rule {
	for _, r := range Rules {
		if r.ID == id {
			return r
		}
	}
	panic("audit: unknown rule " + id)
}

// finding builds a finding of rule id with the rule's severity and hint.
func finding(id, file, principal, msg string, ev runbook.Evidence) runbook.Finding {
	r := rule(id)
	return runbook.Finding{Rule: r.ID, Severity: r.Severity, File: file, Principal: principal, Message: msg, Hint: r.Hint, Evidence: ev}
}
