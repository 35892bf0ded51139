package commands

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Target is one principal for verify to check.
type Target struct {
	Principal string `json:"principal"`
	Keytab    string `json:"keytab"`
	Service   string `json:"service,omitempty"`
}

// maxTargetsFile bounds a --targets file: a fleet of 100,000 targets is a
// few MiB; more is a wrong file.
const maxTargetsFile = 256 << 20

// ReadTargets parses a --targets file: CSV (principal,keytab[,service], an
// optional header row naming those columns) or JSON lines
// ({"principal":…,"keytab":…,"service":…}). The format is chosen by the
// first non-blank character. Errors name the file and line.
func ReadTargets(path string) ([]Target, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--targets %s: %s", path, describeFileError(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTargetsFile+1))
	if err != nil {
		return nil, fmt.Errorf("--targets %s: %s", path, describeFileError(err))
	}
	if len(data) > maxTargetsFile {
		return nil, fmt.Errorf("--targets %s: larger than %d MiB", path, maxTargetsFile>>20)
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	var targets []Target
	if len(trimmed) > 0 && trimmed[0] == '{' {
		targets, err = readTargetsJSONL(data)
	} else {
		targets, err = readTargetsCSV(data)
	}
	if err != nil {
		return nil, fmt.Errorf("--targets %s: %w", path, err)
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("--targets %s: no targets", path)
	}
	return targets, nil
}

func readTargetsJSONL(data []byte) ([]Target, error) {
	var out []Target
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		var t Target
		if err := dec.Decode(&t); err != nil {
			return nil, fmt.Errorf("line %d: %s", line, describeJSONError(err))
		}
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
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
	var out []Target
	first := true
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return out, nil
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("line %d: %s", pe.Line, pe.Err)
			}
			return nil, err
		}
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
		return fmt.Errorf("principal %s: empty keytab path", t.Principal)
	case strings.ContainsAny(t.Principal, " \t"):
		return fmt.Errorf("principal %q contains whitespace", t.Principal)
	}
	return nil
}
