package output

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"reflect"
	"time"

	"github.com/krbops/krbops/runbook"
)

func init() { Register("json", RendererFunc(renderJSON)) }

// JSONReport is the krbops/v1 envelope. Commands that need more fields
// embed it (struct embedding flattens in encoding/json) and encode with
// [EncodeJSON]:
//
//	type lintReport struct {
//		output.JSONReport
//		Findings []Finding `json:"findings"`
//	}
//
// Field order here is the order in the output; docs/output.md documents
// each field. Adding fields keeps the schema at krbops/v1; renaming,
// removing or retyping one needs krbops/v2.
type JSONReport struct {
	Schema        string      `json:"schema"`
	Command       string      `json:"command"`
	CorrelationID string      `json:"correlation_id"`
	StartedAt     time.Time   `json:"started_at"`  // UTC, RFC 3339 with nanoseconds
	DurationMS    float64     `json:"duration_ms"` // milliseconds, microsecond resolution
	Status        string      `json:"status"`
	ExitCode      int         `json:"exit_code"`
	Strict        bool        `json:"strict"`
	Steps         []JSONStep  `json:"steps"` // never null
	Summary       JSONSummary `json:"summary"`
	// Findings are lint findings (klist-lint); [] for other commands.
	Findings []JSONFinding `json:"findings"` // never null
}

// JSONFinding is one lint finding of a [JSONReport].
type JSONFinding struct {
	Rule      string         `json:"rule"`
	Severity  string         `json:"severity"`
	File      string         `json:"file"`
	Principal string         `json:"principal"`
	Message   string         `json:"message"`
	Hint      string         `json:"hint"`
	Evidence  map[string]any `json:"evidence"` // never null
}

// JSONStep is one step of a [JSONReport].
type JSONStep struct {
	ID         string         `json:"id"`
	Title      string         `json:"title"`
	Group      string         `json:"group,omitempty"`
	Status     runbook.Status `json:"status"`
	Message    string         `json:"message"`
	Hint       string         `json:"hint"`
	Evidence   map[string]any `json:"evidence"` // never null; keys sorted by encoding/json
	DurationMS float64        `json:"duration_ms"`
}

// JSONSummary counts steps by status.
type JSONSummary struct {
	Pass  int `json:"pass"`
	Warn  int `json:"warn"`
	Fail  int `json:"fail"`
	Skip  int `json:"skip"`
	Error int `json:"error"`
}

// ToJSON converts a report to the krbops/v1 envelope. Evidence values are
// normalised (times to RFC 3339 UTC strings, durations to seconds) and any
// value encoding/json cannot encode becomes its text form, so encoding the
// result never fails because of one odd piece of evidence.
func ToJSON(rep *runbook.Report) JSONReport { return toJSON(rep, true) }

// toJSON is ToJSON; without findings it leaves Findings empty (the
// caller writes them, see writeReportJSON).
func toJSON(rep *runbook.Report, findings bool) JSONReport {
	out := JSONReport{
		Schema:        runbook.Schema,
		Command:       rep.Command,
		CorrelationID: rep.CorrelationID,
		StartedAt:     rep.StartedAt.UTC(),
		DurationMS:    durationMS(rep.Duration),
		Status:        rep.Status,
		ExitCode:      rep.ExitCode,
		Strict:        rep.Strict,
		Steps:         make([]JSONStep, 0, len(rep.Steps)),
		Summary: JSONSummary{
			Pass:  rep.Summary.Pass,
			Warn:  rep.Summary.Warn,
			Fail:  rep.Summary.Fail,
			Skip:  rep.Summary.Skip,
			Error: rep.Summary.Error,
		},
	}
	for _, sr := range rep.Steps {
		out.Steps = append(out.Steps, JSONStep{
			ID:         sr.ID,
			Title:      sr.Title,
			Group:      sr.Group,
			Status:     sr.Status,
			Message:    sr.Message,
			Hint:       sr.Hint,
			Evidence:   jsonEvidence(sr.Evidence),
			DurationMS: durationMS(sr.Duration),
		})
	}
	out.Findings = make([]JSONFinding, 0, len(rep.Findings))
	if !findings {
		return out
	}
	for _, f := range rep.Findings {
		out.Findings = append(out.Findings, JSONFinding{
			Rule:      f.Rule,
			Severity:  string(f.Severity),
			File:      f.File,
			Principal: f.Principal,
			Message:   f.Message,
			Hint:      f.Hint,
			Evidence:  jsonEvidence(f.Evidence),
		})
	}
	return out
}

func jsonEvidence(e runbook.Evidence) map[string]any {
	ev := make(map[string]any, len(e))
	for k, v := range e {
		ev[k] = jsonValue(v)
	}
	return ev
}

// EncodeJSON writes v as krbops JSON: two-space indent, trailing newline,
// and no HTML escaping (a hint saying "a & b" should read that way in jq).
func EncodeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write json report: %w", err)
	}
	return nil
}

func renderJSON(w io.Writer, rep *runbook.Report, _ Options) error {
	if rep == nil {
		return errNilReport
	}
	return writeReportJSON(w, rep)
}

// jsonValue normalises one evidence value for encoding/json.
func jsonValue(v any) any {
	switch x := v.(type) {
	case nil, string, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return x
	case time.Time:
		return timestamp(x)
	case time.Duration:
		return x.Seconds()
	case float64:
		return jsonFloat(x)
	case float32:
		return jsonFloat(float64(x))
	case error:
		// encoding/json would print most errors as {}.
		return x.Error()
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array {
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return []any{}
		}
		items := make([]any, rv.Len())
		for i := range items {
			items[i] = jsonValue(rv.Index(i).Interface())
		}
		return items
	}
	if _, err := json.Marshal(v); err != nil {
		return formatValue(v)
	}
	return v
}

// jsonFloat maps NaN and ±Inf, which JSON cannot represent, to null: "no
// number" is what a script should see, not a failed render.
func jsonFloat(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return f
}
