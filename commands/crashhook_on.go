//go:build krbops_testhooks

package commands

// crashEnv names a step after which the process SIGKILLs itself: the
// crash tests' way to stop a rotation at an exact step boundary. Only a
// binary built with -tags krbops_testhooks (test/integration builds one)
// reads it.
const crashEnv = "KRBOPS_TEST_CRASH_AT"

// crashHook returns rotate's AfterStep hook: with KRBOPS_TEST_CRASH_AT set
// to a step id, the process dies like a power cut, with no deferred
// cleanup, exactly at that step boundary.
func crashHook(io *IOStreams) func(step string) {
	at := io.Getenv(crashEnv)
	if at == "" {
		return nil
	}
	return func(id string) {
		if id == at {
			killSelf()
		}
	}
}
