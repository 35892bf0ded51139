package lab

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/spawn"
)

// ForTest starts a realm of opts.Kind for t in t.TempDir and closes it in
// t.Cleanup. When that kind's programs are missing (MissingFor) it skips t
// with the install command, except under CI=true, where a missing KDC
// fails the test: CI must never silently skip the Kerberos tests.
func ForTest(t testing.TB, opts Options) *Realm {
	t.Helper()
	if miss := MissingFor(opts.Kind); len(miss) > 0 {
		spawn.Require(t, "KDC", fmt.Errorf("lab: %s Kerberos lab needs %s; install with: sudo %s", kindTitle(opts.Kind), strings.Join(miss, ", "), InstallCommandFor(opts.Kind)), true)
	}
	timeout := 30 * time.Second
	if opts.Kind == AD {
		timeout = adStartTimeout
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("lab: start realm: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, k := range r.KDCList() {
				if s := spawn.Tail(k.Log, 2048); s != "" {
					t.Logf("lab: %s (tail):\n%s", k.Log, s)
				}
			}
		}
		if err := r.Close(); err != nil {
			t.Errorf("lab: close realm: %v", err)
		}
	})
	return r
}

// MissingFor reports which programs a realm of kind k needs and lacks.
// Every kind's tests drive the realm with MIT's client tools (kinit,
// klist, kvno), so a Heimdal or AD realm needs those besides its own
// programs.
func MissingFor(k Kind) []string {
	var miss []string
	switch k {
	case Heimdal:
		_, miss = findHeimdal()
	case AD:
		miss = MissingAD()
	default:
		return Missing()
	}
	for _, b := range clientBins {
		if _, err := lookBin(b); err != nil {
			miss = append(miss, b)
		}
	}
	return miss
}

// InstallCommandFor is the command (to run as root) that installs what
// MissingFor(k) reports; for Heimdal or AD without MIT's client tools it
// is `make deps`, which installs both.
func InstallCommandFor(k Kind) string {
	if k != Heimdal && k != AD {
		return InstallCommand
	}
	for _, b := range clientBins {
		if _, err := lookBin(b); err != nil {
			return "make deps"
		}
	}
	if k == AD {
		return ADInstallCommand
	}
	return HeimdalInstallCommand
}

// clientBins are the MIT client tools tests run against every kind.
var clientBins = []string{"kinit", "klist", "kvno"}

func kindTitle(k Kind) string {
	switch k {
	case Heimdal:
		return "Heimdal"
	case AD:
		return "Samba AD"
	}
	return "MIT"
}
