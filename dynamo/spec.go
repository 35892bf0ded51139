package dynamo

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Spec is what to read: one Query, or a Scan split into Segments.
type Spec struct {
	Table        string
	Index        string // optional: a global or local secondary index
	Scan         bool   // Scan instead of Query
	Segments     int    // Scan's TotalSegments (≥ 1); always 1 for a Query
	KeyCondition string // Query only
	Filter       string
	Projection   string
	Names        map[string]string               // ExpressionAttributeNames
	Values       map[string]types.AttributeValue // ExpressionAttributeValues
	Consistent   bool
	PageSize     int32 // Limit per request; 0 = the service's 1 MB pages
}

// Operation is "Scan" or "Query", as in the IAM action dynamodb:<Operation>.
func (s Spec) Operation() string {
	if s.Scan {
		return "Scan"
	}
	return "Query"
}

// Validate checks what can be checked without asking DynamoDB. Its
// errors are *FieldError.
func (s Spec) Validate() error {
	bad := func(field, msg string) error { return &FieldError{Field: field, Msg: msg} }
	switch {
	case s.Table == "":
		return bad("Spec.Table", "{Spec.Table} is required")
	case s.Scan && s.KeyCondition != "":
		return bad("Spec.KeyCondition", "{Spec.KeyCondition} is for a query; a {Spec.Scan} reads every item (use {Spec.Filter})")
	case !s.Scan && s.KeyCondition == "":
		return bad("Spec.KeyCondition", "a query needs {Spec.KeyCondition} (or pass {Spec.Scan})")
	case s.Segments < 1:
		return bad("Spec.Segments", fmt.Sprintf("{Spec.Segments} %d must be at least 1", s.Segments))
	case !s.Scan && s.Segments != 1:
		return bad("Spec.Segments", "{Spec.Segments} is for a {Spec.Scan}; a query is read as one segment")
	case s.Segments > 1000000:
		// DynamoDB's own limit on TotalSegments.
		return bad("Spec.Segments", fmt.Sprintf("{Spec.Segments} %d is above DynamoDB's limit of 1000000", s.Segments))
	case s.PageSize < 0:
		return bad("Spec.PageSize", fmt.Sprintf("{Spec.PageSize} %d must not be negative", s.PageSize))
	}
	for _, k := range slices.Sorted(maps.Keys(s.Values)) {
		if !strings.HasPrefix(k, ":") {
			return bad("Spec.Values", fmt.Sprintf("{Spec.Values}: placeholder %q must start with ':'", k))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Names)) {
		if !strings.HasPrefix(k, "#") {
			return bad("Spec.Names", fmt.Sprintf("{Spec.Names}: placeholder %q must start with '#'", k))
		}
	}
	return nil
}

// ParseValues reads ExpressionAttributeValues given as DynamoDB JSON, as
// the AWS CLI takes them: {":pk": {"S": "a"}, ":n": {"N": "5"}}. Its
// errors are *FieldError.
func ParseValues(s string) (map[string]types.AttributeValue, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	bad := func(msg string) error {
		return &FieldError{Field: "Spec.Values", Msg: msg, Help: `for example {Spec.Values} '{":pk": {"S": "a"}, ":n": {"N": "5"}}'`}
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, bad(fmt.Sprintf("{Spec.Values} is not a JSON object: %v", err))
	}
	m, err := attributevalue.UnmarshalMapJSON([]byte(s))
	if err != nil {
		return nil, bad(fmt.Sprintf("{Spec.Values} is not DynamoDB JSON (e.g. {\":pk\": {\"S\": \"a\"}}): %v", err))
	}
	for k, v := range m {
		if v == nil {
			return nil, bad(fmt.Sprintf("{Spec.Values}: %s has no type (e.g. {\"S\": \"a\"})", k))
		}
	}
	return m, nil
}

// ParseNames reads ExpressionAttributeNames: {"#n": "name"}. Its errors
// are *FieldError.
func ParseNames(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, &FieldError{Field: "Spec.Names", Msg: fmt.Sprintf("{Spec.Names} is not a JSON object of strings (e.g. {\"#s\": \"status\"}): %v", err),
			Help: `for example {Spec.Names} '{"#s": "status"}'`}
	}
	return m, nil
}

// Expression parts, as named in a BindingError.
const (
	partKeyCondition = "key_condition"
	partFilter       = "filter"
	partProjection   = "projection"
	partNames        = "names"
	partValues       = "values"
)

// partFields maps an expression part to its Spec field, which a
// Difference names.
var partFields = map[string]string{
	partKeyCondition: "Spec.KeyCondition",
	partFilter:       "Spec.Filter",
	partProjection:   "Spec.Projection",
	partNames:        "Spec.Names",
	partValues:       "Spec.Values",
}

// expressionHashes hashes each expression part on its own, so a refused
// resume can say which part changed, and all of them together. Hashes
// rather than the text: the values may hold customer identifiers, and the
// checkpoint only needs to recognise them.
func (s Spec) expressionHashes() (map[string]string, string) {
	names, _ := json.Marshal(s.Names) // sorted keys: canonical
	values := []byte("null")
	if len(s.Values) > 0 {
		values, _ = AppendItem(nil, s.Values, FormatDynamoDBJSON) // sorted keys: canonical
	}
	parts := map[string][]byte{
		partKeyCondition: []byte(s.KeyCondition),
		partFilter:       []byte(s.Filter),
		partProjection:   []byte(s.Projection),
		partNames:        names,
		partValues:       values,
	}
	out := make(map[string]string, len(parts))
	keys := make([]string, 0, len(parts))
	for k, v := range parts {
		out[k] = sha(v)
		keys = append(keys, k)
	}
	sort.Strings(keys)
	all := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(all, "%s=%s\n", k, out[k])
	}
	return out, "sha256:" + hex.EncodeToString(all.Sum(nil))
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}
