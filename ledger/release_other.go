//go:build !unix

package ledger

import "os"

// release closes bbolt's file after an open that a fault aborted; on
// Windows closing the handle drops its byte-range lock.
func release(f *os.File) { f.Close() }
