//go:build unix

package kdcops_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
)

func TestLintDir(t *testing.T) {
	root := t.TempDir()
	recent := time.Now().Add(-time.Hour)
	good := ktBytes(2, at(entry("host/a", 2, 18), recent), at(entry("host/a", 2, 17), recent))
	weak := ktBytes(2, at(entry("host/b", 2, 18), recent), at(entry("host/b", 2, 23), recent))
	write := func(rel string, data []byte, perm os.FileMode) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, perm); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, perm)
	}
	write("a/good.keytab", good, 0o600)
	write("a/renamed.txt", weak, 0o600)         // a keytab whatever its name
	write("b/c/open.kt", good, 0o644)           // KT002
	write("b/corrupt.keytab", good[:30], 0o600) // KT001
	write("b/README", []byte("not a keytab"), 0o644)
	write("b/empty", nil, 0o644)
	if err := os.Symlink(filepath.Join(root, "a/good.keytab"), filepath.Join(root, "b/link.keytab")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "b/fifo"), 0o600); err != nil {
		t.Fatal(err) // a FIFO must never be opened: reading it would block
	}

	var got []kdcops.KeytabFile
	stats, err := kdcops.LintDir(context.Background(), root, kdcops.LintOptions{MaxAge: 24 * time.Hour}, 3, func(r kdcops.KeytabFile) {
		got = append(got, r)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := kdcops.DirStats{Files: 6, Keytabs: 4, Skipped: 2, Special: 2, Entries: 6}
	if stats != want {
		t.Errorf("stats = %+v, want %+v", stats, want)
	}
	rules := map[string]string{}
	for _, r := range got {
		rules[strings.TrimPrefix(r.Path, root+"/")] = strings.Join(ruleIDs(r.Findings), ",")
	}
	for path, ids := range map[string]string{"a/good.keytab": "", "a/renamed.txt": "KT006", "b/c/open.kt": "KT002", "b/corrupt.keytab": "KT001"} {
		if rules[path] != ids {
			t.Errorf("%s: rules %q, want %q (all: %v)", path, rules[path], ids, rules)
		}
	}
	if len(rules) != 4 {
		t.Errorf("emitted %v, want the 4 keytabs", rules)
	}
}

func TestLintDirCancelled(t *testing.T) {
	root := t.TempDir()
	for i := range 50 {
		os.WriteFile(filepath.Join(root, "k"+string(rune('a'+i%26))+string(rune('a'+i/26))), ktBytes(2, entry("p", 1, 18)), 0o600)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := kdcops.LintDir(ctx, root, kdcops.LintOptions{}, 2, func(kdcops.KeytabFile) {})
	if err != context.Canceled {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestLintDirMissingRoot(t *testing.T) {
	_, err := kdcops.LintDir(context.Background(), "/nonexistent/krbops", kdcops.LintOptions{}, 0, func(kdcops.KeytabFile) {})
	if err == nil || err.Error() != "directory /nonexistent/krbops: no such file" {
		t.Errorf("err = %v", err)
	}
}

func TestLintDirUnreadableSubdir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads every directory")
	}
	root := t.TempDir()
	sub := filepath.Join(root, "locked")
	os.Mkdir(sub, 0o700)
	os.WriteFile(filepath.Join(sub, "k"), ktBytes(2, entry("p", 1, 18)), 0o600)
	os.Chmod(sub, 0)
	defer os.Chmod(sub, 0o700)
	var got []kdcops.KeytabFile
	stats, err := kdcops.LintDir(context.Background(), root, kdcops.LintOptions{}, 2, func(r kdcops.KeytabFile) { got = append(got, r) })
	if err != nil || stats.DirError != 1 || len(got) != 1 || got[0].Findings[0].Rule != "KT001" {
		t.Errorf("err %v stats %+v got %+v", err, stats, got)
	}
}
