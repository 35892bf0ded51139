//go:build unix

package secretstore

import (
	"os"
	"syscall"
)

// checkModes applies on systems with Unix permission bits.
const checkModes = true

// ownerUID is the uid that owns fi, -1 when unknown.
func ownerUID(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

func ownedByMe(fi os.FileInfo) bool {
	uid := ownerUID(fi)
	return uid < 0 || uid == os.Geteuid()
}
