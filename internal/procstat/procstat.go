// Package procstat tells whether the process that holds a lock still
// runs, so an operator is not asked to guess before breaking it.
package procstat

import (
	"errors"
	"os"
	"time"
)

// Liveness is what can be known about a lock holder's process.
type Liveness string

const (
	Alive   Liveness = "alive"
	Dead    Liveness = "dead"
	Unknown Liveness = "unknown" // on another host, or this OS cannot tell
)

// ErrUnknown: the process could not be looked at.
var ErrUnknown = errors.New("cannot tell")

// Of reports whether the process pid on host, which held something since
// since, still runs. A process with that pid that started after since is
// another process (the pid was reused): the holder is dead.
func Of(host string, pid int, since time.Time) Liveness {
	if pid <= 0 {
		return Unknown
	}
	if me, err := os.Hostname(); err != nil || me != host {
		return Unknown
	}
	exists, err := exists(pid)
	if err != nil {
		return Unknown
	}
	if !exists {
		return Dead
	}
	if started, err := startTime(pid); err == nil && !since.IsZero() && started.After(since.Add(time.Second)) {
		return Dead
	}
	return Alive
}
