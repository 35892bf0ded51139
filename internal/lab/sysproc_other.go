//go:build unix && !linux

package lab

import "syscall"

// sysProcAttr puts a child in its own process group so Close can signal
// everything it spawned. Only Linux has a parent-death signal.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
