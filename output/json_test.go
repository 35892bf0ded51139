package output

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/krbops/krbops/runbook"
)

func TestJSONShape(t *testing.T) {
	out := render(t, "json", fixtureReport(), Options{})
	var doc struct {
		Schema    string `json:"schema"`
		StartedAt string `json:"started_at"`
		Steps     []struct {
			ID       string          `json:"id"`
			Group    *string         `json:"group"`
			Evidence json.RawMessage `json:"evidence"`
		} `json:"steps"`
		Summary map[string]int `json:"summary"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("json does not parse: %v", err)
	}
	if doc.Schema != runbook.Schema {
		t.Errorf("schema = %q", doc.Schema)
	}
	if doc.StartedAt != "2025-03-04T04:06:07.123456789Z" {
		t.Errorf("started_at = %q, want UTC RFC3339Nano", doc.StartedAt)
	}
	if len(doc.Steps) != 5 {
		t.Fatalf("%d steps, want 5", len(doc.Steps))
	}
	for _, s := range doc.Steps {
		if s.ID == "dns.srv" && string(s.Evidence) != "{}" {
			t.Errorf("evidence of a step without evidence = %s, want {}", s.Evidence)
		}
		if (s.Group != nil) != (s.ID == "clock.kdc-offset") {
			t.Errorf("step %s: group present = %t", s.ID, s.Group != nil)
		}
	}
	if len(doc.Summary) != 5 {
		t.Errorf("summary = %v", doc.Summary)
	}
	if !bytes.HasSuffix(out, []byte("}\n")) {
		t.Error("json does not end with a newline")
	}
}

func TestJSONEmptyStepsIsArray(t *testing.T) {
	out := render(t, "json", &runbook.Report{Command: "clock"}, Options{})
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	if string(doc["steps"]) != "[]" {
		t.Errorf("steps = %s, want []", doc["steps"])
	}
}

// Odd evidence must degrade to something readable, never fail the render.
func TestJSONOddEvidence(t *testing.T) {
	rep := &runbook.Report{Command: "clock", Steps: []runbook.StepResult{{
		ID: "odd",
		Result: runbook.Result{Status: runbook.Pass, Evidence: runbook.Evidence{
			"nan":       math.NaN(),
			"inf":       math.Inf(1),
			"chan":      make(chan int),
			"err":       errTest("boom"),
			"durations": []time.Duration{time.Second, 1500 * time.Millisecond},
			"nil_slice": []string(nil),
		}},
	}}}
	out := render(t, "json", rep, Options{})
	var doc struct {
		Steps []struct {
			Evidence map[string]any `json:"evidence"`
		} `json:"steps"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ev := doc.Steps[0].Evidence
	if ev["nan"] != nil || ev["inf"] != nil {
		t.Errorf("NaN/Inf = %v/%v, want null", ev["nan"], ev["inf"])
	}
	if ev["err"] != "boom" {
		t.Errorf("err = %v", ev["err"])
	}
	if d, _ := ev["durations"].([]any); len(d) != 2 || d[1] != 1.5 {
		t.Errorf("durations = %v, want [1 1.5]", ev["durations"])
	}
	if s, ok := ev["nil_slice"].([]any); !ok || len(s) != 0 {
		t.Errorf("nil_slice = %#v, want []", ev["nil_slice"])
	}
	if _, ok := ev["chan"].(string); !ok {
		t.Errorf("chan = %#v, want its text form", ev["chan"])
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }

// Later commands embed the envelope; the embedded fields must stay at the
// top level.
func TestJSONEmbedding(t *testing.T) {
	type lint struct {
		JSONReport
		Findings []string `json:"findings"`
	}
	var buf bytes.Buffer
	if err := EncodeJSON(&buf, lint{JSONReport: ToJSON(fixtureReport()), Findings: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema", "steps", "summary", "findings"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("embedded report lacks top-level %q", k)
		}
	}
}
