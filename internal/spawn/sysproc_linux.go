//go:build linux

package spawn

import "syscall"

// SysProcAttr puts a child in its own process group (so a harness can signal
// everything it spawned) and asks the kernel to SIGKILL it when the thread
// that started it dies, so a crashed or killed test binary leaves no daemon
// behind.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
