package output

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/runbook"
)

// lintFixtureReport is a klist-lint report with findings of every
// severity (one with characters that break naive formats), a repeated
// file+rule pair, and metrics including a label value that needs escaping.
func lintFixtureReport() *runbook.Report {
	started := time.Date(2025, 3, 4, 4, 6, 7, 0, time.UTC)
	return &runbook.Report{
		Schema:        runbook.Schema,
		Command:       "klist-lint",
		CorrelationID: "lint-5678",
		StartedAt:     started,
		Duration:      42 * time.Millisecond,
		Steps: []runbook.StepResult{
			{
				ID: "keytab.read", Title: "read keytab", Group: "/etc/krb5.keytab",
				Result: runbook.Result{
					Status:   runbook.Fail,
					Message:  "version 2 keytab, 9 entries for 1 principals; KT002: keytab mode 0640 gives access to its group",
					Hint:     "chmod 600 /etc/krb5.keytab",
					Evidence: runbook.Evidence{"entries": 9, "version": 2},
				},
				Duration: 2 * time.Millisecond,
			},
			{
				ID: "lint.summary", Title: "findings by rule",
				Result: runbook.Result{
					Status:   runbook.Fail,
					Message:  "4 findings: 1 fail, 2 warn, 1 info (CC007, KT002, KT006, KT009)",
					Hint:     "fix the fail findings first",
					Evidence: runbook.Evidence{"findings": 4},
				},
			},
		},
		Summary: runbook.Summary{Fail: 2},
		Findings: []runbook.Finding{
			{
				Rule: "KT002", Severity: runbook.SeverityFail, File: "/etc/krb5.keytab",
				Message: "keytab mode 0640 gives access to its group", Hint: "chmod 600 /etc/krb5.keytab",
				Evidence: runbook.Evidence{"mode": "0640"},
			},
			{
				Rule: "KT006", Severity: runbook.SeverityWarn, File: "/etc/krb5.keytab", Principal: "host/web1.example.com@EXAMPLE.COM",
				Message: "weak enctype arcfour-hmac at kvno 1, 2, 3", Hint: "remove the weak keys | then <reload> & `restart`",
				Evidence: runbook.Evidence{"enctypes": []string{"arcfour-hmac"}, "kvnos": []uint32{1, 2, 3}},
			},
			{
				Rule: "KT006", Severity: runbook.SeverityWarn, File: "/etc/krb5.keytab", Principal: "host/web1.example.com@EXAMPLE.COM",
				Message: "weak enctype des3-cbc-sha1\tat kvno 2\x1b[31m", Hint: "",
				Evidence: runbook.Evidence{},
			},
			{
				Rule: "CC007", Severity: runbook.SeverityInfo, File: "/tmp/krb5cc_0", Principal: "alice@EXAMPLE.COM",
				Message: "TGT is not renewable; it ends at 2025-03-04T14:06:07Z", Hint: "kinit -r 7d",
				Evidence: runbook.Evidence{"expires_at": time.Date(2025, 3, 4, 14, 6, 7, 0, time.UTC)},
			},
		},
		Metrics: []runbook.Metric{
			{Name: "krb5_keytab_kvno", Help: "Newest key version number.", Labels: map[string]string{"keytab": "/etc/krb5.keytab", "principal": "host/web1.example.com@EXAMPLE.COM"}, Value: 3},
			{Name: "krb5_keytab_kvno", Help: "Newest key version number.", Labels: map[string]string{"keytab": "/srv/a \"quoted\"\\path\n", "principal": "svc@EXAMPLE.COM"}, Value: 258},
			{Name: "krb5_keytab_kvno", Help: "Newest key version number.", Labels: map[string]string{"keytab": "/etc/krb5.keytab", "principal": "host/web1.example.com@EXAMPLE.COM"}, Value: 99},
			{Name: "krb5_ticket_expiry_seconds", Help: "Unix time the TGT expires.", Labels: map[string]string{"ccache": "/tmp/krb5cc_0", "principal": "alice@EXAMPLE.COM", "server": "krbtgt/EXAMPLE.COM@EXAMPLE.COM"}, Value: 1741097167},
			{Name: "krbops_lint_findings", Help: "Findings by rule\nand severity.", Labels: map[string]string{"rule": "KT002", "severity": "fail"}, Value: 1},
			{Name: "krbops_lint_findings", Help: "Findings by rule\nand severity.", Labels: map[string]string{"rule": "KT013", "severity": "warn"}, Value: 0},
		},
		Status:   "fail",
		ExitCode: 1,
	}
}

