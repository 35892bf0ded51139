// Package durable writes files that must survive a crash — keytabs,
// journals, checkpoints, secret-store manifests — and takes the advisory
// locks that keep two krbops processes off the same file. Every krbops
// package that persists state goes through [WriteFile], so the one
// sequence that is known to be crash-safe is written once.
package durable

import (
	"os"
	"path/filepath"
)

// TempPrefix starts the name of every temp file WriteFile creates, so a
// caller can remove what a crash left behind (see [IsTemp]).
const TempPrefix = ".tmp-"

// IsTemp reports whether a directory entry is a WriteFile temp file.
func IsTemp(name string) bool {
	return len(name) > len(TempPrefix) && name[:len(TempPrefix)] == TempPrefix
}

// Fault, when not nil, is called before each step of WriteFile ("create",
// "write", "sync", "close", "rename", "sync-dir", "done") and its error
// aborts the write there: crash tests use it to stop between steps.
type Fault func(step string) error

// WriteFile writes path so that a crash at any point leaves the old file or
// the new one, never a mix: temp file in the same directory (mode 0600),
// write, fsync, close, rename, fsync the directory. The temp file is
// removed on any error before the rename; a crash leaves it, named with
// TempPrefix, for the caller's clean-up. perm is applied to the temp file
// before the rename, so the final file never exists with a wider mode.
func WriteFile(path string, data []byte, perm os.FileMode, fault Fault) (err error) {
	return write(path, data, &Attrs{Mode: perm, UID: -1, GID: -1}, fault)
}

// WriteFileAs is WriteFile for a file that must come back exactly as it
// was to the programs that read it: the new file gets a's owner, group,
// mode and extended attributes (ACLs, SELinux label) before it replaces
// the old one, so a service never sees its keytab, even for an instant,
// with an owner or mode it cannot read. Use [ReadAttrs] for a and
// [CanReproduce] before anything irreversible.
func WriteFileAs(path string, data []byte, a Attrs, fault Fault) error {
	return write(path, data, &a, fault)
}

func write(path string, data []byte, a *Attrs, fault Fault) (err error) {
	step := func(name string) error {
		if fault == nil {
			return nil
		}
		return fault(name)
	}
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := step("create"); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, TempPrefix+name+"-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	renamed := false
	defer func() {
		if err != nil && !renamed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = applyAttrs(f, a); err != nil {
		return err
	}
	if err = step("write"); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = step("sync"); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = step("close"); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = step("rename"); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	renamed = true
	if err = step("sync-dir"); err != nil {
		return err
	}
	if err = SyncDir(dir); err != nil {
		return err
	}
	return step("done")
}
