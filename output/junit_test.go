package output

import (
	"encoding/xml"
	"strings"
	"testing"

	"github.com/krbops/krbops/runbook"
)

type parsedSuites struct {
	Suites []struct {
		Name     string `xml:"name,attr"`
		Tests    int    `xml:"tests,attr"`
		Failures int    `xml:"failures,attr"`
		Errors   int    `xml:"errors,attr"`
		Skipped  int    `xml:"skipped,attr"`
		Props    []struct {
			Name  string `xml:"name,attr"`
			Value string `xml:"value,attr"`
		} `xml:"properties>property"`
		Cases []struct {
			Name    string `xml:"name,attr"`
			Failure *struct {
				Type string `xml:"type,attr"`
				Body string `xml:",chardata"`
			} `xml:"failure"`
			Error     *struct{} `xml:"error"`
			Skipped   *struct{} `xml:"skipped"`
			SystemOut string    `xml:"system-out"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func parseJUnit(t *testing.T, rep *runbook.Report) parsedSuites {
	t.Helper()
	out := render(t, "junit", rep, Options{})
	var doc parsedSuites
	if err := xml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("junit does not parse: %v\n%s", err, out)
	}
	if len(doc.Suites) != 1 {
		t.Fatalf("%d testsuites, want 1", len(doc.Suites))
	}
	return doc
}

func TestJUnitParses(t *testing.T) {
	rep := fixtureReport()
	s := parseJUnit(t, rep).Suites[0]
	if s.Name != "krbops.clock" {
		t.Errorf("suite name = %q", s.Name)
	}
	if len(s.Cases) != len(rep.Steps) || s.Tests != len(rep.Steps) {
		t.Fatalf("%d testcases (tests=%d), want one per step (%d)", len(s.Cases), s.Tests, len(rep.Steps))
	}
	if s.Failures != 1 || s.Errors != 1 || s.Skipped != 1 {
		t.Errorf("failures/errors/skipped = %d/%d/%d, want 1/1/1", s.Failures, s.Errors, s.Skipped)
	}
	if s.Cases[1].Name != "kdc1.example.com/clock.kdc-offset" {
		t.Errorf("grouped case name = %q", s.Cases[1].Name)
	}
	if s.Cases[1].Failure != nil || !strings.HasPrefix(s.Cases[1].SystemOut, "WARN: ") {
		t.Errorf("warn without --strict: failure=%v system-out=%q", s.Cases[1].Failure, s.Cases[1].SystemOut)
	}
	if f := s.Cases[2].Failure; f == nil || f.Type != "fail" || !strings.Contains(f.Body, "hint: re-export") || !strings.Contains(f.Body, "kdc_kvno=4") {
		t.Errorf("fail case failure = %+v", f)
	}
	if s.Cases[3].Error == nil || s.Cases[4].Skipped == nil {
		t.Error("error/skip steps lack <error>/<skipped>")
	}
	var cid string
	for _, p := range s.Props {
		if p.Name == "correlation_id" {
			cid = p.Value
		}
	}
	if cid != "c0ffee-1234" {
		t.Errorf("correlation_id property = %q", cid)
	}
}

func TestJUnitStrictWarnFails(t *testing.T) {
	rep := fixtureReport()
	rep.Strict = true
	s := parseJUnit(t, rep).Suites[0]
	if s.Failures != 2 {
		t.Errorf("failures = %d, want 2 (fail + strict warn)", s.Failures)
	}
	if f := s.Cases[1].Failure; f == nil || f.Type != "warn" {
		t.Errorf("strict warn case failure = %+v, want type warn", f)
	}
}
