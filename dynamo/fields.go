package dynamo

import (
	"regexp"

	"github.com/krbops/krbops/internal/fault"
)

// FieldError is a Config or Spec value that cannot work, found before
// anything is read. Field is the value's path in Config ("Spec.Table",
// "Workers", "Kerberos.Principal"), so a caller can point at whatever set
// it (a flag, a file); the message and hint name fields as {Path}
// placeholders, which Error and Hint spell in the package's own words
// (FieldName) and Render in the caller's.
type FieldError struct {
	Field string
	Msg   string // with {Path} placeholders; "" means Err's text
	Help  string // what to do, with {Path} placeholders; may be empty
	Err   error  // the cause, if any
}

func (e *FieldError) Error() string { return e.Render(nil) }
func (e *FieldError) Unwrap() error { return e.Err }

// Hint says what to do next, or "".
func (e *FieldError) Hint() string { return e.RenderHint(nil) }

// FaultClass: a value of the invocation is wrong (fault.Usage).
func (e *FieldError) FaultClass() fault.Class { return fault.Usage }

// Render returns the message with every {Path} spelled by name; a nil
// name, or one that returns "", spells it with FieldName.
func (e *FieldError) Render(name func(path string) string) string {
	if e.Msg == "" && e.Err != nil {
		return e.Err.Error()
	}
	return renderFields(e.Msg, name)
}

// RenderHint is Hint with every {Path} spelled by name.
func (e *FieldError) RenderHint(name func(path string) string) string {
	return renderFields(e.Help, name)
}

var placeholder = regexp.MustCompile(`\{([A-Z][A-Za-z0-9]*(?:\.[A-Z][A-Za-z0-9]*)*)\}`)

func renderFields(s string, name func(string) string) string {
	return placeholder.ReplaceAllStringFunc(s, func(m string) string {
		path := m[1 : len(m)-1]
		if _, known := fieldNames[path]; !known {
			// Not a placeholder of ours: text that came in with a value.
			return m
		}
		if name != nil {
			if n := name(path); n != "" {
				return n
			}
		}
		return FieldName(path)
	})
}

// fieldNames spell Config's fields in DynamoDB's own terms where it has
// them (the request parameter a field becomes), else in plain words.
var fieldNames = map[string]string{
	"Spec.Table":                 "TableName",
	"Spec.Index":                 "IndexName",
	"Spec.Scan":                  "Scan",
	"Spec.Segments":              "TotalSegments",
	"Spec.KeyCondition":          "KeyConditionExpression",
	"Spec.Filter":                "FilterExpression",
	"Spec.Projection":            "ProjectionExpression",
	"Spec.Names":                 "ExpressionAttributeNames",
	"Spec.Values":                "ExpressionAttributeValues",
	"Spec.Consistent":            "ConsistentRead",
	"Spec.PageSize":              "Limit",
	"Format":                     "format",
	"Out":                        "output file",
	"Checkpoint":                 "checkpoint file",
	"Workers":                    "workers",
	"Region":                     "region",
	"Endpoint":                   "endpoint",
	"Profile":                    "profile",
	"Kerberos":                   "Kerberos identity",
	"Kerberos.Keytab":            "keytab",
	"Kerberos.Principal":         "principal",
	"Kerberos.Krb5Conf":          "krb5.conf",
	"Kerberos.FallbackKeytab":    "fallback keytab",
	"Kerberos.FallbackPrincipal": "fallback principal",
	"CABundle":                   "CA bundle",
	"Broker":                     "credential broker URL",
	"BrokerSPN":                  "broker SPN",
	"TicketMargin":               "ticket margin",
	"MaxRCU":                     "read-capacity limit",
	"RetryBudget":                "retry budget",
	// Binding fields, for a Difference.
	"TableARN":    "table ARN",
	"KeySchema":   "key schema",
	"Operation":   "operation",
	"Expressions": "expressions",
}

// FieldName spells a Config path (or a Binding field of a Difference) in
// the package's words.
func FieldName(path string) string {
	if n, ok := fieldNames[path]; ok {
		return n
	}
	return path
}
