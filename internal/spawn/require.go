package spawn

import (
	"os"
	"testing"
)

// Require applies the harnesses' one policy for a dependency that is not
// there: err says what is wrong (with the install command when missing).
// A missing dependency skips t on a developer's machine but fails it under
// CI=true, where a skipped KDC, moto or dynalite test would let a broken
// build land looking green. Any other error fails t.
func Require(t testing.TB, what string, err error, missing bool) {
	t.Helper()
	switch {
	case err == nil:
	case missing && os.Getenv("CI") != "true":
		t.Skip(err.Error())
	case missing:
		t.Fatalf("%v (CI=true: a missing %s is a failure, not a skip)", err, what)
	default:
		t.Fatal(err)
	}
}