func TestJSONFindings(t *testing.T) {
	var doc struct {
		Findings []struct {
			Rule      string         `json:"rule"`
			Severity  string         `json:"severity"`
			File      string         `json:"file"`
			Principal *string        `json:"principal"`
			Message   string         `json:"message"`
			Hint      *string        `json:"hint"`
			Evidence  map[string]any `json:"evidence"`
		} `json:"findings"`
	}
	if err := json.Unmarshal(render(t, "json", lintFixtureReport(), Options{}), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Findings) != 4 {
		t.Fatalf("%d findings, want 4", len(doc.Findings))
	}
	f := doc.Findings[1]
	if f.Rule != "KT006" || f.Severity != "warn" || f.Principal == nil || *f.Principal != "host/web1.example.com@EXAMPLE.COM" {
		t.Errorf("finding 1 = %+v", f)
	}
	if kv, _ := f.Evidence["kvnos"].([]any); len(kv) != 3 || kv[2] != 3.0 {
		t.Errorf("kvnos evidence = %v", f.Evidence["kvnos"])
	}
	// Every key is present even when empty, so jq paths never vanish.
	if p := doc.Findings[0].Principal; p == nil || *p != "" {
		t.Errorf("file-level finding principal = %v, want \"\"", p)
	}
	if doc.Findings[2].Hint == nil || doc.Findings[2].Evidence == nil {
		t.Error("empty hint or evidence is missing instead of \"\" / {}")
	}
	if doc.Findings[3].Evidence["expires_at"] != "2025-03-04T14:06:07Z" {
		t.Errorf("time evidence = %v", doc.Findings[3].Evidence["expires_at"])
	}
}

func TestJSONFindingsEmptyIsArray(t *testing.T) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(render(t, "json", fixtureReport(), Options{}), &doc); err != nil {
		t.Fatal(err)
	}
	if string(doc["findings"]) != "[]" {
		t.Errorf("findings = %s, want []", doc["findings"])
	}
}

func TestPlainFindingLines(t *testing.T) {
	out := render(t, "plain", lintFixtureReport(), Options{})
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != 2+4+1 {
		t.Fatalf("%d lines, want 2 steps + 4 findings + summary:\n%s", len(lines), out)
	}
	for i, line := range lines {
		if n := len(strings.Split(line, "\t")); n != 6 {
			t.Errorf("line %d has %d fields: %q", i+1, n, line)
		}
	}
	f := strings.Split(lines[3], "\t")
	want := []string{"/etc/krb5.keytab", "finding", "warn", "KT006", "host/web1.example.com@EXAMPLE.COM: weak enctype arcfour-hmac at kvno 1, 2, 3"}
	for i, w := range want {
		if f[i] != w {
			t.Errorf("finding line field %d = %q, want %q", i+1, f[i], w)
		}
	}
	if strings.Contains(lines[4], "\x1b") || !strings.Contains(lines[4], "des3-cbc-sha1 at kvno 2") {
		t.Errorf("control characters not neutralised: %q", lines[4])
	}
	if !strings.Contains(lines[6], "findings=4 findings_fail=1 findings_warn=2 findings_info=1") {
		t.Errorf("summary line lacks finding counts: %q", lines[6])
	}
	// A report without findings keeps the summary line it always had.
	if bytes.Contains(render(t, "plain", fixtureReport(), Options{}), []byte("findings=")) {
		t.Error("summary of a report without findings mentions findings")
	}
}

