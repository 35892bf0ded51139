package spawn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// DefaultStopTimeout is how long Stop waits after SIGTERM before it sends
// SIGKILL, and again after SIGKILL before it gives up.
const DefaultStopTimeout = 5 * time.Second

// ErrExited is wrapped by WaitReady's error when the daemon exited before
// it was ready (a port taken meanwhile, a bad configuration).
var ErrExited = errors.New("exited during start-up")

// Command describes a daemon for Start.
type Command struct {
	// Name names the daemon in messages ("krb5kdc"); the base name of
	// Path when empty.
	Name string
	// Path is the executable; Args are its arguments (without argv[0]).
	Path string
	Args []string
	// Env is the daemon's whole environment; nil inherits the caller's.
	Env []string
	// Dir is its working directory; "" is the caller's.
	Dir string
	// Log receives its stdout and stderr, appended (created 0600).
	// Required: a daemon's output is what explains a failed start.
	Log string
	// StopTimeout bounds each of Stop's two waits; DefaultStopTimeout
	// when zero.
	StopTimeout time.Duration
}

// Process is a running daemon started by Start. Its methods are safe for
// concurrent use.
type Process struct {
	name        string
	log         string
	cmd         *exec.Cmd
	stopTimeout time.Duration
	done        chan struct{}
	waitErr     error // set before done is closed

	stopOnce sync.Once
	stopErr  error
}

// Start starts c in its own process group, with a parent-death signal
// where the OS has one (see StartCmd), its output appended to c.Log, and
// reaps it when it exits. The daemon runs until Stop, or until the test
// process dies. Start does not wait for the daemon to be ready: call
// WaitReady.
func Start(c Command) (*Process, error) {
	name := c.Name
	if name == "" {
		name = filepath.Base(c.Path)
	}
	if c.Log == "" {
		return nil, fmt.Errorf("spawn: %s: Command.Log is empty", name)
	}
	out, err := os.OpenFile(c.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spawn: %s: %w", name, err)
	}
	defer out.Close() // the child holds its own descriptor
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Env = c.Env
	cmd.Dir = c.Dir
	cmd.Stdout = out
	cmd.Stderr = out
	if err := StartCmd(cmd); err != nil {
		return nil, fmt.Errorf("spawn: start %s: %w", name, err)
	}
	p := &Process{name: name, log: c.Log, cmd: cmd, stopTimeout: c.StopTimeout, done: make(chan struct{})}
	if p.stopTimeout <= 0 {
		p.stopTimeout = DefaultStopTimeout
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Name is the daemon's name in messages.
func (p *Process) Name() string { return p.name }

// PID is the daemon's process id, which is also its process group id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// LogFile is the file holding the daemon's stdout and stderr.
func (p *Process) LogFile() string { return p.log }

// Tail returns the last n bytes of the daemon's output, trimmed.
func (p *Process) Tail(n int64) string { return Tail(p.log, n) }

// Done is closed once the daemon has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the daemon has exited (and been reaped).
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitErr is the daemon's exit as exec.Cmd.Wait reports it (nil for
// status 0); nil while it runs.
func (p *Process) ExitErr() error {
	if !p.Exited() {
		return nil
	}
	return p.waitErr
}

// WaitReady calls ready until it returns nil, pausing between attempts
// (10 ms, growing to 200 ms). It fails at once, with an error wrapping
// ErrExited and the tail of the daemon's output, when the daemon exits,
// and with ctx's error (and ready's last error) when ctx ends. ready gets
// ctx and should bound each attempt itself.
func (p *Process) WaitReady(ctx context.Context, ready func(context.Context) error) error {
	pause := 10 * time.Millisecond
	var last error
	for {
		if p.Exited() {
			return p.exitedErr()
		}
		if last = ready(ctx); last == nil {
			return nil
		}
		t := time.NewTimer(pause)
		select {
		case <-p.done:
			t.Stop()
			return p.exitedErr()
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("spawn: %s (pid %d) not ready: %w (last check: %v)", p.name, p.PID(), ctx.Err(), last)
		case <-t.C:
		}
		pause = min(pause*3/2, 200*time.Millisecond)
	}
}

func (p *Process) exitedErr() error {
	return fmt.Errorf("spawn: %s (pid %d) %w (%v): %s", p.name, p.PID(), ErrExited, p.waitErr, p.Tail(2048))
}

// Stop ends the daemon and everything in its process group: SIGTERM,
// up to StopTimeout for the daemon to exit, then SIGKILL to the group
// (which also takes any straggler of a daemon that did exit), and it
// returns once the daemon is reaped. It errs only when the daemon
// survived SIGKILL for StopTimeout. Stop is idempotent and safe to call
// concurrently and from t.Cleanup: every call returns the first one's
// result.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Process) stop() error {
	pgid := p.PID() // Setpgid: the group id is the leader's pid
	if !p.Exited() {
		_ = signalGroup(pgid, syscall.SIGTERM)
		if p.waitDone(p.stopTimeout) {
			_ = signalGroup(pgid, syscall.SIGKILL) // stragglers
			return nil
		}
	}
	_ = signalGroup(pgid, syscall.SIGKILL)
	if p.waitDone(p.stopTimeout) {
		return nil
	}
	return fmt.Errorf("spawn: %s (pid %d) did not exit %v after SIGKILL", p.name, pgid, p.stopTimeout)
}

// waitDone reports whether the daemon is reaped within d.
func (p *Process) waitDone(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}
