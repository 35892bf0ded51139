package durable

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A failure injected before each step leaves the old content (or no file)
// and no temp file when it happens before the rename, and the new content
// after it.
func TestWriteFileFaultAtEveryStep(t *testing.T) {
	steps := []string{"create", "write", "sync", "close", "rename", "sync-dir", "done"}
	for i, stop := range steps {
		dir := t.TempDir()
		path := filepath.Join(dir, "journal")
		if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("injected")
		err := WriteFile(path, []byte("new"), 0o600, func(s string) error {
			if s == stop {
				return boom
			}
			return nil
		})
		if !errors.Is(err, boom) {
			t.Fatalf("%s: error %v, want the injected one", stop, err)
		}
		got, _ := os.ReadFile(path)
		renamed := i > 4 // the rename happened before "sync-dir"
		if want := map[bool]string{false: "old", true: "new"}[renamed]; string(got) != want {
			t.Errorf("%s: content %q, want %q", stop, got, want)
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if IsTemp(e.Name()) {
				t.Errorf("%s: temp file %s left behind", stop, e.Name())
			}
		}
	}
}

func TestWriteFileMode(t *testing.T) {
	dir := t.TempDir()
	for _, perm := range []os.FileMode{0o600, 0o640} {
		path := filepath.Join(dir, perm.String())
		if err := WriteFile(path, []byte("x"), perm, nil); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("mode %v, want %v", fi.Mode().Perm(), perm)
		}
	}
}

func TestTryLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	a, _ := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	b, _ := os.OpenFile(path, os.O_RDWR, 0o600)
	defer a.Close()
	defer b.Close()
	if busy, err := TryLock(a); busy || err != nil {
		t.Fatalf("first lock: busy %v err %v", busy, err)
	}
	if busy, err := TryLock(b); !busy || err != nil {
		t.Fatalf("second lock: busy %v err %v, want busy", busy, err)
	}
	a.Close()
	if busy, err := TryLock(b); busy || err != nil {
		t.Fatalf("after release: busy %v err %v", busy, err)
	}
}
