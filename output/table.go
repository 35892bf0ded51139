package output

import (
	"fmt"
	"io"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/lipgloss/table"
	"github.com/charmbracelet/x/ansi"

	"github.com/krbops/krbops/runbook"
)

func init() { Register("table", RendererFunc(renderTable)) }

// renderTable draws the report for a person at a terminal:
//
//	krbops clock · correlation id 1f2e · started 2025-03-04T04:06:07Z
//	╭────────┬────────────┬──────────────────────────────┬──────────╮
//	│ STATUS │ STEP       │ MESSAGE                      │ DURATION │
//	├────────┼────────────┼──────────────────────────────┼──────────┤
//	│ FAIL   │ keytab.kvno│ kvno 3 in keytab, kdc has 4  │    1.2ms │
//	│        │            │ hint: re-export the keytab   │          │
//	╰────────┴────────────┴──────────────────────────────┴──────────╯
//	FAIL · exit 1 · 0 pass, 1 fail, 0 warn, 0 skip, 0 error · 1.2ms
//
// The hint sits on its own line under the message of every non-pass step,
// in the widest column, because it is the line the on-call acts on.
// Evidence is left to the JSON output to keep rows short. Statuses are
// upper-case so they stand out without color too.
func renderTable(w io.Writer, rep *runbook.Report, opts Options) error {
	if rep == nil {
		return errNilReport
	}
	st := newStyler(w, opts.Color)

	grouped := false
	for _, sr := range rep.Steps {
		if sr.Group != "" {
			grouped = true
			break
		}
	}

	headers := []string{"STATUS"}
	if grouped {
		headers = append(headers, "GROUP")
	}
	headers = append(headers, "STEP", "MESSAGE", "DURATION")
	durationCol := len(headers) - 1

	type line struct{ status, group, id, msg, hint, dur string }
	lines := make([]line, 0, len(rep.Steps))
	for _, sr := range rep.Steps {
		l := line{
			status: statusStyle(st, string(sr.Status)).Render(strings.ToUpper(string(sr.Status))),
			group:  oneLine(sr.Group),
			id:     oneLine(sr.ID),
			msg:    oneLine(sr.Message),
			dur:    humanDuration(sr.Duration),
		}
		if sr.Status != runbook.Pass {
			l.hint = oneLine(sr.Hint)
		}
		lines = append(lines, l)
	}

	// With a width limit only MESSAGE wraps: ids, groups and statuses are
	// what people grep for and copy, so they must stay whole. lipgloss's
	// own Width() shrinks every column instead (a GROUP of "kd/c1/.e").
	msgWidth := 0
	if opts.Width > 0 {
		fixed := len(headers) + 1 // vertical borders
		for col, h := range headers {
			if h == "MESSAGE" {
				continue
			}
			w := lipgloss.Width(h)
			for _, l := range lines {
				w = max(w, lipgloss.Width([]string{l.status, l.group, l.id, "", l.dur}[cellIndex(col, grouped)]))
			}
			fixed += w + 2 // cell padding
		}
		msgWidth = max(opts.Width-fixed-2, minMessageWidth)
	}

	hintLabel := st.NewStyle().Bold(true).Render("hint:")
	rows := make([][]string, 0, len(lines))
	for _, l := range lines {
		msg := wrapText(l.msg, msgWidth, "")
		if l.hint != "" {
			msg += "\n" + hintLabel + " " + wrapText(l.hint, msgWidth-len("hint: "), strings.Repeat(" ", len("hint: ")))
		}
		row := []string{l.status}
		if grouped {
			row = append(row, l.group)
		}
		rows = append(rows, append(row, l.id, msg, l.dur))
	}

	cell := st.NewStyle().Padding(0, 1)
	t := table.New().
		Border(lipgloss.RoundedBorder()).
		BorderStyle(st.NewStyle()).
		Headers(headers...).
		Rows(rows...).
		StyleFunc(func(row, col int) lipgloss.Style {
			s := cell
			if row == table.HeaderRow {
				s = s.Bold(true)
			}
			if col == durationCol && row != table.HeaderRow {
				s = s.Align(lipgloss.Right)
			}
			return s
		})

	findingsTable := ""
	if len(rep.Findings) > 0 {
		findingsTable = renderFindingsTable(st, rep.Findings, opts.Width, hintLabel)
	}

	header := fmt.Sprintf("krbops %s · correlation id %s · started %s",
		oneLine(rep.Command), orDash(oneLine(rep.CorrelationID)), humanTime(rep.StartedAt))
	verdict := statusStyle(st, rep.Status).Render(strings.ToUpper(orDash(rep.Status)))
	footer := fmt.Sprintf("%s · exit %d · %s · %s",
		verdict, rep.ExitCode, summaryCounts(rep.Summary), humanDuration(rep.Duration))
	if len(rep.Findings) > 0 {
		footer += " · " + findingCounts(rep.Findings)
	}
	if rep.Strict {
		footer += " · strict: warnings fail"
	}

	var b strings.Builder
	b.WriteString(header)
	b.WriteByte('\n')
	b.WriteString(t.Render())
	b.WriteByte('\n')
	if findingsTable != "" {
		b.WriteString(findingsTable)
		b.WriteByte('\n')
	}
	b.WriteString(footer)
	b.WriteByte('\n')
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write table report: %w", err)
	}
	return nil
}

