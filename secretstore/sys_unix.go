//go:build unix

package secretstore

import (
	"errors"
	"os"
	"syscall"
)

// syncDir makes a rename or a new file in dir durable: without it a crash
// can lose the directory entry even though the file's data was synced.
func syncDir(dir string) error {
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

// tryLock takes an exclusive flock on f without blocking; busy reports
// that another open file description holds it.
func tryLock(f *os.File) (busy bool, err error) {
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return true, nil
	}
	return false, err
}

// checkModes applies on systems with Unix permission bits.
const checkModes = true
