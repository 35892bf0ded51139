package runbook

import (
	"slices"
	"sort"
)

// Severity is how bad a lint finding is. Unlike a step's [Status] it is
// fixed per rule: a rule id always has the same severity, so a script or
// an alert can key on the id alone.
type Severity string

const (
	SeverityInfo Severity = "info" // worth knowing; never changes the exit code
	SeverityWarn Severity = "warn" // exit 1 only with --strict
	SeverityFail Severity = "fail" // exit 1
)

// Severities lists every severity, worst last.
var Severities = []Severity{SeverityInfo, SeverityWarn, SeverityFail}

// Finding is one problem a lint rule found in one file (a keytab, a
// credential cache). A step that lints returns its findings in
// [Result.Findings]; [Run] moves them to [Report.Findings] in step order.
//
// Evidence never holds key material: keytab keys, session keys and
// tickets stay inside kdcops.
type Finding struct {
	Rule      string   // stable id, e.g. "KT006"
	Severity  Severity // fixed per rule
	File      string   // the file the finding is about, as given or found
	Principal string   // the principal concerned; empty for file-level findings
	Message   string   // one line: what is wrong, with the numbers
	Hint      string   // what the on-call should do next
	Evidence  Evidence // typed facts behind the message (kvnos, modes, times)
}

// Metric is one sample for the prometheus output: a gauge with labels. A
// step returns its samples in [Result.Metrics]; [Run] moves them to
// [Report.Metrics]. Samples of one Name must share Help and label names.
type Metric struct {
	Name   string
	Help   string
	Labels map[string]string
	Value  float64
}

// LabelNames returns the metric's label names sorted, so renderers print
// labels in a stable order.
func (m Metric) LabelNames() []string {
	names := make([]string, 0, len(m.Labels))
	for k := range m.Labels {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// FindingCounts counts findings by severity.
type FindingCounts struct {
	Info, Warn, Fail int
}

// Total is the number of findings.
func (c FindingCounts) Total() int { return c.Info + c.Warn + c.Fail }

// CountFindings counts fs by severity.
func CountFindings(fs []Finding) FindingCounts {
	var c FindingCounts
	for _, f := range fs {
		switch f.Severity {
		case SeverityInfo:
			c.Info++
		case SeverityWarn:
			c.Warn++
		case SeverityFail:
			c.Fail++
		}
	}
	return c
}

// WithFindings returns r with fs appended to its findings. The slice is
// reallocated, so a result used as a template is never changed.
func (r Result) WithFindings(fs ...Finding) Result {
	r.Findings = append(slices.Clip(r.Findings), fs...)
	return r
}

// WithMetrics returns r with ms appended to its metrics, without changing
// the result it was called on.
func (r Result) WithMetrics(ms ...Metric) Result {
	r.Metrics = append(slices.Clip(r.Metrics), ms...)
	return r
}

// Findings returns the findings of the steps that ran so far, in step
// order: a summary step reads them to count findings per rule.
func (s *State) Findings() []Finding { return s.findings }
