package durable

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/krbops/krbops/internal/readcap"
)

// ReadTrusted reads, at most limit bytes, a file that steers a key change
// or decides whom krbops trusts (a policy, a targets file, a CA bundle):
// a regular file, not a symbolic link, owned by this user or root, that
// no other user may write. Root's files are accepted because /etc/krbops
// belongs to root and root can change anything this process reads anyway.
// The checked file is the one read: it is opened, and the open file must
// be the one that was checked (os.SameFile), so a swap between the check
// and the open cannot slip an untrusted file in. Errors are *fs.PathError;
// errors.Is finds ErrUntrusted for a refused file, and readcap's errors
// and fs.ErrNotExist as readcap.Open does.
func ReadTrusted(path string, limit int64) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if err := CheckTrusted(fi); err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f, ofi, err := readcap.Open(path, limit)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if !os.SameFile(fi, ofi) {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w: the file changed while it was opened", ErrUntrusted)}
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = &readcap.TooLargeError{Size: int64(len(data)), Limit: limit}
	}
	if err != nil {
		var pe *fs.PathError
		if !errors.As(err, &pe) {
			err = &fs.PathError{Op: "read", Path: path, Err: err}
		}
		return nil, err
	}
	return data, nil
}

// CheckTrusted applies ReadTrusted's rules to a file's Lstat FileInfo.
func CheckTrusted(fi fs.FileInfo) error {
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%w: it is a symbolic link, which krbops does not follow here", ErrUntrusted)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: it is a %s, not a regular file", ErrUntrusted, readcap.DescribeMode(fi.Mode()))
	}
	if uid, ok := ownerOf(fi); ok && uid != 0 && uid != os.Geteuid() {
		return fmt.Errorf("%w: it belongs to uid %d, neither root nor this user (uid %d)", ErrUntrusted, uid, os.Geteuid())
	}
	if m := fi.Mode().Perm(); m&0o022 != 0 {
		return fmt.Errorf("%w: its mode %04o lets other users write it", ErrUntrusted, m)
	}
	return nil
}
