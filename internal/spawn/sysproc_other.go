//go:build unix && !linux

package spawn

import "syscall"

// SysProcAttr puts a child in its own process group so a harness can signal
// everything it spawned. Only Linux has a parent-death signal.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