type junitDoc struct {
	Tests    int `xml:"tests,attr"`
	Failures int `xml:"failures,attr"`
	Suites   []struct {
		Name     string `xml:"name,attr"`
		Tests    int    `xml:"tests,attr"`
		Failures int    `xml:"failures,attr"`
		Cases    []struct {
			Name      string    `xml:"name,attr"`
			Classname string    `xml:"classname,attr"`
			Failure   *struct{} `xml:"failure"`
			SystemOut string    `xml:"system-out"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func TestJUnitFindings(t *testing.T) {
	var doc junitDoc
	parse := func(rep *runbook.Report) {
		t.Helper()
		doc = junitDoc{} // Unmarshal appends to slices
		if err := xml.Unmarshal(render(t, "junit", rep, Options{}), &doc); err != nil {
			t.Fatal(err)
		}
	}
	parse(lintFixtureReport())
	if len(doc.Suites) != 2 || doc.Suites[1].Name != "krbops.klist-lint.findings" {
		t.Fatalf("suites = %+v", doc.Suites)
	}
	fs := doc.Suites[1]
	if fs.Tests != 4 || fs.Failures != 1 || doc.Tests != 6 || doc.Failures != 3 {
		t.Errorf("findings suite tests/failures = %d/%d, total %d/%d; want 4/1, 6/3", fs.Tests, fs.Failures, doc.Tests, doc.Failures)
	}
	pairs := map[string]bool{}
	for _, c := range fs.Cases {
		key := c.Classname + "|" + c.Name
		if pairs[key] {
			t.Errorf("duplicate classname+name %q (GitLab would drop it)", key)
		}
		pairs[key] = true
	}
	if c := fs.Cases[2]; c.Classname != "krbops.klist-lint.KT006" || !strings.HasSuffix(c.Name, " #2") || c.Failure != nil || !strings.HasPrefix(c.SystemOut, "WARN: ") {
		t.Errorf("second KT006 case = %+v", c)
	}
	if !strings.HasPrefix(fs.Cases[3].SystemOut, "INFO: ") {
		t.Errorf("info case system-out = %q", fs.Cases[3].SystemOut)
	}
	rep := lintFixtureReport()
	rep.Strict = true
	parse(rep)
	if doc.Suites[1].Failures != 3 {
		t.Errorf("strict: findings failures = %d, want 3 (fail + 2 warn)", doc.Suites[1].Failures)
	}
}

func TestMarkdownFindings(t *testing.T) {
	out := string(render(t, "markdown", lintFixtureReport(), Options{}))
	for _, want := range []string{
		"#### Findings",
		"- [ ] **KT002** FAIL `/etc/krb5.keytab` — keytab mode 0640 gives access to its group (`mode=0640`)",
		"  - hint: remove the weak keys \\| then \\<reload> & \\`restart\\`",
		"4 findings (1 fail, 2 warn, 1 info)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

func TestTableFindings(t *testing.T) {
	out := string(render(t, "table", lintFixtureReport(), Options{}))
	for _, want := range []string{"SEVERITY", "KT002", "host/web1.example.com@EXAMPLE.COM: weak enctype", "hint: chmod 600 /etc/krb5.keytab", "4 findings (1 fail, 2 warn, 1 info)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestPrometheus(t *testing.T) {
	out := string(render(t, "prometheus", lintFixtureReport(), Options{}))
	for _, want := range []string{
		"# HELP krbops_run_exit_code ",
		"# TYPE krbops_run_exit_code gauge\nkrbops_run_exit_code{command=\"klist-lint\"} 1\n",
		"krbops_run_timestamp_seconds{command=\"klist-lint\"} 1741061167\n",
		`krb5_keytab_kvno{keytab="/srv/a \"quoted\"\\path ",principal="svc@EXAMPLE.COM"} 258`,
		"krb5_ticket_expiry_seconds{ccache=\"/tmp/krb5cc_0\",principal=\"alice@EXAMPLE.COM\",server=\"krbtgt/EXAMPLE.COM@EXAMPLE.COM\"} 1741097167\n",
		"# HELP krbops_lint_findings Findings by rule and severity.\n",
		"krbops_lint_findings{rule=\"KT013\",severity=\"warn\"} 0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("prometheus output lacks %q:\n%s", want, out)
		}
	}
	// The repeated series keeps its first value only.
	if strings.Count(out, `krb5_keytab_kvno{keytab="/etc/krb5.keytab",principal="host/web1.example.com@EXAMPLE.COM"}`) != 1 || strings.Contains(out, " 99\n") {
		t.Errorf("duplicate series not dropped:\n%s", out)
	}
	// Each family's HELP and TYPE appear once, before its samples.
	for _, fam := range []string{"krb5_keytab_kvno", "krbops_lint_findings"} {
		if strings.Count(out, "# TYPE "+fam+" gauge") != 1 {
			t.Errorf("family %s has %d TYPE lines", fam, strings.Count(out, "# TYPE "+fam+" gauge"))
		}
	}
}

func TestPrometheusRejectsBadNames(t *testing.T) {
	r, _ := Get("prometheus")
	for _, m := range []runbook.Metric{
		{Name: "bad-name", Value: 1},
		{Name: "ok", Labels: map[string]string{"bad label": "x"}, Value: 1},
		{Name: "ok", Labels: map[string]string{"__reserved": "x"}, Value: 1},
	} {
		rep := &runbook.Report{Command: "x", Metrics: []runbook.Metric{m}}
		if err := r.Render(&bytes.Buffer{}, rep, Options{}); err == nil {
			t.Errorf("metric %+v rendered without error", m)
		}
	}
}
