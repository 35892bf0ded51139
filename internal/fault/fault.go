// Package fault is krbops' error model: every error that ends a command
// carries a [Class] saying what kind of trouble it is, and cmd/krbops turns
// the class into the process exit status in one table. Domain packages
// classify where they know the cause (a malformed local file is [Usage], a
// KDC that does not answer is [Unreachable]); commands word the message for
// people and add the hint.
//
// Start with [New] and [ClassOf].
package fault

import (
	"context"
	"errors"
	"fmt"
)

// Class is what kind of trouble ended a run. The zero value, [Unclassified],
// is an error nobody sorted; cmd/krbops treats it as a usage error, since
// the errors nobody classifies are cobra's own (unknown command, bad flag
// syntax).
type Class uint8

const (
	// Unclassified: not sorted by the code that raised it.
	Unclassified Class = iota
	// OK: the run completed and every check passed (warnings allowed).
	OK
	// CheckFailed: a check ran and found a problem (or a warning under
	// --strict).
	CheckFailed
	// Usage: the invocation or local input is wrong: a bad flag, a missing,
	// unreadable, untrusted or malformed local file. Nothing was changed;
	// fixing the input fixes the run.
	Usage
	// Unreachable: a dependency (KDC, NTP, AWS endpoint, secret store) did
	// not answer or answered with something unusable; the run could not
	// complete.
	Unreachable
	// Cancelled: SIGINT or SIGTERM.
	Cancelled
)

var classNames = [...]string{
	Unclassified: "unclassified",
	OK:           "ok",
	CheckFailed:  "check-failed",
	Usage:        "usage",
	Unreachable:  "unreachable",
	Cancelled:    "cancelled",
}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// Error is an error with its class and what the operator should do next.
type Error struct {
	Class Class
	Err   error  // the cause; nil for a run whose report already said it all
	Hint  string // one line: what to do next; may be empty
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Class.String()
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// New returns err with class c and hint. A nil err is allowed: it is a run
// that ends with class c and has nothing to add (its report was printed).
func New(c Class, err error, hint string) *Error {
	return &Error{Class: c, Err: err, Hint: hint}
}

// Usagef is a usage or local-input error with a formatted message.
func Usagef(hint, format string, a ...any) *Error {
	return New(Usage, fmt.Errorf(format, a...), hint)
}

// Unreachablef is a could-not-complete error with a formatted message.
func Unreachablef(hint, format string, a ...any) *Error {
	return New(Unreachable, fmt.Errorf(format, a...), hint)
}

// Classer is a domain error type that knows its own class (a typed error
// such as dynamo's PermissionError), so it need not be wrapped in *Error.
type Classer interface{ FaultClass() Class }

// Hinter is a domain error type that says what to do next.
type Hinter interface{ Hint() string }

// ClassOf returns the class of the first *Error or [Classer] in err's
// chain. A context cancellation in the chain, and neither of those, is
// [Cancelled]; nil is [OK].
func ClassOf(err error) Class {
	if err == nil {
		return OK
	}
	var c Classer
	var e *Error
	for cur := err; cur != nil; cur = errors.Unwrap(cur) {
		if errors.As(cur, &e) && e == cur {
			return e.Class
		}
		if x, ok := cur.(Classer); ok {
			return x.FaultClass()
		}
	}
	// Joined errors and multi-unwrap chains: errors.As walks them.
	if errors.As(err, &e) {
		return e.Class
	}
	if errors.As(err, &c) {
		return c.FaultClass()
	}
	if errors.Is(err, context.Canceled) {
		return Cancelled
	}
	return Unclassified
}

// HintOf returns the first non-empty hint in err's chain, from an *Error
// or a [Hinter].
func HintOf(err error) string {
	for cur := err; cur != nil; cur = errors.Unwrap(cur) {
		if e, ok := cur.(*Error); ok && e.Hint != "" {
			return e.Hint
		}
		if h, ok := cur.(Hinter); ok {
			if s := h.Hint(); s != "" {
				return s
			}
		}
	}
	var h Hinter
	if errors.As(err, &h) {
		return h.Hint()
	}
	return ""
}

// Silent reports whether err is a bare class with nothing to print: the
// run's report already told the operator what happened.
func Silent(err error) bool {
	var e *Error
	if _, ok := StatusOf(err); ok {
		return true
	}
	return errors.As(err, &e) && e.Err == nil
}

// The exit table. These numbers are the process's interface: every
// command's help documents them under EXIT STATUS (docs/exit-codes.md), and
// scripts branch on them. [ExitCode] is the only mapping from a class to a
// number; cmd/krbops applies it to the error a command returns, and the
// commands to the report they render, so the report's exit_code and the
// process status never disagree.
const (
	ExitOK          = 0   // every check passed (warnings allowed unless --strict)
	ExitCheckFailed = 1   // a check failed
	ExitUsage       = 2   // usage, configuration or local input; nothing was changed
	ExitUnreachable = 3   // could not complete: a dependency did not answer
	ExitCancelled   = 130 // SIGINT or SIGTERM
)

// ExitCode is the process exit status for class c. An unclassified error
// is a usage error: the errors nobody classifies are cobra's own (unknown
// command, bad flag syntax).
func ExitCode(c Class) int {
	switch c {
	case OK:
		return ExitOK
	case CheckFailed:
		return ExitCheckFailed
	case Unreachable:
		return ExitUnreachable
	case Cancelled:
		return ExitCancelled
	}
	return ExitUsage
}

// Status ends a run with an exact exit status instead of a class's:
// krbops exec passes on its child's status (or 128+signal). It prints
// nothing: the child has spoken for itself.
type Status struct{ Code int }

func (s *Status) Error() string { return fmt.Sprintf("exit status %d", s.Code) }

// StatusOf returns the exit status of a [Status] in err's chain.
func StatusOf(err error) (int, bool) {
	var s *Status
	if errors.As(err, &s) {
		return s.Code, true
	}
	return 0, false
}
