package kdcops_test

import (
	"os"
	"strings"
	"testing"

	"github.com/krbops/krbops/kdcops"
)

// Issue 3 must-show: docs/lint-rules.md (linked from docs/klist-lint.md) explains every rule, with the
// severity the code gives it, and what to do.
func TestDocsExplainEveryRule(t *testing.T) {
	doc, err := os.ReadFile("../docs/lint-rules.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := strings.Split(string(doc), "\n#### ")
	found := map[string]string{}
	for _, s := range sections[1:] {
		id, _, _ := strings.Cut(s, " ")
		found[id] = s
	}
	for _, r := range kdcops.Rules {
		s, ok := found[r.ID]
		if !ok {
			t.Errorf("docs/lint-rules.md has no section for %s", r.ID)
			continue
		}
		heading, body, _ := strings.Cut(s, "\n")
		if !strings.HasSuffix(heading, "("+string(r.Severity)+")") {
			t.Errorf("%s: heading %q does not end with its severity (%s)", r.ID, heading, r.Severity)
		}
		if !strings.Contains(body, "**Do:**") {
			t.Errorf("%s: section does not say what to do", r.ID)
		}
	}
	if len(found) != len(kdcops.Rules) {
		t.Errorf("docs have %d rule sections, the catalogue %d rules", len(found), len(kdcops.Rules))
	}
}
