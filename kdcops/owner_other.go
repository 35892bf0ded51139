//go:build !unix

package kdcops

import "os"

// fileOwner has no answer where files have no numeric owner (Windows): the
// owner rules are then not evaluated.
func fileOwner(os.FileInfo) (uid int, ok bool) { return 0, false }

// RunningUID is -1 where there are no uids.
func RunningUID() int { return -1 }
