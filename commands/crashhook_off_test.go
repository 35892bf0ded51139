//go:build !krbops_testhooks

package commands

import "testing"

// A release build (no krbops_testhooks tag) has no crash hook: whatever
// KRBOPS_TEST_CRASH_AT says, rotate gets no AfterStep, and the variable is
// not even read. test/integration checks the built binary too.
func TestReleaseBuildHasNoCrashHook(t *testing.T) {
	io := &IOStreams{Getenv: func(k string) string {
		t.Errorf("the release build's crash hook read $%s", k)
		return "preflight.clock"
	}}
	if h := crashHook(io); h != nil {
		t.Fatal("crashHook returned a hook in a build without krbops_testhooks")
	}
}
