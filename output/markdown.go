package output

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/krbops/krbops/runbook"
)

func init() { Register("markdown", RendererFunc(renderMarkdown)) }

// renderMarkdown writes a checklist an on-call pastes into an incident doc:
//
//	### krbops clock — FAIL
//
//	correlation id `1f2e` · started 2025-03-04T04:06:07Z · exit code 1 · 1.2s
//
//	- [x] **config.load** load krb5.conf — loaded /etc/krb5.conf (`path=/etc/krb5.conf`)
//	- [ ] **keytab.kvno** keytab kvno — FAIL: kvno 3 in keytab, kdc has 4 (`kdc_kvno=4` `keytab_kvno=3`)
//	  - hint: re-export the keytab
//
//	0 pass, 1 fail, 0 warn, 0 skip, 0 error
//
// A passing step is ticked; every other status is left open with its status
// word so the list reads as what is still to do. Lint findings follow under
// "#### Findings", each an open item with its rule id, severity, file,
// principal, message, evidence and hint.
func renderMarkdown(w io.Writer, rep *runbook.Report, _ Options) error {
	if rep == nil {
		return errNilReport
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "### krbops %s — %s\n\n", mdText(rep.Command), strings.ToUpper(orDash(rep.Status)))
	fmt.Fprintf(bw, "correlation id %s · started %s · exit code %d · %s",
		codeSpan(orDash(oneLine(rep.CorrelationID))), humanTime(rep.StartedAt), rep.ExitCode, humanDuration(rep.Duration))
	if rep.Strict {
		bw.WriteString(" · strict")
	}
	bw.WriteString("\n\n")

	for _, sr := range rep.Steps {
		id := sr.ID
		if sr.Group != "" {
			id = sr.Group + "/" + sr.ID
		}
		box, status := "- [ ] ", strings.ToUpper(string(sr.Status))+": "
		if sr.Status == runbook.Pass {
			box, status = "- [x] ", ""
		}
		bw.WriteString(box + "**" + mdText(id) + "**")
		if sr.Title != "" {
			bw.WriteString(" " + mdText(sr.Title))
		}
		bw.WriteString(" — " + status + mdText(sr.Message))
		if pairs := evidencePairs(sr.Evidence); len(pairs) > 0 {
			spans := make([]string, len(pairs))
			for i, p := range pairs {
				spans[i] = codeSpan(p)
			}
			bw.WriteString(" (" + strings.Join(spans, " ") + ")")
		}
		bw.WriteByte('\n')
		if sr.Hint != "" && sr.Status != runbook.Pass {
			bw.WriteString("  - hint: " + mdText(sr.Hint) + "\n")
		}
	}
	if len(rep.Steps) > 0 {
		bw.WriteByte('\n')
	}
	if len(rep.Findings) > 0 {
		bw.WriteString("#### Findings\n\n")
		for _, f := range rep.Findings {
			bw.WriteString("- [ ] **" + mdText(f.Rule) + "** " + strings.ToUpper(string(f.Severity)) + " " + codeSpan(f.File))
			if f.Principal != "" {
				bw.WriteString(" " + mdText(f.Principal))
			}
			bw.WriteString(" — " + mdText(f.Message))
			if pairs := evidencePairs(f.Evidence); len(pairs) > 0 {
				spans := make([]string, len(pairs))
				for i, p := range pairs {
					spans[i] = codeSpan(p)
				}
				bw.WriteString(" (" + strings.Join(spans, " ") + ")")
			}
			bw.WriteByte('\n')
			if f.Hint != "" {
				bw.WriteString("  - hint: " + mdText(f.Hint) + "\n")
			}
		}
		bw.WriteByte('\n')
	}
	summary := summaryCounts(rep.Summary)
	if len(rep.Findings) > 0 {
		summary += " · " + findingCounts(rep.Findings)
	}
	bw.WriteString(summary + "\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write markdown report: %w", err)
	}
	return nil
}

// mdEscaper escapes only what breaks a pasted checklist: backslash (so the
// other escapes survive), backticks (stray code spans), pipes (tables in
// incident templates), asterisks (stray bold/italic around principals like
// host/*) and "<" (raw HTML: "<kdc>" would vanish).
var mdEscaper = strings.NewReplacer(
	`\`, `\\`,
	"`", "\\`",
	`|`, `\|`,
	`*`, `\*`,
	`<`, `\<`,
)

// mdText makes free text one markdown-inert line.
func mdText(s string) string {
	return mdEscaper.Replace(oneLine(s))
}

// codeSpan wraps s in a code span whose fence is longer than any backtick
// run inside it (CommonMark's rule), so evidence shows verbatim.
func codeSpan(s string) string {
	s = oneLine(s)
	longest, run := 0, 0
	for _, r := range s {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	fence := strings.Repeat("`", longest+1)
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		s = " " + s + " "
	}
	return fence + s + fence
}
