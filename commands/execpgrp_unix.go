//go:build unix

package commands

import (
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// execForeground reports whether krbops runs as the foreground job of the
// terminal on its stdin: then the terminal itself sends Ctrl-C's SIGINT
// (and Ctrl-\'s SIGQUIT) to the whole job, the command included.
func execForeground(in any) bool {
	f, ok := in.(*os.File)
	if !ok {
		return false
	}
	pgrp, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPGRP)
	return err == nil && pgrp == syscall.Getpgrp()
}

// execPlace puts the command in its own process group unless krbops is
// the terminal's foreground job (docs/exec.md, "Signals"): a group-wide
// signal then reaches krbops only, and krbops forwards it once. In the
// foreground the command stays in krbops' group so job control (Ctrl-Z,
// reading the terminal) keeps working.
func execPlace(cmd *exec.Cmd, foreground bool) {
	if !foreground {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
}

// execForward sends s to the command and reports whether it did: to its process group when it has
// its own (so its children get it as a terminal would send it), else to
// the command alone. In the foreground SIGINT and SIGHUP are not
// forwarded: the terminal (Ctrl-C) and the shell (hangup) already sent
// them to the whole job, and a second SIGINT means "abort the cleanup" to
// many programs.
func execForward(p *os.Process, s os.Signal, foreground bool) bool {
	if foreground {
		if s == syscall.SIGINT || s == syscall.SIGHUP {
			return false
		}
		p.Signal(s)
		return true
	}
	if sig, ok := s.(syscall.Signal); ok {
		syscall.Kill(-p.Pid, sig)
	} else {
		p.Signal(s)
	}
	return true
}
