//go:build linux

package durable

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A keytab owned by its service account comes back with the same owner,
// group and mode after a rewrite (issue 10: never break the service).
func TestWriteFileAsKeepsOwnerGroupMode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to hand a file to another user")
	}
	p := filepath.Join(t.TempDir(), "http.keytab")
	os.WriteFile(p, []byte("old"), 0o640)
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o640)
	a, err := ReadAttrs(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAs(p, []byte("new"), a, nil); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 65534 || st.Gid != 65534 || fi.Mode().Perm() != 0o640 {
		t.Errorf("after rewrite: uid %d gid %d mode %04o, want 65534 65534 0640", st.Uid, st.Gid, fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Errorf("content %q", b)
	}
}

func TestWriteFileDoesNotChown(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := WriteFile(p, []byte("x"), 0o600, nil); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != os.Geteuid() {
		t.Errorf("uid %d, want this process's %d", st.Uid, os.Geteuid())
	}
}

func TestReadAttrsRefusesLinksAndSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real")
	os.WriteFile(target, nil, 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink(target, link)
	if _, err := ReadAttrs(link); !errors.Is(err, ErrNotPrivate) {
		t.Errorf("symlink: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	syscall.Mkfifo(fifo, 0o600)
	if _, err := ReadAttrs(fifo); !errors.Is(err, ErrNotPrivate) {
		t.Errorf("fifo: %v", err)
	}
}

func TestCreateExclusiveNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	bak := filepath.Join(dir, "k.bak")
	// A file and a planted symlink already hold the first two names.
	os.WriteFile(bak, []byte("earlier backup"), 0o600)
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep"), 0o600)
	os.Symlink(victim, bak+".1")
	name, err := CreateExclusive(bak, []byte("old keytab"), Attrs{Mode: 0o600, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	if name != bak+".2" {
		t.Errorf("wrote %s, want %s.2", name, bak)
	}
	for p, want := range map[string]string{bak: "earlier backup", victim: "keep", name: "old keytab"} {
		if b, _ := os.ReadFile(p); string(b) != want {
			t.Errorf("%s = %q, want %q", p, b, want)
		}
	}
}

func TestCanReproduce(t *testing.T) {
	if os.Geteuid() == 0 {
		if err := CanReproduce(Attrs{UID: 65534, GID: 65534}); err != nil {
			t.Errorf("root: %v", err)
		}
		return
	}
	if err := CanReproduce(Attrs{UID: os.Geteuid() + 1, GID: -1}); !errors.Is(err, ErrCannotReproduce) {
		t.Errorf("other owner: %v", err)
	}
}

func TestTrust(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	if err := TrustDir(dir); err != nil {
		t.Errorf("private dir: %v", err)
	}
	shared := filepath.Join(dir, "shared")
	os.Mkdir(shared, 0o777)
	os.Chmod(shared, 0o1777)
	if err := TrustDir(shared); !errors.Is(err, ErrUntrusted) {
		t.Errorf("world-writable dir: %v", err)
	}
	group := filepath.Join(dir, "group")
	os.Mkdir(group, 0o770)
	os.Chmod(group, 0o770)
	if err := TrustDir(group); !errors.Is(err, ErrUntrusted) {
		t.Errorf("group-writable dir: %v", err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(dir, link)
	if err := TrustDir(link); !errors.Is(err, ErrUntrusted) {
		t.Errorf("link to dir: %v", err)
	}

	f := filepath.Join(dir, "j.json")
	os.WriteFile(f, nil, 0o600)
	if err := TrustFile(f, true); err != nil {
		t.Errorf("0600 file: %v", err)
	}
	os.Chmod(f, 0o640)
	if err := TrustFile(f, true); !errors.Is(err, ErrUntrusted) {
		t.Errorf("group-readable secret: %v", err)
	}
	if err := TrustFile(f, false); err != nil {
		t.Errorf("group-readable, not secret: %v", err)
	}
	os.Chmod(f, 0o620)
	if err := TrustFile(f, false); !errors.Is(err, ErrUntrusted) {
		t.Errorf("group-writable: %v", err)
	}
	if os.Geteuid() == 0 {
		os.Chmod(f, 0o600)
		os.Chown(f, 65534, 65534)
		if err := TrustFile(f, true); !errors.Is(err, ErrUntrusted) {
			t.Errorf("other owner: %v", err)
		}
	}
}
