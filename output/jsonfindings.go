package output

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/krbops/krbops/runbook"
)

// A report of a fleet (audit: one finding per principal, 100,000 and
// more) spends most of its rendering in encoding/json: reflection over
// every evidence map, then a second pass over the whole document to
// indent it. renderJSON therefore encodes the envelope with encoding/json
// and streams the findings itself, indented as it goes, in exactly the
// bytes EncodeJSON would write (TestFindingsJSONMatchesEncodingJSON):
// plain strings, integers and booleans are written directly; anything
// else (floats, escapes, other types) goes through encoding/json.

// findingsTail is how the envelope ends when its findings are empty.
const findingsTail = "\n  \"findings\": []\n}\n"

func writeReportJSON(w io.Writer, rep *runbook.Report) error {
	env := toJSON(rep, false)
	var head bytes.Buffer
	if err := EncodeJSON(&head, env); err != nil {
		return err
	}
	if len(rep.Findings) == 0 {
		if _, err := w.Write(head.Bytes()); err != nil {
			return fmt.Errorf("write json report: %w", err)
		}
		return nil
	}
	h, ok := bytes.CutSuffix(head.Bytes(), []byte(findingsTail))
	if !ok {
		return fmt.Errorf("write json report: unexpected envelope end")
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	bw.Write(h)
	e := &findingsEncoder{w: bw}
	bw.WriteString("\n  \"findings\": [")
	for i := range rep.Findings {
		if i > 0 {
			bw.WriteByte(',')
		}
		e.finding(&rep.Findings[i])
	}
	bw.WriteString("\n  ]\n}\n")
	if e.err != nil {
		return e.err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write json report: %w", err)
	}
	return nil
}

type findingsEncoder struct {
	w    *bufio.Writer
	num  []byte
	keys []string
	buf  bytes.Buffer
	err  error // the first value encoding/json refused
}

func (e *findingsEncoder) finding(f *runbook.Finding) {
	const in = "\n      " // fields of a finding: depth 3
	e.w.WriteString("\n    {")
	for _, kv := range [...][2]string{{"rule", f.Rule}, {"severity", string(f.Severity)}, {"file", f.File},
		{"principal", f.Principal}, {"message", f.Message}, {"hint", f.Hint}} {
		e.w.WriteString(in)
		e.str(kv[0])
		e.w.WriteString(": ")
		e.str(kv[1])
		e.w.WriteByte(',')
	}
	e.w.WriteString(in + "\"evidence\": ")
	if len(f.Evidence) == 0 {
		e.w.WriteString("{}")
	} else {
		e.keys = e.keys[:0]
		for k := range f.Evidence {
			e.keys = append(e.keys, k)
		}
		slices.Sort(e.keys)
		e.w.WriteByte('{')
		for i, k := range e.keys {
			if i > 0 {
				e.w.WriteByte(',')
			}
			e.w.WriteString("\n        ")
			e.str(k)
			e.w.WriteString(": ")
			e.value(jsonValue(f.Evidence[k]), 4)
		}
		e.w.WriteString(in + "}")
	}
	e.w.WriteString("\n    }")
}

// value writes v, already normalised by jsonValue, as the value of a
// member or element at depth (the indentation of its line).
func (e *findingsEncoder) value(v any, depth int) {
	switch x := v.(type) {
	case string:
		e.str(x)
		return
	case bool:
		e.w.WriteString(strconv.FormatBool(x))
		return
	case int:
		e.int(int64(x))
		return
	case int64:
		e.int(x)
		return
	case int32:
		e.int(int64(x))
		return
	case uint32:
		e.int(int64(x))
		return
	case nil:
		e.w.WriteString("null")
		return
	case []any:
		if x == nil {
			e.w.WriteString("null")
			return
		}
		if len(x) == 0 {
			e.w.WriteString("[]")
			return
		}
		e.w.WriteByte('[')
		for i, it := range x {
			if i > 0 {
				e.w.WriteByte(',')
			}
			e.newline(depth + 1)
			e.value(it, depth+1)
		}
		e.newline(depth)
		e.w.WriteByte(']')
		return
	}
	e.slow(v, depth)
}

func (e *findingsEncoder) newline(depth int) {
	e.w.WriteByte('\n')
	for range depth {
		e.w.WriteString("  ")
	}
}

func (e *findingsEncoder) int(n int64) {
	e.num = strconv.AppendInt(e.num[:0], n, 10)
	e.w.Write(e.num)
}

// str writes s quoted: directly when encoding/json would copy it as it
// is (printable ASCII without quote or backslash), else through it.
func (e *findingsEncoder) str(s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			e.slow(s, 0)
			return
		}
	}
	e.w.WriteByte('"')
	e.w.WriteString(s)
	e.w.WriteByte('"')
}

// slow encodes v with encoding/json as EncodeJSON would at depth.
func (e *findingsEncoder) slow(v any, depth int) {
	e.buf.Reset()
	enc := json.NewEncoder(&e.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		if e.err == nil {
			e.err = fmt.Errorf("write json report: %w", err)
		}
		e.w.WriteString("null")
		return
	}
	compact := bytes.TrimSuffix(e.buf.Bytes(), []byte("\n"))
	if bytes.IndexAny(compact, "[{") < 0 {
		e.w.Write(compact)
		return
	}
	var ind bytes.Buffer
	prefix := string(bytes.Repeat([]byte("  "), depth))
	if err := json.Indent(&ind, compact, prefix, "  "); err != nil {
		if e.err == nil {
			e.err = fmt.Errorf("write json report: %w", err)
		}
	}
	e.w.Write(ind.Bytes())
}
