package runbook

import "testing"

// Regression (review of the clock steps): With must not write through to
// the evidence map of the result it was called on, or a result used as a
// template leaks evidence into every copy.
func TestWithDoesNotAliasEvidence(t *testing.T) {
	base := Passf("ok").With(Evidence{"a": 1})
	one := base.With(Evidence{"b": 2})
	two := base.With(Evidence{"c": 3})
	if _, leaked := base.Evidence["b"]; leaked {
		t.Fatalf("base evidence changed: %v", base.Evidence)
	}
	if _, leaked := two.Evidence["b"]; leaked {
		t.Fatalf("sibling evidence changed: %v", two.Evidence)
	}
	if one.Evidence["a"] != 1 || one.Evidence["b"] != 2 || two.Evidence["c"] != 3 {
		t.Fatalf("evidence lost: one=%v two=%v", one.Evidence, two.Evidence)
	}
}
