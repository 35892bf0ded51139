//go:build unix

package dynamo

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/krbops/krbops/internal/fault"
)

// A FIFO as --checkpoint or --out is refused before anything is opened
// for reading or writing: either open would wait for the other end
// forever (a hang shows as go test's -timeout).
func TestPrepareRefusesFIFOs(t *testing.T) {
	f := newFixture(t, 10)
	cp := filepath.Join(f.dir, "cp.fifo")
	if err := syscall.Mkfifo(cp, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	_, err := f.prepare(context.Background(), func(c *Config) { c.Checkpoint = cp })
	var ce *CheckpointError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "it is a named pipe (FIFO), not a regular file") {
		t.Errorf("FIFO checkpoint: %v", err)
	}
	if fault.ClassOf(err) != fault.Usage {
		t.Errorf("FIFO checkpoint: class %s", fault.ClassOf(err))
	}

	out := filepath.Join(f.dir, "out.fifo")
	if err := syscall.Mkfifo(out, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = f.prepare(context.Background(), func(c *Config) { c.Out = out })
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "Out" || !strings.Contains(err.Error(), "it is a named pipe (FIFO), not a regular file") {
		t.Errorf("FIFO output: %v", err)
	}
}
