//go:build krbops_testhooks && unix

package commands

import (
	"os"
	"syscall"
)

// killSelf ends the process with SIGKILL: no deferred cleanup, no flush,
// like a power cut. Only test builds (krbops_testhooks) have it.
func killSelf() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
