package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// testHooksTag compiles the rotate crash hook (KRBOPS_TEST_CRASH_AT) into
// a krbops binary; release builds never set it.
const testHooksTag = "krbops_testhooks"

type builtBin struct {
	once sync.Once
	path string
	err  error
}

var (
	binDir              string
	testBin, releaseBin builtBin
	binDirOnce          sync.Once
	binDirErr           error
)

// TestMain removes the krbops binaries the tests build.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// build runs go build for cmd/krbops once per test binary into binDir.
func (b *builtBin) build(t *testing.T, name string, args ...string) string {
	t.Helper()
	b.once.Do(func() {
		binDirOnce.Do(func() { binDir, binDirErr = os.MkdirTemp("", "krbops-it-bin-") })
		if binDirErr != nil {
			b.err = binDirErr
			return
		}
		b.path = filepath.Join(binDir, name)
		argv := append(append([]string{"build"}, args...), "-o", b.path, "github.com/krbops/krbops/cmd/krbops")
		if out, err := exec.Command("go", argv...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go %v: %v\n%s", argv, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// krbopsBin is the real krbops binary built with the krbops_testhooks tag:
// the kill tests need a process of its own to SIGKILL, and the rotate
// crash tests need its KRBOPS_TEST_CRASH_AT hook.
func krbopsBin(t *testing.T) string {
	t.Helper()
	return testBin.build(t, "krbops-testhooks", "-tags", testHooksTag)
}

// A release build (make build, make cross, goreleaser: no build tags) has
// no crash hook: the variable's name is not even in the binary, while the
// test build's is, and neither the Makefile nor goreleaser sets the tag.
func TestReleaseBinaryHasNoCrashHook(t *testing.T) {
	const env = "KRBOPS_TEST_CRASH_AT"
	release, err := os.ReadFile(releaseBin.build(t, "krbops-release", "-trimpath"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(release, []byte(env)) {
		t.Errorf("a build without -tags %s contains %s", testHooksTag, env)
	}
	hooked, err := os.ReadFile(krbopsBin(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(hooked, []byte(env)) {
		t.Errorf("the -tags %s build lacks %s: this check proves nothing", testHooksTag, env)
	}
	for _, f := range []string{"../../Makefile", "../../goreleaser.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(testHooksTag)) {
			t.Errorf("%s mentions %s: release builds must not set it", f, testHooksTag)
		}
	}
}
