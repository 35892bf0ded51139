package durable

import (
	"errors"
	"fmt"
	"os"

	"github.com/krbops/krbops/internal/readcap"
)

// Attrs are what makes a file usable by the programs that read it, beyond
// its bytes: owner, group, mode and extended attributes. A keytab owned by
// its service (apache:apache 0600, an SELinux label, an ACL granting a
// second daemon) must keep all of them when krbops rewrites it.
type Attrs struct {
	Mode     os.FileMode       // permission bits
	UID, GID int               // -1: leave as created (this process's)
	Xattrs   map[string][]byte // security.selinux, system.posix_acl_access, user.*
}

// ReadAttrs returns the attributes of the regular file at path, without
// following a symbolic link: a keytab reached through a link is refused,
// since rewriting it would replace the link, not the file the service
// reads.
func ReadAttrs(path string) (Attrs, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return Attrs{}, err
	}
	if !fi.Mode().IsRegular() {
		return Attrs{}, fmt.Errorf("%s: %w: it is a %s, not a regular file", path, ErrNotPrivate, readcap.DescribeMode(fi.Mode()))
	}
	a := Attrs{Mode: fi.Mode().Perm(), UID: -1, GID: -1}
	if uid, gid, ok := ownerGroupOf(fi); ok {
		a.UID, a.GID = uid, gid
	}
	a.Xattrs, err = readXattrs(path)
	return a, err
}

// ErrCannotReproduce: this process could not give a new file the owner
// or group of the one it replaces.
var ErrCannotReproduce = errors.New("cannot keep the file's owner and group")

// CanReproduce reports whether this process can create a file with a's
// owner and group: as root, or when the file is this user's and its group
// one of this user's groups. Check before a change that cannot be undone.
func CanReproduce(a Attrs) error {
	return canReproduce(a)
}

// CreateExclusive writes data to a new file at path, or at path.1, path.2
// … when that name is taken, never following a symbolic link and never
// replacing a file, with a's owner, group and mode; it returns the name it
// created. A backup planted or left at the name is kept, not overwritten.
func CreateExclusive(path string, data []byte, a Attrs) (string, error) {
	for i := 0; i < 100; i++ {
		name := path
		if i > 0 {
			name = fmt.Sprintf("%s.%d", path, i)
		}
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		if err := writeNew(f, data, &a); err != nil {
			f.Close()
			os.Remove(name)
			return "", err
		}
		if err := f.Close(); err != nil {
			os.Remove(name)
			return "", err
		}
		dir := "."
		if d := dirOf(name); d != "" {
			dir = d
		}
		return name, SyncDir(dir)
	}
	return "", fmt.Errorf("%s: 100 names taken; clean up old backups", path)
}

func writeNew(f *os.File, data []byte, a *Attrs) error {
	if err := applyAttrs(f, a); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

func dirOf(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if os.IsPathSeparator(path[i]) {
			return path[:i+1]
		}
	}
	return ""
}

// CanReplace reports whether this process can replace the file at path
// with one that has attributes a: it can reproduce a's owner and group,
// and may create and rename files in path's directory.
func CanReplace(path string, a Attrs) error {
	if err := CanReproduce(a); err != nil {
		return err
	}
	dir := dirOf(path)
	if dir == "" {
		dir = "."
	}
	return dirWritable(dir)
}
