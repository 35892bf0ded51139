// Package output renders a [runbook.Report] for people and machines.
//
// Each format is a [Renderer] registered under a name ("table", "plain",
// "json", "junit", "markdown", "prometheus"); commands look one up with
// [Get] and list them for --output help with [Names]. Renderers only write to the
// io.Writer they are given and never touch process-wide terminal state, so
// one process can render the same report to a terminal and to a file.
//
// Every renderer is deterministic: evidence keys are sorted, durations are
// formatted one way, and nothing depends on map iteration order, so output
// can be diffed and golden-tested. docs/output.md is the user-facing
// contract for each format.
package output

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/krbops/krbops/runbook"
)

// Renderer writes one report in one format.
type Renderer interface {
	Render(w io.Writer, rep *runbook.Report, opts Options) error
}

// Options are the presentation settings a command passes to every renderer.
// Machine formats (plain, json, junit) ignore them so that scripts see the
// same bytes whatever the terminal.
type Options struct {
	Color bool // emit ANSI colors; decide with [ColorEnabled]
	Width int  // maximum line width for the table; 0 = no limit
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Renderer{}
)

// Register makes a renderer available under name. It panics on an empty
// name, a nil renderer or a duplicate name: all three are programming
// errors that should fail at start-up, not when an on-call picks a format.
func Register(name string, r Renderer) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if name == "" {
		panic("output: register with an empty name")
	}
	if r == nil {
		panic("output: register " + name + " with a nil renderer")
	}
	if _, dup := registry[name]; dup {
		panic("output: register called twice for " + name)
	}
	registry[name] = r
}

// Names returns the registered format names, sorted.
func Names() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for name := range registry {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Get returns the renderer registered under name, wrapped so that every
// string of the report reaches the output without control characters (see
// sanitize.go). The error for an unknown name lists the valid ones so it
// can be shown to the user as is.
func Get(name string) (Renderer, error) {
	registryMu.RLock()
	r, ok := registry[name]
	registryMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown output format %q (valid: %s)", name, strings.Join(Names(), ", "))
	}
	return sanitizing{r}, nil
}

// RendererFunc adapts a function to [Renderer], for small formats that
// need no state.
type RendererFunc func(w io.Writer, rep *runbook.Report, opts Options) error

// Render calls f.
func (f RendererFunc) Render(w io.Writer, rep *runbook.Report, opts Options) error {
	return f(w, rep, opts)
}
