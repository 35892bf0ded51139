package lab

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/spawn"
)

// ForTest starts a realm for t in t.TempDir and closes it in t.Cleanup.
// When the MIT binaries are missing it skips t with the install command,
// except under CI=true, where a missing KDC fails the test: CI must never
// silently skip the Kerberos tests.
func ForTest(t testing.TB, opts Options) *Realm {
	t.Helper()
	if miss := Missing(); len(miss) > 0 {
		spawn.Require(t, "KDC", fmt.Errorf("lab: MIT Kerberos lab needs %s; install with: sudo %s", strings.Join(miss, ", "), InstallCommand), true)
	}
	timeout := 30 * time.Second
	if opts.Kind == AD {
		if miss := MissingAD(); len(miss) > 0 {
			spawn.Require(t, "Samba AD DC", fmt.Errorf("lab: the AD lab needs %s; install with: sudo %s", strings.Join(miss, ", "), ADInstallCommand), true)
		}
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
