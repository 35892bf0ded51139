// Package spawn starts the daemons of krbops' test harnesses (krb5kdc,
// kadmind, moto_server, dynalite) so that they never outlive the test
// process, and stops them all the same way. internal/lab, internal/motolab
// and internal/dynalab hold a [Process] per daemon and never signal, wait
// for or reap one themselves.
//
// A daemon runs in its own process group; on Linux the kernel SIGKILLs it
// when the thread that started it dies (Pdeathsig), so a test binary that
// panics or is killed leaves nothing behind. [Process.Stop] sends SIGTERM
// to the group, waits a bounded time, SIGKILLs the group and reaps.
package spawn

import (
	"context"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	once sync.Once
	ch   chan func()
)

// StartCmd starts cmd in its own process group, with a parent-death signal
// where the OS has one, from one OS thread that never exits. Linux delivers
// Pdeathsig when the *thread* that forked a child dies, not the process;
// Go may retire threads (a goroutine that exits while locked to its thread
// takes it along), which would kill a daemon mid-test.
//
// It is the low-level half of [Start], for short-lived tools whose caller
// waits for them itself (kdb5_util, kadmin.local). Daemons use [Start].
func StartCmd(cmd *exec.Cmd) error {
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

// toolWaitDelay bounds how long a cancelled tool's Wait waits for its
// output pipes after the kill.
const toolWaitDelay = 2 * time.Second

// CommandContext is exec.CommandContext for a short-lived tool (kinit,
// kadmin.local, kdb5_util): its own process group, with a parent-death
// signal where the OS has one, and the whole group SIGKILLed when ctx
// ends. Run it with cmd.Run, or with StartCmd and cmd.Wait.
func CommandContext(ctx context.Context, path string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.SysProcAttr = SysProcAttr()
	cmd.Cancel = func() error { return signalGroup(cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = toolWaitDelay
	return cmd
}
