//go:build unix

package durable

import (
	"errors"
	"os"
	"syscall"
)

// SyncDir makes a rename or a new file in dir durable: without it a crash
// can lose the directory entry even though the file's data was synced.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// TryLock takes an exclusive advisory lock on f without blocking; busy
// reports that another open file description holds it. The kernel drops
// the lock when the holder dies, even by SIGKILL.
func TryLock(f *os.File) (busy bool, err error) {
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return true, nil
	}
	return false, err
}

// oNoFollow makes open fail on a symbolic link in the last path element.
const oNoFollow = syscall.O_NOFOLLOW

func isSymlinkRefusal(err error) bool { return errors.Is(err, syscall.ELOOP) }

func ownerOf(fi os.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// oNonBlock keeps an open of a FIFO from waiting for a reader.
const oNonBlock = syscall.O_NONBLOCK

// Unlock releases a lock TryLock took.
func Unlock(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
