package kdcops_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/krbops/krbops/internal/readcap"
	"github.com/krbops/krbops/kdcops"
)

// A krb5.conf, or a file it includes, that is a FIFO is refused at once,
// naming it; opening or reading it would wait for a writer forever (a hang
// shows as go test's -timeout).
func TestLoadConfigRefusesFIFOs(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.conf")
	if err := mkfifo(fifo); err != nil {
		t.Skip(err)
	}
	_, err := kdcops.LoadConfig(fifo)
	if !errors.Is(err, readcap.ErrNotRegular) || err.Error() != "krb5.conf "+fifo+": it is a named pipe (FIFO), not a regular file" {
		t.Errorf("krb5.conf FIFO: %v", err)
	}

	main := writeFile(t, dir, "krb5.conf", "[libdefaults]\n default_realm = A.TEST\ninclude "+fifo+"\n")
	_, err = kdcops.LoadConfig(main)
	if !errors.Is(err, readcap.ErrNotRegular) || !strings.Contains(err.Error(), "krb5.conf "+fifo+": ") {
		t.Errorf("included FIFO: %v", err)
	}

	incdir := filepath.Join(dir, "conf.d")
	os.Mkdir(incdir, 0o755)
	if err := mkfifo(filepath.Join(incdir, "realms.conf")); err != nil {
		t.Fatal(err)
	}
	main = writeFile(t, dir, "krb5-dir.conf", "[libdefaults]\n default_realm = A.TEST\nincludedir "+incdir+"\n")
	if _, err := kdcops.LoadConfig(main); !errors.Is(err, readcap.ErrNotRegular) {
		t.Errorf("FIFO in an includedir: %v", err)
	}
}

func TestLoadConfigRefusesDevices(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	_, err := kdcops.LoadConfig("/dev/zero")
	if !errors.Is(err, readcap.ErrNotRegular) || !strings.Contains(err.Error(), "character device") {
		t.Errorf("/dev/zero: %v", err)
	}
}

func TestLoadConfigSizeCaps(t *testing.T) {
	dir := t.TempDir()
	// Comments are valid krb5.conf: the cap, not the parser, must refuse it.
	big := writeFile(t, dir, "big.conf", "[libdefaults]\n"+strings.Repeat("# padding padding padding padding\n", 40000))
	_, err := kdcops.LoadConfig(big)
	if !errors.Is(err, readcap.ErrTooLarge) || !strings.Contains(err.Error(), "krb5.conf "+big+": 1.3 MiB is larger than the 1 MiB limit") {
		t.Errorf("oversized krb5.conf: %v", err)
	}

	// Many files under the per-file cap, together over the total.
	incdir := filepath.Join(dir, "conf.d")
	os.Mkdir(incdir, 0o755)
	chunk := "[libdefaults]\n" + strings.Repeat("# padding padding padding padding\n", 25000)
	for _, n := range []string{"a.conf", "b.conf", "c.conf", "d.conf", "e.conf"} {
		writeFile(t, incdir, n, chunk)
	}
	main := writeFile(t, dir, "krb5.conf", "[libdefaults]\n default_realm = A.TEST\nincludedir "+incdir+"\n")
	_, err = kdcops.LoadConfig(main)
	if !errors.Is(err, readcap.ErrTooLarge) || !strings.Contains(err.Error(), "krb5.conf and its includes exceed 4 MiB together") {
		t.Errorf("oversized includedir: %v", err)
	}
}

// clock-check guesses the operator's principal from the default cache
// path: a FIFO planted there must not hang it.
func TestCCachePrincipalRefusesFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "krb5cc_fifo")
	if err := mkfifo(fifo); err != nil {
		t.Skip(err)
	}
	_, err := kdcops.CCachePrincipal(fifo)
	if err == nil || err.Error() != "credential cache "+fifo+": it is a named pipe (FIFO), not a regular file" {
		t.Errorf("CCachePrincipal: %v", err)
	}
	_, err = kdcops.ReadCCacheFile(fifo, kdcops.CCacheOptions{})
	if !errors.Is(err, readcap.ErrNotRegular) {
		t.Errorf("ReadCCacheFile: %v", err)
	}
}
