//go:build !unix

package commands

import (
	"os"
	"os/exec"
)

func execForeground(any) bool                             { return false }
func execPlace(*exec.Cmd, bool)                           {}
func execForward(p *os.Process, s os.Signal, _ bool) bool { p.Signal(s); return true }
