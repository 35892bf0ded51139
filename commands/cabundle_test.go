package commands

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/krbops/krbops/internal/fault"
)

// A --ca-bundle another user could write, or a link, is exit 2 naming the
// flag, with a hint, before any HTTPS client exists.
func TestCABundleUntrustedIsAUsageError(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("not read\n"), 0o664); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ca, 0o664); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.pem")
	if err := os.Symlink(ca, link); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{ca: "its mode 0664 lets other users write it", link: "it is a symbolic link"} {
		g := &Globals{CABundle: path}
		_, err := g.TLS()
		if err == nil || !strings.HasPrefix(err.Error(), "--ca-bundle "+path+": ") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v", path, err)
		}
		if fault.ClassOf(err) != fault.Usage || !strings.Contains(fault.HintOf(err), "chmod go-w") {
			t.Errorf("%s: class %s, hint %q", path, fault.ClassOf(err), fault.HintOf(err))
		}
	}
}
