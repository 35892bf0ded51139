package rotate

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/ledger"
	"github.com/krbops/krbops/runbook"
)

// Issue 10 §1: a journal that does not tell the same story as its ledger
// record and the store's pending version is refused before the KDC could
// be asked for anything, and the principal keeps its key.
func TestResumeRefusesJournalNotBoundToItsRotation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(j map[string]any)
		want   string
	}{
		{"kvnos", func(j map[string]any) { j["old_kvno"], j["new_kvno"] = 7.0, 8.0 }, "rotates kvno 2 to 3, the journal 7 to 8"},
		// Another journal id is another lock holder: the lock refuses first.
		{"journal id", func(j map[string]any) { j["id"] = "someoneelse00000" }, "is locked by"},
		{"pending keytab", func(j map[string]any) {
			p := j["pending"].(string)
			j["pending"] = strings.Repeat("A", len(p)-4) + p[len(p)-4:]
		}, "pending keytab"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRig(t, Client, BackendKpasswd)
			g.run(false, StepPutPending) // crash with the pending version stored, before the KDC change
			path := JournalPath(g.journal, g.principal)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var j map[string]any
			json.Unmarshal(b, &j)
			tc.tamper(j)
			b, _ = json.Marshal(j)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			out := g.run(true, "")
			wantSteps(t, out.rep, StepLock, runbook.Fail)
			if sr, _ := stepOf(out.rep, StepLock); !strings.Contains(sr.Message, tc.want) {
				t.Errorf("preflight.lock: %q, want it to say %q", sr.Message, tc.want)
			}
			if n := g.kdc.ChangeRequests(g.principal); n != 0 {
				t.Errorf("%d key-change requests, want none", n)
			}
			g.check(final{kvno: rigOldKVNO, completed: false, login: true})
		})
	}
}

// Issue 10 §1: a journal directory others can write to, or a journal file
// another user could have planted, never leads to a KDC change.
func TestUntrustedJournalRefused(t *testing.T) {
	t.Run("shared directory", func(t *testing.T) {
		g := newRig(t, Client, BackendKpasswd)
		if err := os.MkdirAll(g.journal, 0o777); err != nil {
			t.Fatal(err)
		}
		os.Chmod(g.journal, 0o1777)
		out := g.run(false, "")
		wantSteps(t, out.rep, StepLock, runbook.Error)
		if out.rep.Class != fault.Usage {
			t.Errorf("class %s, want usage", out.rep.Class)
		}
		if n := g.kdc.ChangeRequests(g.principal); n != 0 {
			t.Errorf("%d key-change requests", n)
		}
	})
	t.Run("group-readable journal", func(t *testing.T) {
		g := newRig(t, Client, BackendKpasswd)
		g.run(false, StepPutPending)
		os.Chmod(JournalPath(g.journal, g.principal), 0o640)
		if _, err := LoadJournal(g.journal, g.principal); err == nil || !strings.Contains(err.Error(), "not trusted") {
			t.Fatalf("LoadJournal = %v, want it refused", err)
		}
		// A fresh run refuses too: the journal is not read, not trusted,
		// and not overwritten.
		out := g.run(false, "")
		wantSteps(t, out.rep, StepLock, runbook.Error)
		if n := g.kdc.ChangeRequests(g.principal); n != 0 {
			t.Errorf("%d key-change requests", n)
		}
	})
	if os.Geteuid() == 0 {
		t.Run("journal of another user", func(t *testing.T) {
			g := newRig(t, Client, BackendKpasswd)
			g.run(false, StepPutPending)
			if err := os.Chown(JournalPath(g.journal, g.principal), 65534, 65534); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadJournal(g.journal, g.principal); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
				t.Fatalf("LoadJournal = %v, want it refused", err)
			}
		})
	}
}

// Issue 10 §3: two identical rotations started at once. The loser takes
// the lock second and touches nothing of the winner's; afterwards the
// principal authenticates with its keytab, the KDC changed once, and the
// next plain rotation completes.
func TestConcurrentRotations(t *testing.T) {
	for i := range 10 {
		g := newRig(t, Client, BackendKpasswd)
		var wg sync.WaitGroup
		outs := make([]outcome, 2)
		for k := range outs {
			wg.Go(func() { outs[k] = g.run(false, "") })
		}
		wg.Wait()
		won := 0
		for _, o := range outs {
			if sr, ok := stepOf(o.rep, StepLedger); ok && sr.Status == runbook.Pass {
				won++
			}
		}
		// One wins; the other loses the lock, or finds the kvno moved
		// under it, or — scheduled after the first finished — rotates
		// again from the new keytab. Never a change nobody completed.
		if won < 1 {
			t.Fatalf("round %d: no rotation completed:%s\n---%s", i, steps(outs[0].rep), steps(outs[1].rep))
		}
		if n := g.kdc.ChangeRequests(g.principal); n != won {
			t.Errorf("round %d: %d key changes for %d completed rotations", i, n, won)
		}
		if got := g.kdc.KVNO(g.principal); got != rigOldKVNO+uint32(won) {
			t.Errorf("round %d: kvno %d after %d completed rotations", i, got, won)
		}
		g.keytabLogsIn()
		out := g.run(false, "")
		wantSteps(t, out.rep, StepLedger, runbook.Pass)
		if got := g.kdc.KVNO(g.principal); got != rigOldKVNO+uint32(won)+1 {
			t.Errorf("round %d: after the next rotation kvno %d", i, got)
		}
		g.keytabLogsIn()
	}
}

