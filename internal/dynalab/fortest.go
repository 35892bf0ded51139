package dynalab

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/spawn"
)

// ForTest starts dynalite for t and stops it in t.Cleanup. When dynalite or
// node is missing it skips t with the install command, except under
// CI=true, where that is a failure: CI must never silently skip the
// DynamoDB tests (the same policy as lab.ForTest).
func ForTest(t testing.TB) *Server {
	t.Helper()
	if err := Missing(); err != nil {
		spawn.Require(t, "dynalite", err, errors.Is(err, errMissing))
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout+5*time.Second)
	defer cancel()
	s, err := Start(ctx, Options{Dir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatalf("dynalab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if out := spawn.Tail(s.Log, 2048); out != "" {
				t.Logf("dynalab: %s (tail):\n%s", s.Log, out)
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("dynalab: %v", err)
		}
	})
	return s
}
