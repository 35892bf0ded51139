package durable

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLock(t *testing.T) {
	dir := t.TempDir()
	p := LockPath(filepath.Join(dir, "svc.keytab"))
	unlock, err := Lock(context.Background(), p, "krbops keytab pull\x1b[31m", 0)
	if err != nil {
		t.Fatal(err)
	}
	// Held: refused once the wait is over, naming the holder without
	// its control bytes.
	_, err = Lock(context.Background(), p, "second", 0)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "krbops keytab pull[31m, pid ") || strings.Contains(err.Error(), "\x1b") {
		t.Errorf("held lock: %v", err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Lock(cancelled, p, "second", DefaultLockWait); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: %v", err)
	}
	unlock()
	unlock2, err := Lock(context.Background(), p, "second", 0)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	unlock2()
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v %v, want 0600", fi, err)
	}
	// A link planted at the lock's name is not followed.
	link := LockPath(filepath.Join(dir, "other.keytab"))
	if err := os.Symlink(filepath.Join(dir, "target"), link); err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(context.Background(), link, "x", 0); !errors.Is(err, ErrNotPrivate) {
		t.Errorf("symlink at the lock: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "target")); !os.IsNotExist(err) {
		t.Error("the link's target was created")
	}
}
