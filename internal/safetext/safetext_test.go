package safetext

import "testing"

func TestLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"", ""},
		{"KDC_ERR \x1b[31mred\x1b[0m", "KDC_ERR [31mred[0m"},
		{"bell\x07 and title \x1b]0;pwned\x07", "bell and title ]0;pwned"},
		{"two\nlines\r\tand a tab", "two lines  and a tab"},
		{"c1 \u009b31m csi", "c1 31m csi"},
		{"del\x7f", "del"},
		{"rm -rf \u202e/ etc", "rm -rf / etc"},
		{"invalid \xff\xfe utf8", "invalid  utf8"},
		{"ünïcödé ok ✓", "ünïcödé ok ✓"},
		{"nul\x00byte", "nulbyte"},
	} {
		if got := Line(tc.in); got != tc.want {
			t.Errorf("Line(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLineDoesNotAllocateForCleanText(t *testing.T) {
	s := "host/web1.example.com@EXAMPLE.COM: kvno 3 — ok"
	if n := testing.AllocsPerRun(100, func() { _ = Line(s) }); n != 0 {
		t.Errorf("%v allocations for clean text", n)
	}
}

func FuzzLine(f *testing.F) {
	f.Add("a\x1b[0mb")
	f.Fuzz(func(t *testing.T, s string) {
		out := Line(s)
		if !clean(out) {
			t.Fatalf("Line(%q) = %q is not clean", s, out)
		}
		if Line(out) != out {
			t.Fatalf("Line is not idempotent on %q", s)
		}
	})
}