// keytabLogsIn fails the test unless the principal's keytab file logs in
// at the KDC's current kvno.
func (g *rig) keytabLogsIn() {
	g.t.Helper()
	ents, _, err := readKeytab(g.keytab, g.principal)
	if err != nil {
		g.t.Fatal(err)
	}
	sess, err := g.kdc.Login(context.Background(), kdcops.AtKVNO(ents, g.kdc.KVNO(g.principal)))
	if err != nil || sess == nil {
		g.t.Errorf("the keytab file does not log in at kvno %d: %v", g.kdc.KVNO(g.principal), err)
	}
}

// Issue 10 §4: --dry-run is a rehearsal. The read-only pre-checks run for
// real and can fail it; nothing is written: no journal, no store version,
// no ledger record or lock, no key change.
func TestDryRunRehearses(t *testing.T) {
	dry := func(g *rig, mutate func(*Rotation)) *runbook.Report {
		t.Helper()
		led, err := ledger.OpenFile(g.ledger, ledger.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer led.Close()
		r := g.rotation(g.openStore(), led)
		if mutate != nil {
			mutate(r)
		}
		return runbook.Run(context.Background(), r.Plan(false, nil), runbook.Options{})
	}
	nothingWritten := func(g *rig) {
		t.Helper()
		if _, err := os.Stat(g.journal); !os.IsNotExist(err) {
			t.Errorf("journal directory: %v, want none", err)
		}
		if cur, _ := g.storeCurrent(); cur != nil {
			t.Error("the store has a version")
		}
		led, err := ledger.OpenFile(g.ledger, ledger.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer led.Close()
		if rots, _ := led.List(context.Background(), ledger.Filter{}); len(rots) != 0 {
			t.Errorf("ledger records %+v", rots)
		}
		if locks, _ := led.Locks(context.Background()); len(locks) != 0 {
			t.Errorf("ledger locks %+v", locks)
		}
		if n := g.kdc.ChangeRequests(g.principal); n != 0 || g.kdc.KVNO(g.principal) != rigOldKVNO {
			t.Errorf("%d key changes, kvno %d", n, g.kdc.KVNO(g.principal))
		}
	}

	g := newRig(t, Client, BackendKpasswd)
	rep := dry(g, nil)
	for _, id := range []string{StepClock, StepKeytab, StepKpasswd, StepStore, StepAllowlist, StepRate, StepLastLogin, StepLock} {
		if sr, _ := stepOf(rep, id); sr.Status != runbook.Pass {
			t.Errorf("%s: %s %q, want a real pass", id, sr.Status, sr.Message)
		}
	}
	for _, id := range []string{StepCreate, StepPutPending, StepSet, StepTest, StepPromote, StepPublish, StepLedger} {
		if sr, _ := stepOf(rep, id); sr.Status != runbook.Skip || !strings.HasPrefix(sr.Message, "dry-run: would ") {
			t.Errorf("%s: %s %q", id, sr.Status, sr.Message)
		}
	}
	if rep.Class != fault.OK {
		t.Errorf("class %s", rep.Class)
	}
	nothingWritten(g)

	// A cluster outside the allowlist fails the rehearsal.
	g = newRig(t, Client, BackendKpasswd)
	rep = dry(g, func(r *Rotation) { r.Cluster = "c9" })
	if sr, _ := stepOf(rep, StepAllowlist); sr.Status != runbook.Fail || rep.Class != fault.CheckFailed {
		t.Errorf("allowlist: %s %q, class %s", sr.Status, sr.Message, rep.Class)
	}
	nothingWritten(g)

	// A missing keytab is local input: exit 2.
	g = newRig(t, Client, BackendKpasswd)
	rep = dry(g, func(r *Rotation) { r.Keytab += ".missing" })
	if sr, _ := stepOf(rep, StepKeytab); sr.Status != runbook.Error || rep.Class != fault.Usage {
		t.Errorf("keytab: %s %q, class %s", sr.Status, sr.Message, rep.Class)
	}
	nothingWritten(g)
}

// A crash inside finish.ledger, after the record says succeeded and the
// lock is released but before the journal is removed: --resume finishes
// (it removes the journal) instead of calling the journal foreign. Found
// by the random-kill integration test under load.
func TestResumeAfterCrashInsideFinishLedger(t *testing.T) {
	g := newRig(t, Client, BackendKpasswd)
	wantCrash(t, g.run(false, StepPublish).rep, StepPublish)
	j := g.loadJournal()
	led, err := ledger.OpenFile(g.ledger, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := led.Update(context.Background(), j.LedgerID, func(r *ledger.Rotation) error { r.Outcome = ledger.Succeeded; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := led.Unlock(context.Background(), g.principal, "krbops rotate "+j.ID); err != nil {
		t.Fatal(err)
	}
	led.Close()
	out := g.run(true, "")
	wantSteps(t, out.rep, StepLedger, runbook.Pass)
	if _, err := LoadJournal(g.journal, g.principal); err != ErrNoJournal {
		t.Errorf("journal after the resume: %v", err)
	}
	g.check(final{kvno: rigOldKVNO + 1, completed: true, login: true})
}
