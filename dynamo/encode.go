package dynamo

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Format is how items are written to the output, one JSON object a line.
type Format string

const (
	// FormatJSON writes plain JSON: numbers as JSON numbers (exact, never
	// through float64), binary as base64 strings, sets as arrays.
	FormatJSON Format = "json"
	// FormatDynamoDBJSON writes DynamoDB's typed JSON ({"pk": {"S": "a"}}),
	// which round-trips every type.
	FormatDynamoDBJSON Format = "dynamodb-json"
)

// Formats lists the formats in help order.
var Formats = []Format{FormatJSON, FormatDynamoDBJSON}

// ParseFormat checks a format's name. Its error is a *FieldError.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", &FieldError{Field: "Format", Msg: fmt.Sprintf("{Format} %q: want json or dynamodb-json", s), Help: "pick {Format} json or {Format} dynamodb-json"}
}

// AppendItem appends item as one JSON object with its keys sorted, so the
// same item always gives the same bytes (outputs can be diffed and
// compared with a plain scan). It does not append the newline.
//
// Hand-written rather than encoding/json over map[string]any: it runs for
// every item of a scan and must not cost more than the network does.
func AppendItem(buf []byte, item map[string]types.AttributeValue, f Format) ([]byte, error) {
	var err error
	var arr [32]string
	buf = append(buf, '{')
	for i, k := range sortedKeys(item, arr[:0]) {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, k)
		buf = append(buf, ':')
		if f == FormatDynamoDBJSON {
			buf, err = appendTyped(buf, item[k])
		} else {
			buf, err = appendPlain(buf, item[k])
		}
		if err != nil {
			return buf, fmt.Errorf("attribute %q: %w", k, err)
		}
	}
	return append(buf, '}'), nil
}

// sortedKeys appends m's keys to keys (a caller's stack array, so that an
// item costs no allocation for them) and sorts them.
func sortedKeys(m map[string]types.AttributeValue, keys []string) []string {
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func appendPlain(buf []byte, av types.AttributeValue) ([]byte, error) {
	var err error
	switch v := av.(type) {
	case *types.AttributeValueMemberS:
		return appendString(buf, v.Value), nil
	case *types.AttributeValueMemberN:
		return appendNumber(buf, v.Value)
	case *types.AttributeValueMemberB:
		return appendBase64(buf, v.Value), nil
	case *types.AttributeValueMemberBOOL:
		return strconv.AppendBool(buf, v.Value), nil
	case *types.AttributeValueMemberNULL:
		return append(buf, "null"...), nil
	case *types.AttributeValueMemberSS:
		buf = append(buf, '[')
		for i, s := range v.Value {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, s)
		}
		return append(buf, ']'), nil
	case *types.AttributeValueMemberNS:
		buf = append(buf, '[')
		for i, n := range v.Value {
			if i > 0 {
				buf = append(buf, ',')
			}
			if buf, err = appendNumber(buf, n); err != nil {
				return buf, err
			}
		}
		return append(buf, ']'), nil
	case *types.AttributeValueMemberBS:
		buf = append(buf, '[')
		for i, b := range v.Value {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendBase64(buf, b)
		}
		return append(buf, ']'), nil
	case *types.AttributeValueMemberL:
		buf = append(buf, '[')
		for i, e := range v.Value {
			if i > 0 {
				buf = append(buf, ',')
			}
			if buf, err = appendPlain(buf, e); err != nil {
				return buf, err
			}
		}
		return append(buf, ']'), nil
	case *types.AttributeValueMemberM:
		var arr [16]string
		buf = append(buf, '{')
		for i, k := range sortedKeys(v.Value, arr[:0]) {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, k)
			buf = append(buf, ':')
			if buf, err = appendPlain(buf, v.Value[k]); err != nil {
				return buf, err
			}
		}
		return append(buf, '}'), nil
	}
	return buf, fmt.Errorf("unsupported attribute value %T", av)
}

func appendTyped(buf []byte, av types.AttributeValue) ([]byte, error) {
	var err error
	open := func(tag string) {
		buf = append(buf, `{"`...)
		buf = append(buf, tag...)
		buf = append(buf, `":`...)
	}
	switch v := av.(type) {
	case *types.AttributeValueMemberS:
		open("S")
		buf = appendString(buf, v.Value)
	case *types.AttributeValueMemberN:
		// DynamoDB JSON carries numbers as strings: exact whatever the
		// precision (38 digits).
		open("N")
		buf = appendString(buf, v.Value)
	case *types.AttributeValueMemberB:
		open("B")
		buf = appendBase64(buf, v.Value)
	case *types.AttributeValueMemberBOOL:
		open("BOOL")
		buf = strconv.AppendBool(buf, v.Value)
	case *types.AttributeValueMemberNULL:
		open("NULL")
		buf = strconv.AppendBool(buf, v.Value)
	case *types.AttributeValueMemberSS:
		open("SS")
		buf = appendStrings(buf, v.Value)
	case *types.AttributeValueMemberNS:
		open("NS")
		buf = appendStrings(buf, v.Value)
	case *types.AttributeValueMemberBS:
		open("BS")
		buf = append(buf, '[')
		for i, b := range v.Value {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendBase64(buf, b)
		}
		buf = append(buf, ']')
	case *types.AttributeValueMemberL:
		open("L")
		buf = append(buf, '[')
		for i, e := range v.Value {
			if i > 0 {
				buf = append(buf, ',')
			}
			if buf, err = appendTyped(buf, e); err != nil {
				return buf, err
			}
		}
		buf = append(buf, ']')
	case *types.AttributeValueMemberM:
		open("M")
		var arr [16]string
		buf = append(buf, '{')
		for i, k := range sortedKeys(v.Value, arr[:0]) {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, k)
			buf = append(buf, ':')
			if buf, err = appendTyped(buf, v.Value[k]); err != nil {
				return buf, err
			}
		}
		buf = append(buf, '}')
	default:
		return buf, fmt.Errorf("unsupported attribute value %T", av)
	}
	return append(buf, '}'), nil
}

func appendStrings(buf []byte, ss []string) []byte {
	buf = append(buf, '[')
	for i, s := range ss {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, s)
	}
	return append(buf, ']')
}

func appendBase64(buf []byte, b []byte) []byte {
	buf = append(buf, '"')
	buf = base64.StdEncoding.AppendEncode(buf, b)
	return append(buf, '"')
}

// appendNumber writes a DynamoDB number as a JSON number, digit for digit.
// DynamoDB returns numbers normalised (no '+', no leading zeros), which
// are JSON numbers; anything else is an error, never a silent change.
func appendNumber(buf []byte, n string) ([]byte, error) {
	if !validJSONNumber(n) {
		return buf, fmt.Errorf("number %q is not a JSON number (use the dynamodb-json format)", n)
	}
	return append(buf, n...), nil
}

func validJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	if i >= len(s) {
		return false
	}
	switch {
	case s[i] == '0':
		i++
	case s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(s)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string the way encoding/json does with
// HTML escaping off: invalid UTF-8 becomes U+FFFD, and U+2028/U+2029 are
// escaped so a line is still one line for every JSON-lines reader.
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
