//go:build windows

package durable

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// SyncDir is a no-op: Windows cannot open a directory for FlushFileBuffers,
// and NTFS journals the rename itself.
func SyncDir(string) error { return nil }

// TryLock takes an exclusive lock on f's first byte without blocking; busy
// reports that another handle holds it.
func TryLock(f *os.File) (busy bool, err error) {
	ol := new(windows.Overlapped)
	err = windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		return true, nil
	}
	return false, err
}

// oNoFollow: Windows' open does not follow symbolic links the Unix way;
// ownership is not checked there either.
const oNoFollow = 0

func isSymlinkRefusal(error) bool { return false }

func ownerOf(os.FileInfo) (int, bool) { return 0, false }

const oNonBlock = 0

// Unlock releases a lock TryLock took.
func Unlock(f *os.File) error {
	return windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, new(windows.Overlapped))
}
