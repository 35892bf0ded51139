//go:build windows

package secretstore

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// syncDir is a no-op: Windows cannot open a directory for FlushFileBuffers,
// and NTFS journals the rename itself.
func syncDir(string) error { return nil }

// tryLock takes an exclusive lock on f's first byte without blocking; busy
// reports that another handle holds it.
func tryLock(f *os.File) (busy bool, err error) {
	ol := new(windows.Overlapped)
	err = windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		return true, nil
	}
	return false, err
}

// checkModes is off: Windows ignores Unix permission bits; ACLs protect
// the store there.
const checkModes = false
