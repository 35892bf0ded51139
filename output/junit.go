package output

import (
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/krbops/krbops/runbook"
)

func init() { Register("junit", RendererFunc(renderJUnit)) }

// The JUnit structs follow the schema Jenkins, GitLab and GitHub test
// reporters read (the Ant/Surefire dialect): element order inside a
// testcase is result, then system-out.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr"`
	Properties []junitProperty `xml:"properties>property"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Skipped   *junitOutcome `xml:"skipped"`
	Error     *junitOutcome `xml:"error"`
	Failure   *junitOutcome `xml:"failure"`
	SystemOut *junitText    `xml:"system-out"`
}

type junitOutcome struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Body    string `xml:",cdata"`
}

// junitText is CDATA so multi-line evidence stays readable in the file
// instead of becoming &#xA; entities.
type junitText struct {
	Text string `xml:",cdata"`
}

// renderJUnit maps the report to one <testsuite> named krbops.<command>:
//
//	pass  → plain <testcase>
//	warn  → plain <testcase> with "WARN: message" in system-out;
//	        <failure type="warn"> instead when the run is --strict
//	fail  → <failure type="fail">
//	error → <error type="error">
//	skip  → <skipped>
//
// Failure and error bodies hold the hint and evidence; every testcase's
// system-out holds "STATUS: message", the hint and the evidence as sorted
// key=value lines.
//
// Lint findings go to a second <testsuite> named krbops.<command>.findings,
// one testcase per finding (see junitFindings).
func renderJUnit(w io.Writer, rep *runbook.Report, _ Options) error {
	if rep == nil {
		return errNilReport
	}
	suiteName := "krbops." + rep.Command
	suite := junitSuite{
		Name:      suiteName,
		Tests:     len(rep.Steps),
		Time:      junitSeconds(rep.Duration),
		Timestamp: rep.StartedAt.UTC().Format("2006-01-02T15:04:05"), // the XSD allows no zone; it is UTC
		Properties: []junitProperty{
			{Name: "correlation_id", Value: rep.CorrelationID},
			{Name: "started_at", Value: timestamp(rep.StartedAt)},
			{Name: "status", Value: rep.Status},
			{Name: "exit_code", Value: strconv.Itoa(rep.ExitCode)},
			{Name: "strict", Value: strconv.FormatBool(rep.Strict)},
			{Name: "schema", Value: runbook.Schema},
		},
	}
	for _, sr := range rep.Steps {
		name := sr.ID
		if sr.Group != "" {
			// CI reporters key test cases by name, so the same step run for
			// two targets would otherwise collapse into one.
			name = sr.Group + "/" + sr.ID
		}
		tc := junitCase{
			Name:      xmlSafe(oneLine(name)),
			Classname: xmlSafe(oneLine(suiteName)),
			Time:      junitSeconds(sr.Duration),
			SystemOut: &junitText{Text: junitSystemOut(sr)},
		}
		msg := xmlSafe(oneLine(sr.Message))
		switch {
		case sr.Status == runbook.Fail, sr.Status == runbook.Warn && rep.Strict:
			suite.Failures++
			tc.Failure = &junitOutcome{Message: msg, Type: string(sr.Status), Body: junitDetail(sr)}
		case sr.Status == runbook.Error:
			suite.Errors++
			tc.Error = &junitOutcome{Message: msg, Type: string(sr.Status), Body: junitDetail(sr)}
		case sr.Status == runbook.Skip:
			suite.Skipped++
			tc.Skipped = &junitOutcome{Message: msg}
		}
		suite.Cases = append(suite.Cases, tc)
	}
	doc := junitSuites{
		Name:     "krbops",
		Tests:    suite.Tests,
		Failures: suite.Failures,
		Errors:   suite.Errors,
		Skipped:  suite.Skipped,
		Time:     suite.Time,
		Suites:   []junitSuite{suite},
	}
	if len(rep.Findings) > 0 {
		fsuite := junitFindings(rep, suite)
		doc.Tests += fsuite.Tests
		doc.Failures += fsuite.Failures
		doc.Suites = append(doc.Suites, fsuite)
	}

	var b strings.Builder
	b.WriteString(xml.Header)
	enc := xml.NewEncoder(&b)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("encode junit report: %w", err)
	}
	b.WriteByte('\n')
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write junit report: %w", err)
	}
	return nil
}

// junitSeconds is JUnit's time unit: seconds, millisecond precision.
func junitSeconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 3, 64)
}

// junitDetail is the body of a failure or error: what to do, then why.
func junitDetail(sr runbook.StepResult) string {
	var lines []string
	if sr.Hint != "" {
		lines = append(lines, "hint: "+oneLine(sr.Hint))
	}
	lines = append(lines, evidencePairs(sr.Evidence)...)
	return xmlSafe(strings.Join(lines, "\n"))
}

func junitSystemOut(sr runbook.StepResult) string {
	lines := []string{strings.ToUpper(string(sr.Status)) + ": " + oneLine(sr.Message)}
	if sr.Hint != "" {
		lines = append(lines, "hint: "+oneLine(sr.Hint))
	}
	lines = append(lines, evidencePairs(sr.Evidence)...)
	return xmlSafe(strings.Join(lines, "\n"))
}

// xmlSafe replaces runes XML 1.0 cannot carry at all (CDATA included), so
// a stray byte in a KDC reply cannot make the whole report unparseable.
func xmlSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return r
		case r < 0x20, r == 0xFFFE, r == 0xFFFF, r >= 0xD800 && r <= 0xDFFF:
			return unicode.ReplacementChar
		}
		return r
	}, s)
}

// junitFindings makes one testcase per lint finding, in a suite of its own
// so CI shows "what the linter found" apart from "which steps ran":
//
//	classname  krbops.<command>.<RULE>   CI groups the findings by rule
//	name       <file> or <file> <principal>, with " #2", " #3" added for
//	           repeats (GitLab drops duplicate classname+name pairs)
//	fail       <failure type="fail">
//	warn       <failure type="warn"> under --strict, else a passed
//	           testcase whose system-out starts "WARN: "
//	info       a passed testcase whose system-out starts "INFO: "
func junitFindings(rep *runbook.Report, steps junitSuite) junitSuite {
	suite := junitSuite{
		Name:       "krbops." + rep.Command + ".findings",
		Tests:      len(rep.Findings),
		Time:       "0.000",
		Timestamp:  steps.Timestamp,
		Properties: steps.Properties,
	}
	seen := map[string]int{}
	for _, f := range rep.Findings {
		class := "krbops." + rep.Command + "." + f.Rule
		name := f.File
		if f.Principal != "" {
			name += " " + f.Principal
		}
		seen[class+"\x00"+name]++
		if n := seen[class+"\x00"+name]; n > 1 {
			name += fmt.Sprintf(" #%d", n)
		}
		var lines []string
		if f.Hint != "" {
			lines = append(lines, "hint: "+oneLine(f.Hint))
		}
		lines = append(lines, evidencePairs(f.Evidence)...)
		detail := xmlSafe(strings.Join(lines, "\n"))
		tc := junitCase{
			Name:      xmlSafe(oneLine(name)),
			Classname: xmlSafe(oneLine(class)),
			Time:      "0.000",
		}
		out := strings.ToUpper(string(f.Severity)) + ": " + oneLine(f.Message)
		if detail != "" {
			out += "\n" + detail
		}
		tc.SystemOut = &junitText{Text: xmlSafe(out)}
		if f.Severity == runbook.SeverityFail || f.Severity == runbook.SeverityWarn && rep.Strict {
			suite.Failures++
			tc.Failure = &junitOutcome{Message: xmlSafe(oneLine(f.Message)), Type: string(f.Severity), Body: detail}
		}
		suite.Cases = append(suite.Cases, tc)
	}
	return suite
}
