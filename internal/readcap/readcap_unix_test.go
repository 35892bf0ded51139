//go:build unix

package readcap

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A FIFO is refused at once: were the open or the read to wait for a
// writer, this test would hang until go test's -timeout.
func TestDevicesAndFIFOsAreRefusedWithoutBlocking(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	_, err := ReadFile(fifo, 1<<20)
	if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "it is a named pipe (FIFO), not a regular file") {
		t.Errorf("FIFO: %v", err)
	}
	for _, dev := range []string{"/dev/null", "/dev/zero"} {
		if _, err := os.Stat(dev); err != nil {
			continue
		}
		_, err := ReadFile(dev, 1<<20)
		if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "character device") {
			t.Errorf("%s: %v", dev, err)
		}
	}
}
