// Package spawn starts the daemons of krbops' test harnesses (krb5kdc,
// kadmind, moto_server, dynalite) so that they never outlive the test
// process: each runs in its own process group, and on Linux the kernel
// SIGKILLs it when the thread that started it dies. internal/lab,
// internal/motolab and internal/dynalab all start processes through here.
package spawn

import (
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
)

var (
	once sync.Once
	ch   chan func()
)

// Start starts cmd in its own process group, with a parent-death signal
// where the OS has one, from one OS thread that never exits. Linux delivers
// Pdeathsig when the *thread* that forked a child dies, not the process;
// Go may retire threads (a goroutine that exits while locked to its thread
// takes it along), which would kill a daemon mid-test.
func Start(cmd *exec.Cmd) error {
	cmd.SysProcAttr = SysProcAttr()
	once.Do(func() {
		ch = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: this thread lives as long as the process
			for f := range ch {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	ch <- func() { errc <- cmd.Start() }
	return <-errc
}

// Tail returns the last n bytes of a daemon's log or output file, trimmed,
// for error messages; "" when it cannot be read.
func Tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}
