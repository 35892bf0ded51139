package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/krbops/krbops/rotate"
)

// Issue 12: the tier comes from the policy file, not from --tier. On the
// MIT lab, principals matching the control-plane pattern get the limit the
// file gives that tier (1 per 5h, not the built-in 2 per 6h): the second
// rotation of (c1, client) is refused by the rate-limit pre-check, --tier standard does not loosen that (exit 2,
// naming both), and a standard principal still has its tier's room.
func TestRotatePolicyTierLimit(t *testing.T) {
	l := newRotLab(t)
	pol := filepath.Join(l.dir, "policy.yaml")
	text := `clusters:
  c1:
    allowlisted: true
tiers:
  control-plane:
    principals: ["cp-*"]
    limit: 1
    window: 5h
  standard:
    principals: ["*"]
`
	if err := os.WriteFile(pol, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	args := func(name, kt string, extra ...string) []string {
		// No --allowlist and no --max-per-window: the policy decides.
		return append([]string{"rotate", "--policy", pol, "--principal", name, "--keytab", kt, "--role", "client",
			"--cluster", "c1", "--secret-store", l.store, "--ledger", l.ledger, "--journal-dir", l.journal,
			"--kdc-log", l.r.KDCs[0].Log, "--no-login-record-ok", "--yes"}, extra...)
	}
	for _, name := range []string{"cp-1"} {
		kt := l.principal(t, name)
		rep, code, stderr := runKrbops(t, l.r, args(name, kt)...)
		if code != 0 {
			t.Fatalf("%s: exit %d %s %+v", name, code, stderr, rep)
		}
	}
	kt := l.principal(t, "cp-3")
	rep, code, stderr := runKrbops(t, l.r, args("cp-3", kt)...)
	st, _ := rep.step("", rotate.StepRate)
	if code != 1 || st.Status != "fail" || !strings.Contains(st.Message, "1 rotations of (c1, client) in the last 5h0m0s: the window's limit of 1 is reached") {
		t.Errorf("cp-3: exit %d, rate step %+v (%s); want the policy's control-plane limit of 1 to refuse", code, st, stderr)
	}
	// The real binary: main prints the refusal.
	code, _, out := l.runBinary(t, "", args("cp-3", kt, "--tier", "standard")...)
	if code != 2 || !strings.Contains(out, "krbops: --tier standard contradicts the policy: cp-3@"+l.r.Name+" is in tier control-plane, policy "+pol+":6") {
		t.Errorf("cp-3 --tier standard: exit %d %s; want exit 2 naming both", code, out)
	}
	if !l.kinit(t, "cp-3", kt) {
		t.Errorf("the refused rotations changed cp-3's key")
	}
	web := l.principal(t, "web-1")
	rep, code, stderr = runKrbops(t, l.r, args("web-1", web)...)
	if st, _ := rep.step("", rotate.StepRate); code != 0 || st.Message != "1 of 20 rotations of (c1, client) in the last 1h0m0s" {
		t.Errorf("web-1 (standard): exit %d, rate step %+v (%s)", code, st, stderr)
	}
}
