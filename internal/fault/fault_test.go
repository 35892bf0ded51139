package fault

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

type denied struct{}

func (denied) Error() string     { return "access denied" }
func (denied) FaultClass() Class { return CheckFailed }
func (denied) Hint() string      { return "grant it" }

func TestClassOf(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, OK},
		{"plain", errors.New("x"), Unclassified},
		{"usage", Usagef("h", "bad %s", "flag"), Usage},
		{"wrapped usage", fmt.Errorf("ctx: %w", Usagef("h", "bad")), Usage},
		{"outer wins", New(Unreachable, Usagef("h", "inner"), ""), Unreachable},
		{"classer", fmt.Errorf("run: %w", denied{}), CheckFailed},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), Cancelled},
		{"joined", errors.Join(errors.New("a"), Unreachablef("", "b")), Unreachable},
	}
	for _, c := range cases {
		if got := ClassOf(c.err); got != c.want {
			t.Errorf("%s: ClassOf = %s, want %s", c.name, got, c.want)
		}
	}
}

func TestHintOf(t *testing.T) {
	if got := HintOf(fmt.Errorf("a: %w", New(Usage, Usagef("inner hint", "x"), ""))); got != "inner hint" {
		t.Errorf("HintOf nested = %q", got)
	}
	if got := HintOf(fmt.Errorf("a: %w", denied{})); got != "grant it" {
		t.Errorf("HintOf hinter = %q", got)
	}
	if got := HintOf(errors.New("x")); got != "" {
		t.Errorf("HintOf plain = %q", got)
	}
	if !Silent(New(CheckFailed, nil, "")) || Silent(Usagef("", "x")) {
		t.Error("Silent misreports")
	}
}

func TestExitCodeTable(t *testing.T) {
	// Scripts depend on these numbers; they are documented in every help.
	for c, want := range map[Class]int{OK: 0, CheckFailed: 1, Usage: 2, Unclassified: 2, Unreachable: 3, Cancelled: 130} {
		if got := ExitCode(c); got != want {
			t.Errorf("ExitCode(%s) = %d, want %d", c, got, want)
		}
	}
}
