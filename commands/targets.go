package commands

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/krbops/krbops/internal/readcap"
)

// Target is one principal for verify to check.
type Target struct {
	Principal string `json:"principal"`
	Keytab    string `json:"keytab"`
	Service   string `json:"service,omitempty"`
}

// maxTargetsFile bounds a --targets file: a fleet of 100,000 targets is a
// few MiB, so 64 MiB (about a million targets) is room to spare; more is
// a wrong file, and it is refused before it is read.
const maxTargetsFile = 64 << 20

// maxTargetsLine bounds one line: a principal and a path are at most a
// few KiB. A longer line is not a target; it also keeps a file without
// newlines from becoming one record of 64 MiB.
const maxTargetsLine = 64 << 10

// targetsHint is the hint of a targets file that does not parse.
const targetsHint = `one target per line: principal,keytab[,service] or {"principal":…,"keytab":…}`

// ReadTargets parses a --targets file: CSV (principal,keytab[,service], an
// optional header row naming those columns) or JSON lines
// ({"principal":…,"keytab":…,"service":…}). The format is chosen by the
// first non-blank character. Every error is a usage error (exit 2) naming
// the file and, for its content, the line, with a hint.
func ReadTargets(path string) ([]Target, error) {
	data, err := readcap.ReadFile(path, maxTargetsFile)
	if err != nil {
		hint := "pass a readable targets file"
		switch {
		case errors.Is(err, readcap.ErrNotRegular):
			hint = "pass a regular file: krbops does not read targets from a pipe or device (write them to a file first)"
		case errors.Is(err, readcap.ErrTooLarge):
			hint = fmt.Sprintf("split the fleet into files of at most %s and run verify per file", readcap.Bytes(maxTargetsFile))
		}
		return nil, usageError(fmt.Errorf("--targets %s: %s", path, describeFileError(err)), hint)
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff")) // a byte-order mark some editors write
	if line, err := checkTargetsText(data); err != nil {
		return nil, usageError(fmt.Errorf("--targets %s: line %d: %w", path, line, err), targetsHint)
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	var targets []Target
	if len(trimmed) > 0 && trimmed[0] == '{' {
		targets, err = readTargetsJSONL(data)
	} else {
		targets, err = readTargetsCSV(data)
	}
	if err != nil {
		return nil, usageError(fmt.Errorf("--targets %s: %w", path, err), targetsHint)
	}
	if len(targets) == 0 {
		return nil, usageError(fmt.Errorf("--targets %s: no targets", path), targetsHint)
	}
	return targets, nil
}

// checkTargetsText refuses what no targets file holds, before either
// parser sees it: NUL bytes (a binary file) and overlong lines. It returns
// the 1-based line of the problem.
func checkTargetsText(data []byte) (int, error) {
	line := 1
	for len(data) > 0 {
		end := bytes.IndexByte(data, '\n')
		if end < 0 {
			end = len(data)
		}
		l := data[:end]
		if len(l) > maxTargetsLine {
			return line, fmt.Errorf("longer than %s: not a targets file", readcap.Bytes(maxTargetsLine))
		}
		if i := bytes.IndexByte(l, 0); i >= 0 {
			return line, fmt.Errorf("NUL byte at column %d: a binary file, not a targets file", i+1)
		}
		data = data[min(end+1, len(data)):]
		line++
	}
	return 0, nil
}

func readTargetsJSONL(data []byte) ([]Target, error) {
	return decodeJSONL(data, func(line int, t *Target) error { return t.validate() },
		func(line int, err error) error { return fmt.Errorf("line %d: %w", line, err) })
}

// decodeJSONL decodes one T per line of data that is neither blank nor a
// # comment, refusing unknown fields and a second object on a line, and
// checks each with check. Every error goes through wrap with its 1-based
// line number, so each targets format words its own "FILE:LINE".
func decodeJSONL[T any](data []byte, check func(line int, t *T) error, wrap func(line int, err error) error) ([]T, error) {
	var out []T
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), maxTargetsLine+1)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		var t T
		if err := dec.Decode(&t); err != nil {
			return nil, wrap(line, errors.New(describeJSONError(err)))
		}
		if dec.More() {
			return nil, wrap(line, errors.New("more than one JSON object"))
		}
		if err := check(line, &t); err != nil {
			return nil, wrap(line, err)
		}
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		// The callers refused long lines already; this is a read error.
		return nil, wrap(line+1, err)
	}
	return out, nil
}

func describeJSONError(err error) string {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return "not valid JSON: " + se.Error()
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "not valid JSON: truncated object"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func readTargetsCSV(data []byte) ([]Target, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.Comment = '#'
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	r.ReuseRecord = true
	var out []Target
	first := true
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			// FieldPos is only defined after a successful Read: the
			// position of a broken record is in the ParseError.
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				msg := fmt.Sprintf("line %d, column %d: %s", pe.Line, pe.Column, pe.Err)
				if pe.StartLine > 0 && pe.StartLine != pe.Line {
					msg += fmt.Sprintf(" (in the record that starts on line %d: a quote left open?)", pe.StartLine)
				}
				return nil, errors.New(msg)
			}
			return nil, err
		}
		line, _ := r.FieldPos(0)
		if first {
			first = false
			if strings.EqualFold(strings.TrimSpace(rec[0]), "principal") {
				continue // header row
			}
		}
		if len(rec) < 2 || len(rec) > 3 {
			return nil, fmt.Errorf("line %d: want principal,keytab[,service], got %d fields", line, len(rec))
		}
		t := Target{Principal: strings.TrimSpace(rec[0]), Keytab: strings.TrimSpace(rec[1])}
		if len(rec) == 3 {
			t.Service = strings.TrimSpace(rec[2])
		}
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, t)
	}
}

func (t Target) validate() error {
	switch {
	case t.Principal == "":
		return errors.New("empty principal")
	case t.Keytab == "":
		return fmt.Errorf("principal %s: empty keytab path", quoteField(t.Principal))
	case strings.ContainsAny(t.Principal, " \t"):
		return fmt.Errorf("principal %s contains whitespace", quoteField(t.Principal))
	}
	for _, f := range []struct{ name, v string }{{"principal", t.Principal}, {"keytab path", t.Keytab}, {"service", t.Service}} {
		if i := strings.IndexFunc(f.v, isControl); i >= 0 {
			return fmt.Errorf("%s %s has control character 0x%02x at byte %d", f.name, quoteField(f.v), f.v[i], i+1)
		}
	}
	// Principal names travel to the KDC and into reports as text; a path
	// may be any bytes the file system allows.
	for _, f := range []struct{ name, v string }{{"principal", t.Principal}, {"service", t.Service}} {
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("%s %s is not valid UTF-8", f.name, quoteField(f.v))
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// quoteField shows a value from the file in an error: Go-quoted, so
// control bytes and invalid UTF-8 show as escapes, and cut to a length
// that fits one line.
func quoteField(s string) string {
	const max = 80
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
