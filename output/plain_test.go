package output

import (
	"bytes"
	"strings"
	"testing"
)

func TestPlainColumns(t *testing.T) {
	out := render(t, "plain", fixtureReport(), Options{Color: true})
	if bytes.IndexByte(out, 0x1b) >= 0 {
		t.Fatal("plain output contains an ESC byte")
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d lines, want 5 steps + summary:\n%s", len(lines), out)
	}
	for i, line := range lines {
		fields := strings.Split(line, "\t")
		if len(fields) != 6 {
			t.Errorf("line %d has %d fields, want 6: %q", i+1, len(fields), line)
		}
		for j, f := range fields {
			if f == "" {
				t.Errorf("line %d field %d is empty", i+1, j+1)
			}
		}
	}
	last := strings.Split(lines[len(lines)-1], "\t")
	if last[0] != "#" || last[1] != "summary" || last[2] != "fail" {
		t.Errorf("summary line = %q", lines[len(lines)-1])
	}
	if first := strings.Split(lines[0], "\t"); first[1] != "config.load" || first[2] != "pass" || first[3] != "12.345" {
		t.Errorf("first line = %q", lines[0])
	}
}
