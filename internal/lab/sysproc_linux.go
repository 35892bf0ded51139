//go:build linux

package lab

import "syscall"

// sysProcAttr puts a child in its own process group (so Close can signal
// everything it spawned) and asks the kernel to SIGKILL it when the thread
// that started it dies, so a crashed or killed test binary leaves no KDC
// behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
