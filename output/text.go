package output

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/krbops/krbops/runbook"
)

// errNilReport is returned by every renderer for a nil report rather than
// panicking halfway through writing.
var errNilReport = errors.New("nothing to render: report is nil")

// oneLine makes s safe for a one-line field. Tabs and line breaks become
// spaces so a field never splits a plain line or a table row; other control
// characters (an ESC from a KDC's error text, say) become U+FFFD so remote
// data cannot inject terminal escapes.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f':
			return ' '
		case unicode.IsControl(r):
			return unicode.ReplacementChar
		}
		return r
	}, s)
}

// orDash returns "-" for an empty field so that a column is never blank to
// the eye and whitespace-splitting tools still count it.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// durationMS is the one conversion from time.Duration to the
// milliseconds number in plain and JSON output. Rounding to the microsecond
// keeps the decimal short (12.345, not 12.345000000000001).
func durationMS(d time.Duration) float64 {
	return float64(d.Round(time.Microsecond).Microseconds()) / 1000
}

// formatMS prints a durationMS value the way encoding/json does for
// integral and short fractional values, so plain and JSON agree.
func formatMS(d time.Duration) string {
	return strconv.FormatFloat(durationMS(d), 'f', -1, 64)
}

// humanDuration is the one duration format for people (table, markdown):
// "<1ms", "250ms", "4.2s", "1m5s".
func humanDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Millisecond:
		return "<1ms"
	}
	ms := d.Round(time.Millisecond)
	switch {
	case ms < time.Second:
		return strconv.FormatInt(ms.Milliseconds(), 10) + "ms"
	case d.Round(100*time.Millisecond) < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	default:
		return d.Round(time.Second).String()
	}
}

// timestamp is the one machine-readable time format: RFC 3339 with
// nanoseconds, always UTC so reports from different hosts sort together.
func timestamp(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// humanTime is a UTC time to the second, for headers people read.
func humanTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}

// summaryCounts says "2 pass, 1 fail, 0 warn, 0 skip, 0 error": failures
// come second because that is what the reader scans for.
func summaryCounts(s runbook.Summary) string {
	return fmt.Sprintf("%d pass, %d fail, %d warn, %d skip, %d error",
		s.Pass, s.Fail, s.Warn, s.Skip, s.Error)
}

// evidencePairs returns "key=value" for each evidence entry in sorted key
// order.
func evidencePairs(ev runbook.Evidence) []string {
	pairs := make([]string, 0, len(ev))
	for _, k := range ev.Keys() {
		pairs = append(pairs, oneLine(k)+"="+formatValue(ev[k]))
	}
	return pairs
}

// formatValue renders one evidence value as text. Units follow the JSON
// conventions (times in RFC 3339 UTC, durations in seconds) so the text
// and JSON forms of a report can be compared by eye.
func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return quoteIfNeeded(x)
	case time.Time:
		return timestamp(x)
	case time.Duration:
		return formatFloat(x.Seconds(), 64)
	case float64:
		return formatFloat(x, 64)
	case float32:
		return formatFloat(float64(x), 32)
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return fmt.Sprint(x)
	case error:
		return quoteIfNeeded(x.Error())
	case fmt.Stringer:
		return quoteIfNeeded(x.String())
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return "[]"
		}
		items := make([]string, rv.Len())
		for i := range items {
			items[i] = formatValue(rv.Index(i).Interface())
		}
		return "[" + strings.Join(items, ",") + "]"
	case reflect.Pointer:
		if rv.IsNil() {
			return "null"
		}
		return formatValue(rv.Elem().Interface())
	}
	return quoteIfNeeded(fmt.Sprint(v))
}

func formatFloat(f float64, bits int) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, bits) // NaN, +Inf, -Inf
	}
	return strconv.FormatFloat(f, 'f', -1, bits)
}

// quoteIfNeeded Go-quotes a string that would be ambiguous in a
// "key=value key=value" or "[a,b]" list, or that holds control characters.
func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(`"=,[]`, r)
	}) {
		return strconv.Quote(s)
	}
	return s
}

// findingText is a finding's message led by its principal, for the
// one-line formats that have no principal column.
func findingText(f runbook.Finding) string {
	if f.Principal == "" {
		return f.Message
	}
	return f.Principal + ": " + f.Message
}

// findingCounts says "3 findings (1 fail, 2 warn, 0 info)".
func findingCounts(fs []runbook.Finding) string {
	c := runbook.CountFindings(fs)
	noun := "findings"
	if c.Total() == 1 {
		noun = "finding"
	}
	return fmt.Sprintf("%d %s (%d fail, %d warn, %d info)", c.Total(), noun, c.Fail, c.Warn, c.Info)
}
