//go:build unix

package durable

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestOpenPrivateAppend(t *testing.T) {
	dir := t.TempDir()

	fresh := filepath.Join(dir, "new.jsonl")
	f, err := OpenPrivateAppend(fresh)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %04o, want 0600", fi.Mode().Perm())
	}

	// A pre-existing world-readable log is narrowed, and appended to.
	open := filepath.Join(dir, "open.jsonl")
	os.WriteFile(open, []byte("old\n"), 0o644)
	os.Chmod(open, 0o644)
	f, err = OpenPrivateAppend(open)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("new\n")
	f.Close()
	if fi, _ := os.Stat(open); fi.Mode().Perm() != 0o600 {
		t.Errorf("existing file mode %04o, want 0600", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(open); string(b) != "old\nnew\n" {
		t.Errorf("content %q", b)
	}

	// A symlink planted in a shared directory is not followed.
	target := filepath.Join(dir, "victim")
	os.WriteFile(target, []byte("keep"), 0o600)
	link := filepath.Join(dir, "link.jsonl")
	os.Symlink(target, link)
	if _, err := OpenPrivateAppend(link); !errors.Is(err, ErrNotPrivate) {
		t.Errorf("symlink: err %v, want ErrNotPrivate", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("symlink target changed: %q", b)
	}

	// Something other than a regular file.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPrivateAppend(fifo); !errors.Is(err, ErrNotPrivate) {
		t.Errorf("fifo: err %v, want ErrNotPrivate", err)
	}
}

// A log file another user owns is refused: its owner could read what
// krbops records, or swap the file between runs.
func TestOpenPrivateAppendOtherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	p := filepath.Join(t.TempDir(), "theirs.jsonl")
	os.WriteFile(p, nil, 0o600)
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPrivateAppend(p); !errors.Is(err, ErrNotPrivate) {
		t.Errorf("err %v, want ErrNotPrivate", err)
	}
}
