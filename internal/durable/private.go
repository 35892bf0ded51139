package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/krbops/krbops/internal/readcap"
)

// ErrNotPrivate is returned for a file krbops must not trust or write
// through: a symbolic link, something other than a regular file, or a file
// another user owns.
var ErrNotPrivate = errors.New("not a private file")

// OpenPrivateAppend opens path for appending, creating it with mode 0600,
// without following a symbolic link planted at path. An existing file must
// be a regular file owned by this user; a mode open to group or others is
// narrowed to 0600 (a forensic log records principals and hosts). Anything
// else is refused with an error that wraps [ErrNotPrivate].
func OpenPrivateAppend(path string) (*os.File, error) {
	// Look first, so a FIFO or device is named in the error; the open
	// below refuses a link swapped in after the look (O_NOFOLLOW) and
	// never blocks on a FIFO (O_NONBLOCK).
	if fi, err := os.Lstat(path); err == nil {
		if err := checkPrivate(path, fi); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|oNoFollow|oNonBlock, 0o600)
	if err != nil {
		if isSymlinkRefusal(err) {
			return nil, fmt.Errorf("%s: %w: it is a symbolic link, which krbops does not follow", path, ErrNotPrivate)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := checkPrivate(path, fi); err != nil {
		f.Close()
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: narrowing mode %04o to 0600: %w", path, fi.Mode().Perm(), err)
		}
	}
	return f, nil
}

func checkPrivate(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: %w: it is a %s, not a regular file", path, ErrNotPrivate, readcap.DescribeMode(fi.Mode()))
	}
	if uid, ok := ownerOf(fi); ok && uid != os.Geteuid() {
		return fmt.Errorf("%s: %w: it belongs to uid %d, not to this user (uid %d)", path, ErrNotPrivate, uid, os.Geteuid())
	}
	return nil
}
