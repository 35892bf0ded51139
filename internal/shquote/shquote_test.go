package shquote

import (
	"os/exec"
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"host/web1.example.com@EXAMPLE.COM", "host/web1.example.com@EXAMPLE.COM"},
		{"/etc/krb5.keytab", "/etc/krb5.keytab"},
		{"FILE:/tmp/krb5cc_1000", "FILE:/tmp/krb5cc_1000"},
		{"", "''"},
		{"a b", "'a b'"},
		{"svc/a$(id)b@R", "'svc/a$(id)b@R'"},
		{`"; rm -rf ~; "`, `'"; rm -rf ~; "'`},
		{"it's", `'it'\''s'`},
		{"~root", "'~root'"},
		{"=ls", "'=ls'"},
		{"a=b", "a=b"},
		{"x`id`", "'x`id`'"},
		{"a\nb", "'a\nb'"},
		{"*", "'*'"},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestJoinAndKadmin(t *testing.T) {
	if got, want := Join("chmod", "600", "/srv/my keytabs/a.kt"), `chmod 600 '/srv/my keytabs/a.kt'`; got != want {
		t.Errorf("Join = %q, want %q", got, want)
	}
	if got, want := Command("chmod", "600", "/srv/my keytabs/a.kt"), `chmod 600 '/srv/my keytabs/a.kt'`; got != want {
		t.Errorf("Command = %q, want %q", got, want)
	}
	// A terminal would show another path than the one the command names.
	for _, hidden := range []string{"/k/a\x1b[2Kb.kt", "/k/a\nb", "/k/\u202egpj.kt"} {
		if got := Command("chmod", "600", hidden); got != "" {
			t.Errorf("Command with %q = %q, want none", hidden, got)
		}
		if got := Kadmin("getprinc", hidden); got != "" {
			t.Errorf("Kadmin with %q = %q, want none", hidden, got)
		}
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"getprinc", "host/web1.example.com@EXAMPLE.COM"}, `kadmin -q 'getprinc host/web1.example.com@EXAMPLE.COM'`},
		{[]string{"getprinc", "svc/a$(id)b@R"}, `kadmin -q 'getprinc svc/a$(id)b@R'`},
		{[]string{"getprinc", `"; rm -rf ~; "@R`}, `kadmin -q 'getprinc """; rm -rf ~; ""@R"'`},
		{[]string{"ktadd", "-k", "/k/it's.kt", "a b@R"}, `kadmin -q 'ktadd -k /k/it'\''s.kt "a b@R"'`},
	} {
		if got := Kadmin(tc.words...); got != tc.want {
			t.Errorf("Kadmin(%q) = %s, want %s", tc.words, got, tc.want)
		}
	}
}

func TestShown(t *testing.T) {
	if !Shown("svc/a$(id)b@R") || !Shown("ünïcode@R") {
		t.Error("printable text is shown as is")
	}
	for _, s := range []string{"a\x1b[31mb", "a\nb", "a\u202eb", "\xff"} {
		if Shown(s) {
			t.Errorf("Shown(%q) = true", s)
		}
	}
}

// shWords runs script under sh and returns what printf wrote for each
// argument, NUL-separated: what the shell made of the quoted words.
func shWords(t testing.TB, script string) []string {
	t.Helper()
	out, err := exec.Command("sh", "-c", "printf '%s\\0' "+script).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", script, err)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

// ssParse is MIT's ss_parse (src/util/ss/parse.c), the parser kadmin
// applies to a -q query: words split at spaces and tabs; a double quote
// starts or ends a quoted part, in which "" is a literal quote.
func ssParse(line string) ([]string, bool) {
	var out []string
	var cur strings.Builder
	in, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '"' && i+1 < len(line) && line[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"':
			quoted, in = !quoted, true
		case !quoted && (c == ' ' || c == '\t'):
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if quoted {
		return nil, false
	}
	if in {
		out = append(out, cur.String())
	}
	return out, true
}

// FuzzQuote checks that the shell reads every quoted string back as the
// string itself, and kadmin's parser every kadmin word, so that nothing
// in a value can end the word or run a command.
func FuzzQuote(f *testing.F) {
	if _, err := exec.LookPath("sh"); err != nil {
		f.Skip("no sh")
	}
	for _, s := range []string{
		"", "plain", "a b", "svc/a$(id)b@R", `"; rm -rf ~; "`, "it's", "''", `'\''`, "`id`",
		"$HOME", "${IFS}", "a\\", "\\", "~", "-n", "a\tb\nc", "!$", "\x1b]0;pwned\x07", "é\u202e", "*?[a]",
		"#comment", "a;b|c&d>e<f", "\"\"\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.ContainsRune(s, 0) {
			t.Skip("a shell argument cannot hold NUL")
		}
		// Two words, so a value that swallows or splits words shows.
		got := shWords(t, Quote(s)+" end")
		if len(got) != 2 || got[0] != s || got[1] != "end" {
			t.Fatalf("sh read %q as %q", Quote(s), got)
		}
		if strings.ContainsAny(s, "\n\r") {
			return // kadmin -q takes one line
		}
		q := "kadmin -q " + Quote(kadminQuery([]string{"getprinc", s}))
		arg := shWords(t, strings.TrimPrefix(q, "kadmin -q "))
		if len(arg) != 1 {
			t.Fatalf("sh split the query of %s into %q", q, arg)
		}
		words, ok := ssParse(arg[0])
		if !ok || len(words) != 2 || words[0] != "getprinc" || words[1] != s {
			t.Fatalf("kadmin would read %s as %q (ok %t)", q, words, ok)
		}
	})
}
