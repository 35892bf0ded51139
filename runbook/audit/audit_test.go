package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/runbook"
)

// docs/audit-rules.md explains every rule, with the severity the code
// gives it and what to do.
func TestDocsExplainEveryRule(t *testing.T) {
	doc, err := os.ReadFile("../../docs/audit-rules.md")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]string{}
	for _, s := range strings.Split(string(doc), "\n#### ")[1:] {
		id, _, _ := strings.Cut(s, " ")
		found[id] = s
	}
	for _, r := range Rules {
		s, ok := found[r.ID]
		if !ok {
			t.Errorf("docs/audit-rules.md has no section for %s", r.ID)
			continue
		}
		heading, body, _ := strings.Cut(s, "\n")
		if !strings.HasSuffix(heading, "("+string(r.Severity)+")") || !strings.Contains(heading, r.Title) {
			t.Errorf("%s: heading %q, want %q (%s)", r.ID, heading, r.Title, r.Severity)
		}
		if !strings.Contains(body, "**Do:**") {
			t.Errorf("%s: section does not say what to do", r.ID)
		}
	}
	if len(found) != len(Rules) {
		t.Errorf("docs have %d rule sections, the catalogue %d rules", len(found), len(Rules))
	}
}

func kdcLine(t time.Time, req, addr, status, client, service string) string {
	rest := client + " for " + service
	if status == "ISSUE" {
		rest = fmt.Sprintf("authtime %d, etypes {rep=18}, %s", t.Unix(), rest)
	}
	return fmt.Sprintf("%s kdc krb5kdc[1](info): %s (1 etypes {x(18)}) %s: %s: %s\n", t.Format("Jan 02 15:04:05"), req, addr, status, rest)
}

// --principal keeps the others out of every finding; an unused
// principal is AU001 with its last use; a missing log is a usage error.
func TestCheckFilterUnusedAndMissingLog(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.Local)
	old := now.Add(-100 * 24 * time.Hour)
	logs := kdcLine(old, "AS_REQ", "10.0.0.1", "ISSUE", "host/a@R", "krbtgt/R@R") +
		kdcLine(now.Add(-time.Hour), "AS_REQ", "10.0.0.2", "ISSUE", "host/b@R", "krbtgt/R@R") +
		kdcLine(now.Add(-time.Hour), "AS_REQ", "10.0.0.3", "ISSUE", "user@R", "krbtgt/R@R")
	p := filepath.Join(t.TempDir(), "kdc.log")
	if err := os.WriteFile(p, []byte(logs), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, now, now)
	c := Check{Logs: []string{p}, Since: 90 * 24 * time.Hour, Principal: "host/*", Now: func() time.Time { return now }}
	rep := runbook.Run(context.Background(), runbook.Runbook{Command: "audit", Steps: c.Steps()}, runbook.Options{})
	var got []string
	for _, f := range rep.Findings {
		got = append(got, f.Rule+" "+f.Principal)
	}
	if want := "AU002 host/a@R AU001 host/a@R AU002 host/b@R"; strings.Join(got, " ") != want {
		t.Fatalf("findings %q, want %q", strings.Join(got, " "), want)
	}
	if last := rep.Findings[1].Evidence["last_as"]; last != old.UTC().Format(time.RFC3339) {
		t.Errorf("AU001 last_as %v", last)
	}

	c.Logs = []string{filepath.Join(t.TempDir(), "missing.log")}
	rep = runbook.Run(context.Background(), runbook.Runbook{Command: "audit", Steps: c.Steps()}, runbook.Options{})
	if rep.Steps[0].Status != runbook.Error || rep.Class != fault.Usage || !strings.Contains(rep.Steps[0].Message, "no such file") {
		t.Fatalf("missing log: %s %s", rep.Steps[0].Status, rep.Steps[0].Message)
	}
	if rep.Steps[1].Status != runbook.Skip {
		t.Errorf("audit.usage ran without logs: %s", rep.Steps[1].Status)
	}
}
