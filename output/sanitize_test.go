package output

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/runbook"
)

// Text from a KDC, a keytab or a DynamoDB endpoint can carry ESC and BEL:
// no format may pass them on (issue 10: hostile input harmless).
func TestEveryFormatStripsControlCharacters(t *testing.T) {
	evil := "pwned\x1b]0;title\x07\x1b[2J\u009b31m\u202e"
	rep := &runbook.Report{
		Schema: runbook.Schema, Command: "verify", CorrelationID: "c" + evil,
		StartedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Status: "fail", ExitCode: 1,
		Steps: []runbook.StepResult{{ID: "as" + evil, Title: "t" + evil, Group: "host/x" + evil + "@R",
			Result: runbook.Result{Status: runbook.Fail, Message: "KDC said " + evil, Hint: "run kinit " + evil,
				Evidence: runbook.Evidence{"kdc_error" + evil: evil, "list": []string{evil}, "nested": map[string]any{"k": []any{evil}}}}}},
		Findings: []runbook.Finding{{Rule: "KT006", Severity: runbook.SeverityFail, File: "/k" + evil, Principal: "p" + evil,
			Message: "m" + evil, Hint: "h" + evil, Evidence: runbook.Evidence{"e": evil}}},
		Metrics: []runbook.Metric{{Name: "krb5_keytab_kvno", Help: "help" + evil, Labels: map[string]string{"principal": "p" + evil}, Value: 3}},
	}
	for _, name := range Names() {
		r, err := Get(name)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := r.Render(&buf, rep, Options{}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out := buf.String()
		for _, bad := range []string{"\x1b", "\x07", "\u009b", "\u202e"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s output contains %q", name, bad)
			}
		}
		if !strings.Contains(out, "pwned") {
			t.Errorf("%s output lost the text itself:\n%s", name, out)
		}
	}
	// The report itself is not changed: renderers get a cleaned copy.
	if !strings.Contains(rep.Steps[0].Message, "\x1b") {
		t.Error("sanitizing changed the caller's report")
	}
}
