package durable

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/krbops/krbops/internal/readcap"
	"github.com/krbops/krbops/internal/safetext"
)

// ErrLocked is returned by [Lock] when another process kept the lock for
// longer than the caller would wait.
var ErrLocked = errors.New("locked by another process")

// LockPath is the lock file that guards a read-modify-write of path.
// It lives next to path, so it is as trusted as path's directory, and
// every krbops command rewriting path (keytab pull, keytab prune, rotate)
// takes the same one.
func LockPath(path string) string { return path + ".lock" }

// DefaultLockWait bounds how long a keytab's writers wait for each other:
// keytab pull holds the lock for its KDC exchanges, seconds, so a minute
// only runs out when something hangs.
const DefaultLockWait = time.Minute

// lockPoll is how often [Lock] retries a busy lock: flock has no wait
// that a context can cancel.
const lockPoll = 25 * time.Millisecond

// Lock takes an exclusive lock on the file at lockPath, created 0600
// without following a symbolic link and refused when another user owns
// it. It waits while another process holds it, until ctx ends or wait
// passes; then the error wraps [ErrLocked] and names the holder. holder
// is recorded in the file for the next waiter. The lock file is never
// removed: unlinking it while another process waits on the old inode
// would let two writers in. unlock releases the lock; the kernel also
// drops it when the process dies.
func Lock(ctx context.Context, lockPath, holder string, wait time.Duration) (unlock func(), err error) {
	f, err := OpenPrivateAppend(lockPath)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		busy, err := TryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", lockPath, err)
		}
		if !busy {
			break
		}
		if !time.Now().Before(deadline) {
			f.Close()
			return nil, lockedError(lockPath, wait)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(lockPoll):
		}
	}
	// Who holds the lock is advice for a refused waiter, not part of the
	// locking, so a failed write does not fail the caller.
	if err := f.Truncate(0); err == nil {
		_, _ = fmt.Fprintf(f, "%s, pid %d, since %s\n", holder, os.Getpid(), time.Now().UTC().Format(time.RFC3339))
	}
	return func() { f.Close() }, nil
}

func lockedError(lockPath string, wait time.Duration) error {
	who := "unknown holder"
	if b, err := readcap.ReadFile(lockPath, 4096); err == nil {
		if s := safetext.Line(strings.TrimSpace(string(b))); s != "" {
			who = s
		}
	}
	return fmt.Errorf("%s: %w (%s) for more than %s", lockPath, ErrLocked, who, wait)
}
