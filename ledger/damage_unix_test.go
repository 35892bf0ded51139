//go:build unix

package ledger

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/krbops/krbops/internal/fault"
)

// guard turns a real SIGBUS — a read of a mapped page past the end of a
// file, what bbolt does on a ledger cut short — into an error. Without
// SetPanicOnFault this test binary would die.
func TestGuardRecoversSIGBUS(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mapped")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ps := os.Getpagesize()
	if err := f.Truncate(int64(ps)); err != nil {
		t.Fatal(err)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, ps, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Skip("mmap:", err)
	}
	defer syscall.Munmap(mem)
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	var sink byte
	err = guard(p, func() error {
		sink = mem[ps/2] // faults: the page is past the end of the file
		return nil
	})
	_ = sink
	var de *DamagedError
	if !errors.As(err, &de) || !de.recovered || !strings.Contains(err.Error(), "faulted") || fault.ClassOf(err) != fault.Usage {
		t.Fatalf("guard: %v", err)
	}
}

func TestLedgerFIFOIsRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ledger.db")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	for _, ro := range []bool{false, true} {
		_, err := OpenFile(p, Options{ReadOnly: ro})
		if err == nil || err.Error() != "ledger "+p+": it is a named pipe (FIFO), not a regular file" || fault.ClassOf(err) != fault.Usage {
			t.Errorf("read-only %t: %v", ro, err)
		}
	}
}
