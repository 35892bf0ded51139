package motolab

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/spawn"
)

// ForTest starts a moto_server for t and stops it in t.Cleanup. When
// moto_server is not installed it skips t with the install hint, except
// under CI=true, where a missing server fails the test: CI must never
// silently skip the AWS tests.
func ForTest(t testing.TB, opts Options) *Server {
	t.Helper()
	if _, err := Bin(); err != nil {
		spawn.Require(t, "moto_server", err, errors.Is(err, errMissing))
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout+10*time.Second)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("motolab: start: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if out := spawn.Tail(s.Log, 4096); out != "" {
				t.Logf("motolab: %s (tail):\n%s", s.Log, out)
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("motolab: close: %v", err)
		}
	})
	return s
}
