//go:build unix

package durable

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func ownerGroupOf(fi os.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

// copiedXattr says which extended attributes travel with a rewritten
// file: its SELinux label, its POSIX ACLs and user attributes. Others
// (capabilities, trusted.*) are not a keytab's business.
func copiedXattr(name string) bool {
	return name == "security.selinux" || strings.HasPrefix(name, "system.posix_acl_") || strings.HasPrefix(name, "user.")
}

func readXattrs(path string) (map[string][]byte, error) {
	size, err := unix.Llistxattr(path, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENOSYS) {
			return nil, nil
		}
		return nil, fmt.Errorf("%s: listing extended attributes: %w", path, err)
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		return nil, fmt.Errorf("%s: listing extended attributes: %w", path, err)
	}
	out := map[string][]byte{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "" || !copiedXattr(name) {
			continue
		}
		vsize, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: reading %s: %w", path, name, err)
		}
		val := make([]byte, vsize)
		vn, err := unix.Lgetxattr(path, name, val)
		if err != nil {
			return nil, fmt.Errorf("%s: reading %s: %w", path, name, err)
		}
		out[name] = val[:vn]
	}
	return out, nil
}

// applyAttrs gives a file krbops just created the owner, group, mode and
// extended attributes of a. Owner first: chown may clear mode bits.
func applyAttrs(f *os.File, a *Attrs) error {
	if a == nil {
		return nil
	}
	if a.UID >= 0 || a.GID >= 0 {
		if err := f.Chown(a.UID, a.GID); err != nil {
			return fmt.Errorf("keeping owner %d and group %d: %w", a.UID, a.GID, err)
		}
	}
	mode := a.Mode
	if mode == 0 {
		mode = 0o600
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	for name, val := range a.Xattrs {
		if err := unix.Fsetxattr(int(f.Fd()), name, val, 0); err != nil {
			return fmt.Errorf("keeping extended attribute %s: %w", name, err)
		}
	}
	return nil
}

func canReproduce(a Attrs) error {
	euid := os.Geteuid()
	if euid == 0 {
		return nil
	}
	if a.UID >= 0 && a.UID != euid {
		return fmt.Errorf("%w: it belongs to uid %d and krbops runs as uid %d", ErrCannotReproduce, a.UID, euid)
	}
	if a.GID >= 0 && a.GID != os.Getegid() {
		groups, _ := os.Getgroups()
		if !slices.Contains(groups, a.GID) {
			return fmt.Errorf("%w: its group %d is not one of this user's groups", ErrCannotReproduce, a.GID)
		}
	}
	return nil
}

func dirWritable(dir string) error {
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("directory %s is not writable: %w", dir, err)
	}
	return nil
}
