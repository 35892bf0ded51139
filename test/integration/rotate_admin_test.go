package integration

// Issue 10 §3: rotate status shows who holds a lock and whether it still
// runs; rotate unlock breaks a dead holder's lock with a reason; rotate
// abort discards a rotation that never reached the KDC and refuses one
// that may have. Real binary (with the test-only crash hook), real MIT KDC.

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/krbops/krbops/ledger"
	"github.com/krbops/krbops/rotate"
)

func TestRotateStatusUnlockAbort(t *testing.T) {
	l := newRotLab(t)
	name := "admin-abort"
	kt := l.principal(t, name)
	// Killed right after preflight.lock: a journal, a lock whose holder
	// is dead, nothing at the KDC.
	if _, killed, out := l.runBinary(t, rotate.StepLock, l.args(name, kt, "client", rotate.BackendKpasswd)...); !killed {
		t.Fatalf("not killed:\n%s", out)
	}
	status := func() string {
		t.Helper()
		code, _, out := l.runBinary(t, "", "rotate", "status", "--ledger", l.ledger, "--journal-dir", l.journal, "-o", "json")
		if code != 0 {
			t.Fatalf("status: exit %d\n%s", code, out)
		}
		return out
	}
	out := status()
	if !strings.Contains(out, `"lock_alive": "dead"`) || !strings.Contains(out, `"lock_step": "locked"`) {
		t.Errorf("status does not show the dead holder and its step:\n%s", out)
	}
	// A new plain rotation refuses: the journal is there.
	if code, _, out := l.runBinary(t, "", l.args(name, kt, "client", rotate.BackendKpasswd)...); code != 1 || !strings.Contains(out, "in progress") {
		t.Errorf("a second rotation: exit %d\n%s", code, out)
	}
	// unlock without --force or --reason is a usage error.
	if code, _, _ := l.runBinary(t, "", "rotate", "unlock", "--principal", name, "--ledger", l.ledger); code != 2 {
		t.Errorf("unlock without --force: exit %d, want 2", code)
	}
	code, _, out := l.runBinary(t, "", "rotate", "unlock", "--principal", name, "--ledger", l.ledger, "--force", "--reason", "krbops was killed mid-rotation", "-o", "json")
	if code != 0 || !strings.Contains(out, "broke the lock") {
		t.Fatalf("unlock: exit %d\n%s", code, out)
	}
	led, err := ledger.OpenFile(l.ledger, ledger.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := led.Events(context.Background(), name+"@"+l.r.Name)
	led.Close()
	if err != nil || len(evs) != 1 || evs[0].Action != "unlock" || evs[0].Reason != "krbops was killed mid-rotation" || evs[0].Operator == "" {
		t.Errorf("audit trail %+v %v, want the unlock with who and why", evs, err)
	}
	// abort needs --reason, then discards the journal and the record.
	code, _, out = l.runBinary(t, "", "rotate", "abort", "--principal", name, "--secret-store", l.store, "--ledger", l.ledger,
		"--journal-dir", l.journal, "--reason", "rehearsal", "--yes", "-o", "json")
	if code != 0 {
		t.Fatalf("abort: exit %d\n%s", code, out)
	}
	var rep struct {
		Steps []struct{ ID, Status string } `json:"steps"`
	}
	json.Unmarshal([]byte(out), &rep)
	if len(rep.Steps) != 3 || rep.Steps[2].ID != rotate.StepAbortLedger || rep.Steps[2].Status != "pass" {
		t.Errorf("abort report %+v", rep.Steps)
	}
	if !strings.Contains(status(), "no rotation in progress") {
		t.Error("status after abort still shows something")
	}
	if !l.kinit(t, name, kt) {
		t.Error("the aborted rotation broke the keytab")
	}
	// The next rotation completes.
	if code, _, out := l.runBinary(t, "", l.args(name, kt, "client", rotate.BackendKpasswd)...); code != 0 {
		t.Fatalf("rotation after the abort: exit %d\n%s", code, out)
	}
	l.checkRotatedClient(t, name, kt, 2)

	// A rotation killed after the key change: abort refuses and points at
	// --resume, which completes it.
	name = "admin-noabort"
	kt = l.principal(t, name)
	if _, killed, out := l.runBinary(t, rotate.StepSet, l.args(name, kt, "client", rotate.BackendKpasswd)...); !killed {
		t.Fatalf("not killed:\n%s", out)
	}
	code, _, out = l.runBinary(t, "", "rotate", "abort", "--principal", name, "--secret-store", l.store, "--ledger", l.ledger,
		"--journal-dir", l.journal, "--reason", "too late", "--yes")
	if code != 1 || !strings.Contains(out, "may have reached the KDC") || !strings.Contains(out, "rotate --resume") {
		t.Errorf("abort after set.kdc: exit %d\n%s", code, out)
	}
	resume := []string{"rotate", "--resume", "--principal", name, "--secret-store", l.store, "--ledger", l.ledger, "--journal-dir", l.journal, "--yes"}
	if code, _, out := l.runBinary(t, "", resume...); code != 0 {
		t.Fatalf("resume: exit %d\n%s", code, out)
	}
	l.checkRotatedClient(t, name, kt, 2)
}
