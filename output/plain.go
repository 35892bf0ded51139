package output

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/krbops/krbops/runbook"
)

func init() { Register("plain", RendererFunc(renderPlain)) }

// renderPlain writes one tab-separated line per step for cut and awk:
//
//	group  id  status  duration_ms  message  hint
//
// Lint findings follow the steps, one line each, with "finding" where a
// step line has its id:
//
//	file  finding  severity  rule  [principal: ]message  hint
//
// There is no header line, so `cut -f2` yields step ids and "finding".
// Empty fields are "-" so every line has six non-empty columns. The last
// line starts with "#" (grep -v '^#' drops it) and carries the verdict:
//
//	#  summary  <status>  <duration_ms>  exit_code=N pass=N fail=N warn=N skip=N error=N  command=C correlation_id=ID strict=BOOL
//
// The column order is a contract (docs/output.md): new information goes in
// new trailing columns, never between existing ones.
func renderPlain(w io.Writer, rep *runbook.Report, _ Options) error {
	if rep == nil {
		return errNilReport
	}
	bw := bufio.NewWriter(w)
	for _, sr := range rep.Steps {
		writeFields(bw,
			sr.Group,
			sr.ID,
			string(sr.Status),
			formatMS(sr.Duration),
			sr.Message,
			sr.Hint,
		)
	}
	for _, f := range rep.Findings {
		writeFields(bw,
			f.File,
			"finding",
			string(f.Severity),
			f.Rule,
			findingText(f),
			f.Hint,
		)
	}
	s := rep.Summary
	counts := fmt.Sprintf("exit_code=%d pass=%d fail=%d warn=%d skip=%d error=%d",
		rep.ExitCode, s.Pass, s.Fail, s.Warn, s.Skip, s.Error)
	if len(rep.Findings) > 0 {
		fc := runbook.CountFindings(rep.Findings)
		counts += fmt.Sprintf(" findings=%d findings_fail=%d findings_warn=%d findings_info=%d",
			fc.Total(), fc.Fail, fc.Warn, fc.Info)
	}
	writeFields(bw,
		"#",
		"summary",
		rep.Status,
		formatMS(rep.Duration),
		counts,
		fmt.Sprintf("command=%s correlation_id=%s strict=%t",
			quoteIfNeeded(rep.Command), quoteIfNeeded(rep.CorrelationID), rep.Strict),
	)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write plain report: %w", err)
	}
	return nil
}

// writeFields writes one line; bufio.Writer keeps the first write error,
// which Flush reports.
func writeFields(bw *bufio.Writer, fields ...string) {
	for i, f := range fields {
		fields[i] = orDash(oneLine(f))
	}
	bw.WriteString(strings.Join(fields, "\t"))
	bw.WriteByte('\n')
}
