package output

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/runbook"
)

type jsonOddName string

type jsonOddStruct struct {
	A int               `json:"a"`
	B map[string]string `json:"b"`
	C []int             `json:"c"`
}

// TestFindingsJSONMatchesEncodingJSON holds the streamed findings to the
// bytes encoding/json writes for the same report, over every kind of
// evidence value and every string that needs escaping.
func TestFindingsJSONMatchesEncodingJSON(t *testing.T) {
	odd := []string{"", "plain", "quote \" and \\ backslash", "tab\tnew\nline\r", "\x00\x01\x1f\x7f", "<html> & 'x'",
		"héllo ünïcode", "bad utf8 \xff\xfe", "line sep \u2028 \u2029", "[not {json", "emoji 🔑"}
	rep := lintFixtureReport()
	rep.Findings = nil
	for i, s := range odd {
		rep.Findings = append(rep.Findings, runbook.Finding{Rule: "AU00" + s, Severity: runbook.Severity("warn"), File: s, Principal: s + "@R",
			Message: s, Hint: s, Evidence: runbook.Evidence{s: s, "k" + s: i}})
	}
	rep.Findings = append(rep.Findings,
		runbook.Finding{Rule: "AU002", Principal: "alice@R"},
		runbook.Finding{Rule: "AU003", Evidence: runbook.Evidence{}},
		runbook.Finding{Rule: "AU004", Severity: runbook.Severity("fail"), Evidence: runbook.Evidence{
			"int": 1, "int64": int64(-7), "int32": int32(3), "uint32": uint32(4), "uint64": uint64(1 << 63), "int8": int8(-1),
			"uint8": uint8(9), "bool": true, "false": false, "nil": nil, "float": 1.5, "bigfloat": 1e21, "tiny": 1e-7,
			"nan": math.NaN(), "inf": math.Inf(1), "f32": float32(0.1), "time": time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600)),
			"dur": 1500 * time.Millisecond, "err": errors.New("boom <x>"), "strs": []string{"a", "b\"c"}, "nilstrs": []string(nil),
			"empty": []string{}, "nested": []any{1, "two", []any{3.5, nil}, map[string]any{"z": 1, "a": []int{1, 2}}, []any{}},
			"map": map[string]string{"b": "2", "a": "1"}, "struct": jsonOddStruct{A: 1, B: map[string]string{"k": "v"}, C: []int{1}},
			"emptymap": map[string]int{}, "named": jsonOddName("n<>"), "ints": []int64{1, 2, 3}, "ptrnil": (*int)(nil),
		}},
	)
	check := func(rep *runbook.Report) {
		t.Helper()
		var want, got bytes.Buffer
		if err := EncodeJSON(&want, ToJSON(rep)); err != nil {
			t.Fatal(err)
		}
		if err := writeReportJSON(&got, rep); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			g, w := strings.Split(got.String(), "\n"), strings.Split(want.String(), "\n")
			for i := range min(len(g), len(w)) {
				if g[i] != w[i] {
					t.Fatalf("line %d differs:\n got %q\nwant %q", i+1, g[i], w[i])
				}
			}
			t.Fatalf("lengths differ: got %d lines, want %d", len(g), len(w))
		}
	}
	check(rep)
	rep.Findings = nil
	check(rep)
	check(fixtureReport())
}
