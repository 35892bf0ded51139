//go:build unix

package ledger

import (
	"os"
	"syscall"
)

// release drops bbolt's flock and closes its file after an open that a
// fault aborted. Closing alone is not enough: the memory map bbolt made
// holds the open file, and with it the lock, until it is unmapped, which
// only bbolt's lost *DB could do.
func release(f *os.File) {
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	f.Close()
}
