// Package policy is krbops' rotation policy file: which clusters are
// cleared for rotation, which tier a principal belongs to (decided by
// patterns, not by the operator), each tier's rate limit, window and
// minimum gap, deny patterns, last-login rules, the phase-2 wait and
// default backend, ledger and secret store.
//
// Start with [Load], then [Policy.Resolve], which gives the effective
// policy of one rotation with the source of every value: a flag, a line
// of the file, or a built-in default. A nil *Policy is no policy file:
// Resolve then gives the built-in defaults and the flags.
//
// The package never prints; its errors are *Error, which name file, line
// and key and carry a hint.
package policy

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/krbops/krbops/internal/durable"
)

// MaxSize caps a policy file: thousands of clusters and patterns fit in
// 1 MiB, and a file named by mistake is refused before it is parsed.
const MaxSize = 1 << 20

// Error is a policy file that cannot be used: its text says
// "policy FILE:LINE: KEY: what is wrong" (LINE and KEY when known).
type Error struct {
	File string
	Line int    // 0 when the whole file is concerned
	Key  string // dotted path of the key, e.g. tiers.control-plane.limit
	Msg  string
	Hint string
	Err  error // the cause, when there is one
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("policy ")
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	if e.Key != "" {
		b.WriteString(": " + e.Key)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Setting is one value of the file and where it was written.
type Setting[T any] struct {
	V    T
	Set  bool
	Line int
	Key  string // dotted path, e.g. last-login.min-tgt-remaining
}

// Limits are a tier's rate rules, or a cluster's override of them.
type Limits struct {
	Limit  Setting[int]           // rotations per (cluster, role) per window
	Window Setting[time.Duration] // the rate window
	MinGap Setting[time.Duration] // minimum time between two rotations
}

// Pattern is a principal pattern (path.Match syntax, as rotate.Denied
// matches) and where it was written.
type Pattern struct {
	Text string
	Line int
	Key  string
}

// Tier is a named class of principals: the first tier, in file order,
// with a pattern the principal matches is the principal's tier.
type Tier struct {
	Name       string
	Line       int
	Principals []Pattern
	Limits
}

// Cluster is one fault domain: whether it is cleared for rotation, and
// its overrides of tier limits.
type Cluster struct {
	Name        string
	Line        int
	Allowlisted Setting[bool]
	Tiers       map[string]Limits
}

// Policy is a loaded policy file.
type Policy struct {
	File     string
	Clusters []Cluster // file order; empty: no clusters section
	Tiers    []Tier    // file order: the first match wins
	Deny     []Pattern

	KDCLogs         Setting[[]string]
	NoLoginRecordOK Setting[bool]
	MinTGTRemaining Setting[time.Duration]
	TicketLifetime  Setting[time.Duration]

	Backend     Setting[string]
	Ledger      Setting[string]
	SecretStore Setting[string]

	hasClusters bool
}

// HasClusters reports whether the file has a clusters section: it is then
// the allowlist, and a cluster it does not list is not cleared.
func (p *Policy) HasClusters() bool { return p != nil && p.hasClusters }

// Load reads and checks the policy file at path. The file steers key
// changes, so it must be a regular file (not a link) owned by this user or
// root that no one else may write; it is read size-capped. Every problem
// is an *Error.
func Load(path string) (*Policy, error) {
	data, err := readTrusted(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

func readTrusted(path string) ([]byte, error) {
	data, err := durable.ReadTrusted(path, MaxSize)
	if err == nil {
		return data, nil
	}
	hint := "pass the policy file itself (a regular file under 1 MiB)"
	switch {
	case errors.Is(err, durable.ErrUntrusted):
		hint = "keep the policy owned by root or the user who rotates, mode 0644 or stricter (chmod go-w), and not a symbolic link"
	case errors.Is(err, fs.ErrNotExist):
		hint = "pass --policy with the rotation policy file, or --no-policy"
	}
	return nil, &Error{File: path, Msg: describe(err), Hint: hint, Err: err}
}

func describe(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse checks data as the policy file named file.
func Parse(file string, data []byte) (*Policy, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	err := dec.Decode(&doc)
	p := &Policy{File: file}
	if err == io.EOF {
		return p, nil // an empty file: built-in defaults
	}
	if err == nil {
		// A second document would be ignored by a reader that stops at
		// the first, and the rules in it with it.
		var more yaml.Node
		if err = dec.Decode(&more); err == io.EOF {
			err = nil
		} else if err == nil {
			return nil, &Error{File: file, Line: more.Line, Msg: "more than one YAML document", Hint: "keep the whole policy in one document (remove the --- line)"}
		}
	}
	if err != nil {
		e := &Error{File: file, Msg: "not valid YAML: " + err.Error(), Hint: "fix the YAML syntax; quote patterns that start with * or contain ': '", Err: err}
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = "not valid YAML: " + m[2]
		}
		return nil, e
	}
	if len(doc.Content) == 0 {
		return p, nil
	}
	d := &decoder{file: file}
	d.top(p, doc.Content[0])
	if d.err != nil {
		return nil, d.err
	}
	return p, nil
}
