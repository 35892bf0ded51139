//go:build unix && !linux

package motolab

import "syscall"

// sysProcAttr puts moto_server in its own process group so Close can
// signal everything it spawned. Only Linux has a parent-death signal.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
