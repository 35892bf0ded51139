package commands

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/rotate"
)

// RotateTarget is one line of rotate's --targets file.
type RotateTarget struct {
	Principal string `json:"principal"`
	Keytab    string `json:"keytab"`
	Role      string `json:"role"`
	Cluster   string `json:"cluster"`
	Secret    string `json:"secret,omitempty"`
	Backend   string `json:"backend,omitempty"`
	Line      int    `json:"-"`
}

// rotateTargetColumns are the CSV header's names, in the documented order.
var rotateTargetColumns = []string{"principal", "keytab", "role", "cluster", "secret", "backend"}

const rotateTargetsHint = `a CSV file with the header principal,keytab,role,cluster[,secret][,backend], or JSON lines {"principal":…,"keytab":…,"role":…,"cluster":…}`

// ReadRotateTargets reads rotate's --targets file. It steers key changes,
// so it must be a regular file owned by this user (or root) that no other
// user may write. Every problem is a usage error (exit 2) naming the file
// and, for its content, the line and field; nothing has started then.
//
// defaultRealm qualifies a principal without a realm before duplicates are
// looked for, so svc and svc@REALM are the same principal; "" compares
// the names as written.
func ReadRotateTargets(path, defaultRealm string) ([]RotateTarget, error) {
	data, err := durable.ReadTrusted(path, maxTargetsFile)
	if err != nil {
		hint := "pass a regular, readable targets file"
		if errors.Is(err, durable.ErrUntrusted) {
			hint = "keep the targets file owned by the user who rotates (or root), writable by no one else (chmod go-w), and not a symbolic link"
		}
		return nil, usageError(fmt.Errorf("--targets %s: %s", path, describeFileError(err)), hint)
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	if line, err := checkTargetsText(data); err != nil {
		return nil, usageError(fmt.Errorf("--targets %s:%d: %w", path, line, err), rotateTargetsHint)
	}
	var ts []RotateTarget
	if looksLikeJSONLines(data) {
		ts, err = readRotateJSONL(data)
	} else {
		ts, err = readRotateCSV(data)
	}
	if err == nil && len(ts) == 0 {
		return nil, usageError(fmt.Errorf("--targets %s: no targets", path), rotateTargetsHint)
	}
	if err == nil {
		err = checkDuplicates(ts, defaultRealm)
	}
	if err != nil {
		return nil, usageError(fmt.Errorf("--targets %s:%w", path, err), rotateTargetsHint)
	}
	return ts, nil
}

// lineError is an error of line n of the file: "N: ..." so the caller's
// "FILE:" prefix makes it FILE:N.
func lineError(n int, format string, a ...any) error {
	return fmt.Errorf("%d: %s", n, fmt.Sprintf(format, a...))
}

func readRotateJSONL(data []byte) ([]RotateTarget, error) {
	return decodeJSONL(data, func(line int, t *RotateTarget) error { t.Line = line; return t.validate() },
		func(line int, err error) error { return lineError(line, "%s", err) })
}

func readRotateCSV(data []byte) ([]RotateTarget, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.Comment = '#'
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	var cols []string
	var out []RotateTarget
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return out, nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return nil, lineError(pe.Line, "column %d: %s", pe.Column, pe.Err)
		}
		if err != nil {
			return nil, err
		}
		line, _ := r.FieldPos(0)
		if cols == nil {
			if cols, err = csvHeader(rec); err != nil {
				return nil, lineError(line, "%s", err)
			}
			continue
		}
		if len(rec) != len(cols) {
			return nil, lineError(line, "%d fields, the header has %d (%s)", len(rec), len(cols), strings.Join(cols, ","))
		}
		t := RotateTarget{Line: line}
		for i, c := range cols {
			v := strings.TrimSpace(rec[i])
			switch c {
			case "principal":
				t.Principal = v
			case "keytab":
				t.Keytab = v
			case "role":
				t.Role = v
			case "cluster":
				t.Cluster = v
			case "secret":
				t.Secret = v
			case "backend":
				t.Backend = v
			}
		}
		if err := t.validate(); err != nil {
			return nil, lineError(line, "%s", err)
		}
		out = append(out, t)
	}
}

// csvHeader checks the header row: known names, each once, the four
// required ones present.
func csvHeader(rec []string) ([]string, error) {
	var cols []string
	for _, f := range rec {
		c := strings.ToLower(strings.TrimSpace(f))
		switch {
		case !slices.Contains(rotateTargetColumns, c):
			return nil, fmt.Errorf("header: unknown column %s (a header row naming the columns comes first)", quoteField(f))
		case slices.Contains(cols, c):
			return nil, fmt.Errorf("header: column %s twice", c)
		}
		cols = append(cols, c)
	}
	for _, c := range rotateTargetColumns[:4] {
		if !slices.Contains(cols, c) {
			return nil, fmt.Errorf("header: no %s column", c)
		}
	}
	return cols, nil
}

func (t RotateTarget) validate() error {
	for _, f := range []struct{ name, v string }{{"principal", t.Principal}, {"keytab", t.Keytab}, {"role", t.Role}, {"cluster", t.Cluster}} {
		if f.v == "" {
			return fmt.Errorf("field %s: empty", f.name)
		}
	}
	for _, f := range []struct{ name, v string }{{"principal", t.Principal}, {"keytab", t.Keytab}, {"role", t.Role},
		{"cluster", t.Cluster}, {"secret", t.Secret}, {"backend", t.Backend}} {
		if i := strings.IndexFunc(f.v, isControl); i >= 0 {
			return fmt.Errorf("field %s: %s has control character 0x%02x at byte %d", f.name, quoteField(f.v), f.v[i], i+1)
		}
		if f.name != "keytab" && !utf8.ValidString(f.v) {
			return fmt.Errorf("field %s: %s is not valid UTF-8", f.name, quoteField(f.v))
		}
	}
	switch {
	case strings.ContainsAny(t.Principal, " \t"):
		return fmt.Errorf("field principal: %s contains whitespace", quoteField(t.Principal))
	case !rotate.Role(t.Role).Valid():
		return fmt.Errorf("field role: %s is not client, server or both", quoteField(t.Role))
	case t.Backend != "" && t.Backend != rotate.BackendKpasswd && t.Backend != rotate.BackendKpasswdAdmin && t.Backend != rotate.BackendKadmin:
		return fmt.Errorf("field backend: %s is not kpasswd, kpasswd-admin or kadmin", quoteField(t.Backend))
	}
	return nil
}

// checkDuplicates refuses a principal listed twice: the batch would
// rotate it twice.
func checkDuplicates(ts []RotateTarget, defaultRealm string) error {
	seen := map[string]int{}
	for _, t := range ts {
		p := t.Principal
		if _, r := kdcops.SplitPrincipal(p); r == "" && defaultRealm != "" {
			p += "@" + defaultRealm
		}
		if first, ok := seen[p]; ok {
			return lineError(t.Line, "field principal: %s is already on line %d", quoteField(t.Principal), first)
		}
		seen[p] = t.Line
	}
	return nil
}

// looksLikeJSONLines decides the format from the first line that is
// neither blank nor a # comment: a JSON-lines file may open with a
// comment, which a CSV file may too.
func looksLikeJSONLines(data []byte) bool {
	for line := range bytes.Lines(data) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		return line[0] == '{'
	}
	return false
}