// minMessageWidth keeps a message readable on a very narrow terminal; the
// table then overflows the width rather than wrapping to a word per line.
const minMessageWidth = 24

// cellIndex maps a table column to its field in the per-step slice
// {status, group, id, message, duration}, which always has a group slot.
func cellIndex(col int, grouped bool) int {
	if !grouped && col > 0 {
		return col + 1
	}
	return col
}

// wrapText word-wraps s to width (0 = no wrapping), indenting continuation
// lines so a wrapped hint stays visibly one hint.
func wrapText(s string, width int, indent string) string {
	if width <= 0 {
		return s
	}
	return strings.ReplaceAll(ansi.Wrap(s, width, ""), "\n", "\n"+indent)
}

// renderFindingsTable draws lint findings under the steps, one row each:
//
//	│ SEVERITY │ RULE  │ FILE             │ MESSAGE                       │
//	│ FAIL     │ KT002 │ /etc/krb5.keytab │ keytab mode 0640 gives access │
//	│          │       │                  │ hint: chmod 600 ...           │
//
// As in the steps table only MESSAGE wraps; the principal leads the
// message because a PRINCIPAL column would leave little room for it.
func renderFindingsTable(st *lipgloss.Renderer, fs []runbook.Finding, width int, hintLabel string) string {
	headers := []string{"SEVERITY", "RULE", "FILE", "MESSAGE"}
	fixedCells := make([][]string, len(fs))
	for i, f := range fs {
		fixedCells[i] = []string{
			statusStyle(st, severityStatus(f.Severity)).Render(strings.ToUpper(string(f.Severity))),
			oneLine(f.Rule),
			oneLine(f.File),
		}
	}
	msgWidth := 0
	if width > 0 {
		fixed := len(headers) + 1
		for col := 0; col < 3; col++ {
			w := lipgloss.Width(headers[col])
			for _, cells := range fixedCells {
				w = max(w, lipgloss.Width(cells[col]))
			}
			fixed += w + 2
		}
		msgWidth = max(width-fixed-2, minMessageWidth)
	}
	rows := make([][]string, len(fs))
	for i, f := range fs {
		msg := wrapText(oneLine(findingText(f)), msgWidth, "")
		if f.Hint != "" {
			msg += "\n" + hintLabel + " " + wrapText(oneLine(f.Hint), msgWidth-len("hint: "), strings.Repeat(" ", len("hint: ")))
		}
		rows[i] = append(fixedCells[i], msg)
	}
	cell := st.NewStyle().Padding(0, 1)
	return table.New().
		Border(lipgloss.RoundedBorder()).
		BorderStyle(st.NewStyle()).
		Headers(headers...).
		Rows(rows...).
		StyleFunc(func(row, col int) lipgloss.Style {
			if row == table.HeaderRow {
				return cell.Bold(true)
			}
			return cell
		}).
		Render()
}

// severityStatus maps a severity to the status whose color it shares
// (info is shown like a pass: nothing to act on).
func severityStatus(s runbook.Severity) string {
	switch s {
	case runbook.SeverityFail:
		return string(runbook.Fail)
	case runbook.SeverityWarn:
		return string(runbook.Warn)
	}
	return string(runbook.Pass)
}
