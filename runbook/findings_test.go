package runbook_test

import (
	"context"
	"github.com/krbops/krbops/internal/fault"
	"testing"

	"github.com/krbops/krbops/runbook"
)

func findingStep(id string, status runbook.Status, sev ...runbook.Severity) runbook.Step {
	return runbook.Step{ID: id, Run: func(context.Context, *runbook.State) runbook.Result {
		res := runbook.Result{Status: status, Message: id}
		for _, s := range sev {
			res = res.WithFindings(runbook.Finding{Rule: "XX001", Severity: s, File: "f", Message: "m"})
		}
		return res.WithMetrics(runbook.Metric{Name: "m_" + id, Value: 1})
	}}
}

// A finding decides the exit code even when its step says pass: the
// findings are what scripts and CI act on.
func TestFindingsDecideExitCode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sev    []runbook.Severity
		strict bool
		status string
		code   fault.Class
	}{
		{"none", nil, false, "pass", fault.OK},
		{"info", []runbook.Severity{runbook.SeverityInfo}, true, "pass", fault.OK},
		{"warn", []runbook.Severity{runbook.SeverityWarn}, false, "warn", fault.OK},
		{"warn strict", []runbook.Severity{runbook.SeverityWarn}, true, "fail", fault.CheckFailed},
		{"fail", []runbook.Severity{runbook.SeverityInfo, runbook.SeverityFail}, false, "fail", fault.CheckFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rb := runbook.Runbook{Command: "lint", Steps: []runbook.Step{
				findingStep("a", runbook.Pass, tc.sev...),
				findingStep("b", runbook.Pass),
			}}
			rep := runbook.Run(context.Background(), rb, runbook.Options{Strict: tc.strict})
			if rep.Status != tc.status || rep.Class != tc.code {
				t.Errorf("status %s exit %d, want %s %d", rep.Status, rep.Class, tc.status, tc.code)
			}
			if len(rep.Findings) != len(tc.sev) || len(rep.Metrics) != 2 {
				t.Errorf("report has %d findings, %d metrics", len(rep.Findings), len(rep.Metrics))
			}
			for _, sr := range rep.Steps {
				if sr.Findings != nil || sr.Metrics != nil {
					t.Errorf("step %s keeps its findings/metrics after the run moved them", sr.ID)
				}
			}
		})
	}
}

// A later step sees the findings of the earlier ones (the summary counts
// them).
func TestStateFindings(t *testing.T) {
	var seen int
	rb := runbook.Runbook{Command: "lint", Steps: []runbook.Step{
		findingStep("a", runbook.Fail, runbook.SeverityFail, runbook.SeverityWarn),
		{ID: "summary", Run: func(_ context.Context, st *runbook.State) runbook.Result {
			seen = len(st.Findings())
			return runbook.Passf("ok")
		}},
	}}
	runbook.Run(context.Background(), rb, runbook.Options{})
	if seen != 2 {
		t.Errorf("summary saw %d findings, want 2", seen)
	}
}

func TestWithFindingsDoesNotAlias(t *testing.T) {
	base := runbook.Passf("x").WithFindings(runbook.Finding{Rule: "A"}, runbook.Finding{Rule: "B"})
	base.Findings = base.Findings[:1]
	one := base.WithFindings(runbook.Finding{Rule: "C"})
	two := base.WithFindings(runbook.Finding{Rule: "D"})
	if one.Findings[1].Rule != "C" || two.Findings[1].Rule != "D" {
		t.Errorf("WithFindings wrote through a shared array: %v %v", one.Findings, two.Findings)
	}
}

func TestCountFindings(t *testing.T) {
	c := runbook.CountFindings([]runbook.Finding{{Severity: runbook.SeverityFail}, {Severity: runbook.SeverityWarn}, {Severity: runbook.SeverityWarn}, {Severity: runbook.SeverityInfo}})
	if c.Fail != 1 || c.Warn != 2 || c.Info != 1 || c.Total() != 4 {
		t.Errorf("counts = %+v", c)
	}
}
