// Package shquote writes the commands krbops puts in hints so that they
// can be pasted into a shell as they are. A principal read from a keytab,
// a path from a --dir walk or a secret name can hold `$(...)`, backquotes,
// quotes or `; rm -rf ~`: interpolated raw into "run: kadmin -q ..." it is
// a command the on-call runs by pasting the hint. Every value a hint puts
// into a command goes through [Quote] (or [Join], or [Kadmin]).
package shquote

import (
	"strings"

	"github.com/krbops/krbops/internal/safetext"
)

// Quote returns s as one word for a POSIX shell (sh, dash, bash, zsh, ksh).
// A string of characters no shell treats specially (letters, digits and
// @%+=:,./_-, as in host/web1.example.com@EXAMPLE.COM or
// /etc/krb5.keytab) is returned as it is, so common hints stay readable.
// Anything else is wrapped in single quotes, inside which a shell expands
// nothing; a single quote in s is closed, escaped and reopened, and the
// empty string is a pair of single quotes:
//
//	it's  ->  'it'\''s'
//
// Quote is exact for every byte string without NUL (a shell argument
// cannot hold NUL). A hint is also shown through safetext.Line, which
// drops control characters: check [Shown] before putting a value that may
// hold them into a command.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	if plain(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Join returns words as one command line, each word quoted by [Quote].
func Join(words ...string) string {
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = Quote(w)
	}
	return strings.Join(quoted, " ")
}

// Shown reports whether s reaches the terminal unchanged: every hint goes
// through safetext.Line, which drops control characters, invalid UTF-8 and
// direction overrides. A command holding a value that is not shown as it
// is would read as, and when pasted run as, a command about another value.
func Shown(s string) bool { return safetext.Line(s) == s }

// Command is [Join] for a hint: the command line, or "" when a word would
// not be shown as it is (see [Shown]). The caller then words its hint
// without the command: a value with control characters is named in the
// report's evidence, never in a command to paste.
func Command(words ...string) string {
	for _, w := range words {
		if !Shown(w) {
			return ""
		}
	}
	return Join(words...)
}

// Kadmin returns the hint command that runs one kadmin query, e.g.
//
//	kadmin -q 'getprinc host/web1.example.com@EXAMPLE.COM'
//
// or "" when a word would not be shown as it is (as [Command]).
//
// The query is parsed twice: by the shell, then by kadmin's own line
// parser (MIT's ss_parse), which splits at spaces and tabs and takes a
// token in double quotes with "" for a literal quote. So each word is
// quoted for kadmin first (see [KadminWord]) and the whole query for the
// shell. Nothing is refused for kadmin's sake: every string without NUL
// or a line break survives both parsers, and the value that has those is
// not shown anyway. MIT kadmin runs a query line that starts with '!' as
// a shell command; the first word is always krbops' own query name.
func Kadmin(words ...string) string {
	for _, w := range words {
		if !Shown(w) {
			return ""
		}
	}
	return "kadmin -q " + Quote(kadminQuery(words))
}

// kadminQuery is the query line kadmin parses back into words.
func kadminQuery(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = KadminWord(w)
	}
	return strings.Join(q, " ")
}

// KadminWord quotes one word for kadmin's line parser: unchanged when it
// holds no space, tab or double quote (and is not empty), else in double
// quotes with each " doubled.
func KadminWord(w string) string {
	if w != "" && !strings.ContainsAny(w, " \t\"") {
		return w
	}
	return `"` + strings.ReplaceAll(w, `"`, `""`) + `"`
}

// plain reports whether s needs no quoting in any POSIX shell. '~' is left
// out (tilde expansion at the start of a word), so are '!' (bash history),
// '^' (old Bourne pipes), '#' (a comment at the start of a word), '{}' and
// '[]' (brace expansion, globs) and '=' leading a word (zsh's =cmd).
func plain(s string) bool {
	if s[0] == '=' {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("@%+=:,./_-", c) >= 0:
		default:
			return false
		}
	}
	return true
}
