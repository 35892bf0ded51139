//go:build unix

package secretstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A version file or manifest replaced by a FIFO, or grown past any size
// krbops writes, is reported as corruption naming the file; reading a
// FIFO would wait for a writer forever (a hang shows as go test's
// -timeout).
func TestFileHostileFilesAreCorrupt(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t, storeDir(t))
	v, err := s.Seed(ctx, principal, keytab("one"), NewToken())
	if err != nil {
		t.Fatal(err)
	}
	vf := filepath.Join(s.dir(principal), versionFile(v.ID))
	os.Remove(vf)
	if err := syscall.Mkfifo(vf, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	_, err = s.Get(ctx, principal, StageCurrent)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), vf+": it is a named pipe (FIFO), not a regular file") {
		t.Errorf("Get of a FIFO version file = %v", err)
	}
	os.Remove(vf)
	if err := os.WriteFile(vf, make([]byte, MaxDataSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(ctx, principal, StageCurrent)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "larger than the 64 KiB limit") {
		t.Errorf("Get of an oversized version file = %v", err)
	}

	mf := filepath.Join(s.dir(principal), manifestFile)
	os.Remove(mf)
	if err := syscall.Mkfifo(mf, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Versions(ctx, principal); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "named pipe") {
		t.Errorf("Versions with a FIFO manifest = %v", err)
	}
}

// The chmod and mkdir hints quote the store path for the shell: a
// directory name can hold $(...), quotes or spaces.
func TestFileHintsQuotePaths(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "it's $(id) store")
	s := newFileStore(t, root)
	if err := s.Check(ctx, principal); !strings.Contains(HintOf(err), `mkdir -m 700 '`+strings.ReplaceAll(root, "'", `'\''`)+`'`) {
		t.Errorf("missing store: hint %q", HintOf(err))
	}
	if err := os.Mkdir(root, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o777)
	if err := s.Check(ctx, principal); !strings.Contains(HintOf(err), `chmod go-w '`+strings.ReplaceAll(root, "'", `'\''`)+`'`) {
		t.Errorf("open store: hint %q", HintOf(err))
	}
}

// Issue 10: a file store whose directory another user owns is not
// trusted with a key change, whatever its mode.
func TestFileStoreOfAnotherUserIsInsecure(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the directory to another user")
	}
	root := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(root, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	s := newFileStore(t, root)
	if err := s.Check(context.Background(), principal); !errors.Is(err, ErrInsecure) || !strings.Contains(err.Error(), "belongs to another user") {
		t.Errorf("Check = %v, want ErrInsecure naming the owner", err)
	}
}
