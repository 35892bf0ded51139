//go:build linux

package motolab

import "syscall"

// sysProcAttr puts moto_server in its own process group (so Close can
// signal everything it spawned) and asks the kernel to SIGKILL it when the
// thread that started it dies, so a crashed or killed test binary leaves no
// server behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
