// Package safetext makes text from servers and files safe to show on a
// terminal. A KDC's error text, a principal name read from a keytab, a
// DynamoDB endpoint's message or a path can carry ESC, BEL or other
// control bytes; printed raw they can recolour, retitle or rewrite an
// on-call's terminal, and Unicode direction overrides can make a command
// in a hint read differently from what it runs. Every string krbops shows
// goes through [Line] first.
package safetext

import (
	"strings"
	"unicode/utf8"
)

// Line returns s as one line of plain text: newlines, carriage returns and
// tabs become spaces; every other C0 and C1 control character, DEL,
// Unicode direction overrides and isolates, and invalid UTF-8 bytes are
// dropped. Text without any of those is returned as is (no allocation).
func Line(s string) string {
	if clean(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == utf8.RuneError && size == 1:
			// an invalid byte: drop it
		case r == '\n' || r == '\r' || r == '\t':
			b.WriteByte(' ')
		case unsafe(r):
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			return false
		}
		if c >= 0x80 {
			// Multi-byte: decode the rest properly.
			for _, r := range s[i:] {
				if r == utf8.RuneError || unsafe(r) {
					return false
				}
			}
			return utf8.ValidString(s[i:])
		}
	}
	return true
}

func unsafe(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f:
		return true
	case r >= 0x80 && r <= 0x9f: // C1 controls, e.g. CSI (0x9b)
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		// bidi embeddings, overrides, isolates and marks
		return true
	}
	return false
}
