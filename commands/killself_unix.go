//go:build unix

package commands

import (
	"os"
	"syscall"
)

// killSelf ends the process with SIGKILL: no deferred cleanup, no flush,
// like a power cut. Only the rotate crash tests use it.
func killSelf() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
