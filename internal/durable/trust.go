package durable

import (
	"errors"
	"fmt"
	"os"

	"github.com/krbops/krbops/internal/readcap"
)

// ErrUntrusted is returned for state that must not steer a key change:
// a journal, ledger or store directory another user could have written.
var ErrUntrusted = errors.New("not trusted")

// TrustDir reports whether dir may hold state that steers a key change:
// a directory (not a link to one) owned by this user and writable by no
// one else. A journal planted by another user in a shared, group- or
// world-writable directory would otherwise set a principal's key to a
// password of that user's choosing.
func TrustDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: %w: it is a %s, not a directory", dir, ErrUntrusted, readcap.DescribeMode(fi.Mode()))
	}
	return trusted(dir, fi, 0o022)
}

// TrustFile reports whether the file at path may steer a key change: a
// regular file (not a link) owned by this user that no one else may write
// — nor read, when secret (a journal holds the new password).
func TrustFile(path string, secret bool) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: %w: it is a %s, not a regular file", path, ErrUntrusted, readcap.DescribeMode(fi.Mode()))
	}
	mask := os.FileMode(0o022)
	if secret {
		mask = 0o077
	}
	return trusted(path, fi, mask)
}

func trusted(path string, fi os.FileInfo, mask os.FileMode) error {
	if uid, ok := ownerOf(fi); ok && uid != os.Geteuid() {
		return fmt.Errorf("%s: %w: it belongs to uid %d, not to this user (uid %d)", path, ErrUntrusted, uid, os.Geteuid())
	}
	if m := fi.Mode().Perm(); m&mask != 0 {
		return fmt.Errorf("%s: %w: its mode %04o lets other users %s it", path, ErrUntrusted, m, verbFor(m&mask))
	}
	return nil
}

func verbFor(m os.FileMode) string {
	if m&0o022 != 0 {
		return "write"
	}
	return "read"
}

// Owner returns the uid that owns the file fi describes, and false where
// the platform has no uid (Windows).
func Owner(fi os.FileInfo) (int, bool) { return ownerOf(fi) }

// TrustTempParent reports whether private directories may be made in dir:
// no other user may rename or replace an entry of it. That holds for a
// TrustDir directory, and for a sticky directory (such as /tmp) owned by
// this user or root, where only an entry's owner may rename it. In a
// group- or world-writable directory without the sticky bit another user
// could swap krbops' private directory for one of theirs.
func TrustTempParent(dir string) error {
	err := TrustDir(dir)
	if err == nil || !errors.Is(err, ErrUntrusted) {
		return err
	}
	fi, serr := os.Lstat(dir)
	if serr != nil || !fi.IsDir() || fi.Mode()&os.ModeSticky == 0 {
		return err
	}
	if uid, ok := ownerOf(fi); ok && uid != 0 && uid != os.Geteuid() {
		return fmt.Errorf("%s: %w: it belongs to uid %d, neither root nor this user (uid %d)", dir, ErrUntrusted, uid, os.Geteuid())
	}
	return nil
}
