package output

import (
	"io"

	"github.com/krbops/krbops/internal/safetext"
	"github.com/krbops/krbops/runbook"
)

// sanitizing wraps every registered renderer: whatever a step put in its
// message, hint or evidence (a KDC's error text, a principal read from a
// keytab, a server's message) reaches every format as plain one-line text,
// with no control bytes that could rewrite an on-call's terminal or a
// dashboard's labels. Doing it here, once, covers every format and every
// command.
type sanitizing struct{ Renderer }

func (s sanitizing) Render(w io.Writer, rep *runbook.Report, opts Options) error {
	return s.Renderer.Render(w, sanitizeReport(rep), opts)
}

func sanitizeReport(rep *runbook.Report) *runbook.Report {
	if rep == nil {
		return nil
	}
	cp := *rep
	cp.Command = safetext.Line(rep.Command)
	cp.CorrelationID = safetext.Line(rep.CorrelationID)
	cp.Steps = make([]runbook.StepResult, len(rep.Steps))
	for i, sr := range rep.Steps {
		sr.ID, sr.Title, sr.Group, sr.DecidedBy = safetext.Line(sr.ID), safetext.Line(sr.Title), safetext.Line(sr.Group), safetext.Line(sr.DecidedBy)
		sr.Message, sr.Hint = safetext.Line(sr.Message), safetext.Line(sr.Hint)
		sr.Evidence = sanitizeEvidence(sr.Evidence)
		cp.Steps[i] = sr
	}
	if rep.Findings != nil {
		cp.Findings = make([]runbook.Finding, len(rep.Findings))
		for i, f := range rep.Findings {
			f.Rule, f.File, f.Principal = safetext.Line(f.Rule), safetext.Line(f.File), safetext.Line(f.Principal)
			f.Message, f.Hint = safetext.Line(f.Message), safetext.Line(f.Hint)
			f.Evidence = sanitizeEvidence(f.Evidence)
			cp.Findings[i] = f
		}
	}
	if rep.Metrics != nil {
		cp.Metrics = make([]runbook.Metric, len(rep.Metrics))
		for i, m := range rep.Metrics {
			m.Help = safetext.Line(m.Help)
			if m.Labels != nil {
				labels := make(map[string]string, len(m.Labels))
				for k, v := range m.Labels {
					labels[safetext.Line(k)] = safetext.Line(v)
				}
				m.Labels = labels
			}
			cp.Metrics[i] = m
		}
	}
	return &cp
}

func sanitizeEvidence(ev runbook.Evidence) runbook.Evidence {
	if ev == nil {
		return nil
	}
	out := make(runbook.Evidence, len(ev))
	for k, v := range ev {
		out[safetext.Line(k)] = sanitizeValue(v)
	}
	return out
}

func sanitizeValue(v any) any {
	switch x := v.(type) {
	case string:
		return safetext.Line(x)
	case []string:
		out := make([]string, len(x))
		for i, s := range x {
			out[i] = safetext.Line(s)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = sanitizeValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[safetext.Line(k)] = sanitizeValue(e)
		}
		return out
	case runbook.Evidence:
		return sanitizeEvidence(x)
	}
	return v
}
