package output

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/krbops/krbops/runbook"
)

func init() { Register("prometheus", RendererFunc(renderPrometheus)) }

var (
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// renderPrometheus writes the Prometheus text exposition format for
// node_exporter's textfile collector: every family has # HELP and # TYPE
// (all gauges), families sorted by name, samples by their label values.
// Two run-level gauges come first for every command:
//
//	krbops_run_exit_code{command="klist-lint"} 1
//	krbops_run_timestamp_seconds{command="klist-lint"} 1741061167
//
// then the report's own metrics (klist-lint: krb5_ticket_expiry_seconds,
// krb5_ticket_renew_until_seconds, krb5_keytab_kvno,
// krb5_keytab_newest_age_seconds, krbops_lint_findings, ...). A sample
// whose name and labels repeat an earlier one is dropped: node_exporter
// rejects a whole file with a duplicate series.
//
// node_exporter may read the file while it is being written: write to a
// temporary file in the same directory and mv it into place.
func renderPrometheus(w io.Writer, rep *runbook.Report, _ Options) error {
	if rep == nil {
		return errNilReport
	}
	cmd := map[string]string{"command": rep.Command}
	metrics := []runbook.Metric{
		{Name: "krbops_run_exit_code", Help: "Exit code of the last krbops run of a command (0 ok, 1 failed, 2 usage, 3 incomplete, 130 cancelled).", Labels: cmd, Value: float64(rep.ExitCode)},
		{Name: "krbops_run_timestamp_seconds", Help: "Unix time the last krbops run of a command started.", Labels: cmd, Value: float64(rep.StartedAt.Unix())},
	}
	metrics = append(metrics, rep.Metrics...)

	type family struct {
		help    string
		samples map[string]float64 // rendered label set -> value
	}
	families := map[string]*family{}
	for _, m := range metrics {
		if !metricNameRE.MatchString(m.Name) {
			return fmt.Errorf("prometheus: invalid metric name %q", m.Name)
		}
		fam := families[m.Name]
		if fam == nil {
			fam = &family{help: m.Help, samples: map[string]float64{}}
			families[m.Name] = fam
		}
		labels, err := promLabels(m)
		if err != nil {
			return err
		}
		if _, dup := fam.samples[labels]; !dup {
			fam.samples[labels] = m.Value
		}
	}
	names := make([]string, 0, len(families))
	for n := range families {
		names = append(names, n)
	}
	// The run-level gauges first, then the rest by name.
	sort.Slice(names, func(i, j int) bool {
		ri, rj := strings.HasPrefix(names[i], "krbops_run_"), strings.HasPrefix(names[j], "krbops_run_")
		if ri != rj {
			return ri
		}
		return names[i] < names[j]
	})

	bw := bufio.NewWriter(w)
	for _, n := range names {
		fam := families[n]
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s gauge\n", n, promHelp(fam.help), n)
		keys := make([]string, 0, len(fam.samples))
		for k := range fam.samples {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(bw, "%s%s %s\n", n, k, promValue(fam.samples[k]))
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write prometheus report: %w", err)
	}
	return nil
}

func promLabels(m runbook.Metric) (string, error) {
	names := m.LabelNames()
	if len(names) == 0 {
		return "", nil
	}
	parts := make([]string, len(names))
	for i, n := range names {
		if !labelNameRE.MatchString(n) || strings.HasPrefix(n, "__") {
			return "", fmt.Errorf("prometheus: metric %s: invalid label name %q", m.Name, n)
		}
		parts[i] = n + `="` + promEscape(m.Labels[n], true) + `"`
	}
	return "{" + strings.Join(parts, ",") + "}", nil
}

// promEscape escapes as the text format requires: backslash and newline
// everywhere, the double quote in label values. Invalid UTF-8 (a file name
// can be any bytes) becomes U+FFFD, since the format is UTF-8.
func promEscape(s string, quote bool) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '"' && quote:
			b.WriteString(`\"`)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func promHelp(s string) string { return promEscape(oneLine(s), false) }

func promValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}
