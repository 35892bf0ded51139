//go:build unix

package commands

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/krbops/krbops/internal/fault"
)

// A FIFO named as the targets file is refused at once; reading it would
// wait for a writer forever (a hang shows as go test's -timeout).
func TestReadTargetsRefusesFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "targets.fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	_, err := ReadTargets(p)
	if err == nil || err.Error() != "--targets "+p+": it is a named pipe (FIFO), not a regular file" {
		t.Fatalf("error %v", err)
	}
	if fault.ClassOf(err) != fault.Usage || !strings.Contains(fault.HintOf(err), "regular file") {
		t.Errorf("class %s, hint %q", fault.ClassOf(err), fault.HintOf(err))
	}
}
