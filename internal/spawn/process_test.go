package spawn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// sh starts a /bin/sh daemon running script, its output in dir/name.log.
func sh(t *testing.T, name, script string, stopTimeout time.Duration) *Process {
	t.Helper()
	p, err := Start(Command{Name: name, Path: "/bin/sh", Args: []string{"-c", script},
		Dir: t.TempDir(), Log: filepath.Join(t.TempDir(), name+".log"), StopTimeout: stopTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

// fileReady is a readiness check: the daemon has written path.
func fileReady(path string) func(context.Context) error {
	return func(context.Context) error {
		_, err := os.Stat(path)
		return err
	}
}

// gone reports whether pid has exited (a zombie counts as exited).
func gone(pid int) bool {
	st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	s := string(st)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// waitGone waits for the kernel to finish killing pid. The bound is only
// there so a real leak fails instead of hanging; it is not what is tested.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !gone(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still running", pid)
		}
	}
}

// A daemon that ignores SIGTERM and has a child of its own: Stop kills the
// whole group with SIGKILL, reaps the daemon, and every later or
// concurrent Stop returns the same result.
func TestStopKillsTheGroupOfADaemonIgnoringSIGTERM(t *testing.T) {
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	child := filepath.Join(dir, "child.pid")
	p := sh(t, "stubborn", `trap '' TERM; sleep 1000 & echo $! > `+child+`; echo up; touch `+ready+`; while :; do sleep 1; done`, 100*time.Millisecond)
	if err := p.WaitReady(t.Context(), fileReady(ready)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(child)
	if err != nil {
		t.Fatal(err)
	}
	childPID, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = p.Stop() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Stop %d: %v", i, err)
		}
	}
	if !p.Exited() {
		t.Fatal("Exited() is false after Stop returned")
	}
	if !gone(p.PID()) {
		t.Errorf("daemon pid %d still there after Stop", p.PID())
	}
	waitGone(t, childPID) // SIGKILL went to the group; the reaper is init
	if err := p.Stop(); err != nil {
		t.Errorf("Stop after Stop: %v", err)
	}
	if got := p.Tail(100); got != "up" {
		t.Errorf("log tail %q, want the daemon's output %q", got, "up")
	}
}

// A daemon that honours SIGTERM exits with it; Stop does not need SIGKILL
// and does not wait out StopTimeout (an hour here: were it waited for, the
// test would time out rather than pass).
func TestStopWithSIGTERM(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	p := sh(t, "polite", `trap 'echo bye; exit 0' TERM; touch `+ready+`; while :; do sleep 0.05; done`, time.Hour)
	if err := p.WaitReady(t.Context(), fileReady(ready)); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.ExitErr(); err != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0 from the trap", err)
	}
	if !strings.Contains(p.Tail(100), "bye") {
		t.Errorf("the TERM trap did not run: %q", p.Tail(100))
	}
}

func TestWaitReadyFailsWhenTheDaemonExits(t *testing.T) {
	p := sh(t, "broken", `echo "bind: address already in use" >&2; exit 3`, 0)
	err := p.WaitReady(t.Context(), func(context.Context) error { return errors.New("not yet") })
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("WaitReady = %v, want ErrExited with the daemon's name and output", err)
	}
	var ee *exec.ExitError
	if !errors.As(p.ExitErr(), &ee) || ee.ExitCode() != 3 {
		t.Errorf("ExitErr = %v, want exit status 3", p.ExitErr())
	}
	if err := p.Stop(); err != nil {
		t.Errorf("Stop of an exited daemon: %v", err)
	}
}

func TestWaitReadyEndsWithTheContext(t *testing.T) {
	p := sh(t, "mute", `exec sleep 1000`, 0)
	ctx, cancel := context.WithCancel(t.Context())
	calls := 0
	err := p.WaitReady(ctx, func(context.Context) error {
		calls++
		if calls == 3 {
			cancel()
		}
		return fmt.Errorf("probe %d refused", calls)
	})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "probe 3 refused") {
		t.Fatalf("WaitReady = %v, want context.Canceled and the last probe's error", err)
	}
	if p.Exited() {
		t.Fatal("WaitReady's failure must not stop the daemon; Stop does")
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestStartNeedsALogAndAnExecutable(t *testing.T) {
	if _, err := Start(Command{Path: "/bin/true"}); err == nil {
		t.Error("Start without Log: no error")
	}
	if _, err := Start(Command{Path: filepath.Join(t.TempDir(), "nope"), Log: filepath.Join(t.TempDir(), "log")}); err == nil {
		t.Error("Start of a missing executable: no error")
	}
}

// TestCrashLeavesNoDaemon re-runs this test binary as a "test" that starts
// a daemon and panics without Stop: the parent-death signal must take the
// daemon down with it.
func TestCrashLeavesNoDaemon(t *testing.T) {
	if os.Getenv("KRBOPS_SPAWN_CRASH_HELPER") == "1" {
		p, err := Start(Command{Path: "/bin/sleep", Args: []string{"1000"}, Log: os.Getenv("KRBOPS_SPAWN_CRASH_LOG")})
		if err != nil {
			fmt.Println("START-ERROR", err)
			os.Exit(3)
		}
		fmt.Printf("PID %d\n", p.PID())
		panic("simulated crash of a test holding a daemon")
	}
	if runtime.GOOS != "linux" {
		t.Skip("only Linux has a parent-death signal")
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashLeavesNoDaemon$", "-test.count=1")
	cmd.Env = append(os.Environ(), "KRBOPS_SPAWN_CRASH_HELPER=1", "KRBOPS_SPAWN_CRASH_LOG="+filepath.Join(t.TempDir(), "sleep.log"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "simulated crash") {
		t.Fatalf("helper did not crash: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(line, "PID "); ok {
			pid, err := strconv.Atoi(s)
			if err != nil {
				t.Fatal(err)
			}
			waitGone(t, pid)
			return
		}
	}
	t.Fatalf("helper reported no pid:\n%s", out)
}

// A tool whose context ends is SIGKILLed with its whole group: a child it
// started in the background does not survive it.
func TestCommandContextKillsTheGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cmd := CommandContext(ctx, "/bin/sh", "-c", `sleep 1000 & echo $!; wait`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := cmd.Wait(); err == nil {
		t.Fatal("Wait after cancel: no error")
	}
	waitGone(t, pid)
}
