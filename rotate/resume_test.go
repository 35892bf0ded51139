package rotate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
)

var (
	roles    = []Role{Client, Server}
	backends = []string{BackendKpasswd, BackendKpasswdAdmin, BackendKadmin}
)

// kdcAt is the principal's key at the KDC when --resume runs.
type kdcAt string

const (
	kdcOld kdcAt = "old" // the key from before the rotation, kvno 2
	kdcNew kdcAt = "new" // the journal's new key, kvno 3
)

// resumeCase is one row of the resume matrix: what the journal, the KDC
// and the secret store hold when --resume runs, and what it must do.
type resumeCase struct {
	state    string // the journal's state; "none" when there is no journal
	kdc      kdcAt
	promoted bool   // the store's pending version is already current
	why      string // how the combination arises, where it is not a plain crash

	// What --resume does.
	nothing     bool           // finds no rotation to resume (exit 1); the operator starts a fresh one
	alreadyDone bool           // reports the rotation the ledger says ended
	stop        string         // the first step that does not pass; "" when all pass
	stopStatus  runbook.Status // stop's status
	setMsg      string         // in set.kdc's message
	requests    int            // key-change requests sent after the crash

	// What is left afterwards.
	newKVNO   bool // the KDC holds kvno 3 (else kvno 2)
	completed bool // keytab published, store current, ledger recorded, journal gone
	lockout   bool // a client's store-current keytab no longer logs in
}

func (c resumeCase) name() string {
	store := "pending"
	if c.promoted {
		store = "promoted"
	}
	return fmt.Sprintf("%s/kdc-%s/store-%s", c.state, c.kdc, store)
}

const (
	changed     = "changed the key"
	notRepeated = "changed before the crash): not repeated"
	alreadyHeld = "already holds kvno"
)

// resumeCases covers every journal state, with the KDC at the old or the
// journal's new key, and the store's pending version promoted or not,
// except the combinations in impossible. KDC "old" from set.kdc on means
// the KDC was restored from a backup taken before the change: resume then
// trusts its journal (see the rows' why).
var resumeCases = []resumeCase{
	{state: "none", kdc: kdcOld, why: "killed before the lock: nothing changed, nothing to resume",
		nothing: true, requests: 1, newKVNO: true, completed: true},
	{state: "none", kdc: kdcNew, promoted: true, why: "killed after the last step: the ledger says it ended",
		alreadyDone: true, newKVNO: true, completed: true},
	{state: "none", kdc: kdcOld, promoted: true, why: "ended, then the KDC restored: resume asks the ledger only",
		alreadyDone: true, completed: true, lockout: true},

	{state: "locked", kdc: kdcOld, setMsg: changed, requests: 1, newKVNO: true, completed: true},

	{state: "created", kdc: kdcOld, setMsg: changed, requests: 1, newKVNO: true, completed: true},
	{state: "created", kdc: kdcNew, why: "the change reached the KDC although the journal never said setting: tested first",
		setMsg: notRepeated, newKVNO: true, completed: true},

	{state: "stored", kdc: kdcOld, setMsg: changed, requests: 1, newKVNO: true, completed: true},
	{state: "stored", kdc: kdcNew, setMsg: notRepeated, newKVNO: true, completed: true},
	{state: "stored", kdc: kdcOld, promoted: true, setMsg: changed, requests: 1, newKVNO: true, completed: true},
	{state: "stored", kdc: kdcNew, promoted: true, setMsg: notRepeated, newKVNO: true, completed: true},

	{state: "setting", kdc: kdcOld, why: "the change was refused", setMsg: changed, requests: 1, newKVNO: true, completed: true},
	{state: "setting", kdc: kdcNew, why: "the change was applied and its reply lost", setMsg: notRepeated, newKVNO: true, completed: true},
	{state: "setting", kdc: kdcOld, promoted: true, setMsg: changed, requests: 1, newKVNO: true, completed: true},
	{state: "setting", kdc: kdcNew, promoted: true, setMsg: notRepeated, newKVNO: true, completed: true},

	{state: "set", kdc: kdcNew, setMsg: alreadyHeld, newKVNO: true, completed: true},
	{state: "set", kdc: kdcNew, promoted: true, setMsg: alreadyHeld, newKVNO: true, completed: true},
	{state: "set", kdc: kdcOld, why: "KDC restored: test.pending catches it, nothing is promoted",
		stop: StepTest, stopStatus: runbook.Fail, setMsg: alreadyHeld},
	{state: "set", kdc: kdcOld, promoted: true, why: "KDC restored and the store ahead: test.pending catches it, the store stays as it was",
		stop: StepTest, stopStatus: runbook.Fail, setMsg: alreadyHeld, lockout: true},

	{state: "tested", kdc: kdcNew, setMsg: alreadyHeld, newKVNO: true, completed: true},
	{state: "tested", kdc: kdcNew, promoted: true, why: "killed inside finish.promote after the store promoted",
		setMsg: alreadyHeld, newKVNO: true, completed: true},
	{state: "tested", kdc: kdcOld, why: "KDC restored: resume trusts the journal and publishes a keytab the KDC rejects",
		setMsg: alreadyHeld, completed: true, lockout: true},
	{state: "tested", kdc: kdcOld, promoted: true, why: "as above",
		setMsg: alreadyHeld, completed: true, lockout: true},

	{state: "promoted", kdc: kdcNew, promoted: true, setMsg: alreadyHeld, newKVNO: true, completed: true},
	{state: "promoted", kdc: kdcOld, promoted: true, why: "KDC restored: resume trusts the journal",
		setMsg: alreadyHeld, completed: true, lockout: true},

	{state: "published", kdc: kdcNew, promoted: true, setMsg: alreadyHeld, newKVNO: true, completed: true},
	{state: "published", kdc: kdcOld, promoted: true, why: "KDC restored: resume trusts the journal",
		setMsg: alreadyHeld, completed: true, lockout: true},
}

// impossible are the combinations no crash or outside change can produce.
var impossible = map[string]string{
	"none/kdc-new/store-pending":      "the journal is removed only after finish.promote",
	"locked/kdc-new/store-pending":    "no password is journaled yet, so the KDC cannot hold the journal's key (see TestResumeAfterForeignKeyChange)",
	"locked/kdc-old/store-promoted":   "nothing is pending before create.store",
	"locked/kdc-new/store-promoted":   "nothing is pending before create.store",
	"created/kdc-old/store-promoted":  "nothing is pending before create.store",
	"created/kdc-new/store-promoted":  "nothing is pending before create.store",
	"promoted/kdc-old/store-pending":  "the journal says promoted only after the store did; a store cannot un-promote",
	"promoted/kdc-new/store-pending":  "the journal says promoted only after the store did; a store cannot un-promote",
	"published/kdc-old/store-pending": "the journal says published only after the store promoted; a store cannot un-promote",
	"published/kdc-new/store-pending": "the journal says published only after the store promoted; a store cannot un-promote",
}

// crashAfter is the step after which the first run dies to leave the
// journal in state.
func crashAfter(state string, role Role) string {
	switch state {
	case "none":
		if role == Server {
			return StepRate // a server has no last-login step
		}
		return StepLastLogin
	case "locked":
		return StepLock
	case "created":
		return StepCreate
	case "stored":
		return StepPutPending
	case "set":
		return StepSet
	case "tested":
		return StepTest
	case "promoted":
		return StepPromote
	case "published":
		return StepPublish
	}
	return ""
}

// wantCrash checks a run killed after step crash: every step up to it
// passed, every later one was skipped.
func wantCrash(t *testing.T, rep *runbook.Report, crash string) {
	t.Helper()
	after := false
	for _, s := range rep.Steps {
		want := runbook.Pass
		if after {
			want = runbook.Skip
		}
		if s.Status != want {
			t.Fatalf("run killed after %s: step %s is %s, want %s%s", crash, s.ID, s.Status, want, steps(rep))
		}
		after = after || s.ID == crash
	}
}

// setUp brings g to the case's state: a first run killed (or failed by a
// fault) at the right point, then the KDC and store moved where the case
// says.
func (c resumeCase) setUp(g *rig) {
	t := g.t
	t.Helper()
	ctx := context.Background()
	switch {
	case c.state == "setting":
		if c.kdc == kdcNew {
			// The change is applied, its reply lost, and the KDC restarts:
			// the run cannot find out, so the journal stays at setting.
			g.kdc.LoseNextReplyAndGoDown()
		} else {
			g.kdc.FailNextChange(errors.New("kpasswd refused: KRB5_KPASSWD_SOFTERROR (4)"))
		}
		wantSteps(t, g.run(false, "").rep, StepSet, runbook.Error)
		g.kdc.SetUnreachable(false)
	case c.state == "none" && c.promoted:
		wantSteps(t, g.run(false, "").rep, "", "")
	default:
		crash := crashAfter(c.state, g.role)
		wantCrash(t, g.run(false, crash).rep, crash)
	}
	if c.state == "none" {
		if _, err := LoadJournal(g.journal, g.principal); !errors.Is(err, ErrNoJournal) {
			t.Fatalf("journal: %v, want none", err)
		}
		if c.kdc == kdcOld && c.promoted {
			g.put()
		}
		return
	}
	j := g.loadJournal()
	if j.State.String() != c.state {
		t.Fatalf("journal state %s, want %s", j.State, c.state)
	}
	if c.kdc == kdcNew && j.State < StateSetting {
		if err := g.kdc.SetPassword(g.principal, j.Password); err != nil {
			t.Fatal(err)
		}
	}
	if c.kdc == kdcOld && j.State >= StateSet {
		g.put()
	}
	if c.promoted && j.State < StatePromoted {
		if err := g.openStore().Promote(ctx, g.principal, j.PendingVersion); err != nil {
			t.Fatal(err)
		}
	}
	if want := uint32(rigOldKVNO); c.kdc == kdcNew {
		if got := g.kdc.KVNO(g.principal); got != want+1 {
			t.Fatalf("set-up left the KDC at kvno %d, want %d", got, want+1)
		}
	} else if got := g.kdc.KVNO(g.principal); got != want {
		t.Fatalf("set-up left the KDC at kvno %d, want %d", got, want)
	}
}

// Every combination of journal state, KDC key and store stage is either
// a row of resumeCases or explained in impossible.
func TestResumeMatrixIsComplete(t *testing.T) {
	rows := map[string]bool{}
	for _, c := range resumeCases {
		if rows[c.name()] {
			t.Errorf("row %s twice", c.name())
		}
		rows[c.name()] = true
		if impossible[c.name()] != "" {
			t.Errorf("row %s is also listed as impossible", c.name())
		}
	}
	n := 0
	for _, state := range []string{"none", "locked", "created", "stored", "setting", "set", "tested", "promoted", "published"} {
		for _, kdc := range []kdcAt{kdcOld, kdcNew} {
			for _, promoted := range []bool{false, true} {
				n++
				name := resumeCase{state: state, kdc: kdc, promoted: promoted}.name()
				if !rows[name] && impossible[name] == "" {
					t.Errorf("%s is neither tested nor explained", name)
				}
			}
		}
	}
	if n != len(resumeCases)+len(impossible) {
		t.Errorf("%d combinations, %d rows and %d impossible", n, len(resumeCases), len(impossible))
	}
}

// TestResume runs rotate --resume from every row of the matrix, for both
// roles and every backend. A key change is never sent twice: the KDC ends
// at kvno 2 or 3, never 4, and --resume sends a change only when the KDC
// does not yet accept the pending keytab.
func TestResume(t *testing.T) {
	for _, role := range roles {
		for _, backend := range backends {
			for _, c := range resumeCases {
				t.Run(fmt.Sprintf("%s/%s/%s", role, backend, c.name()), func(t *testing.T) {
					t.Parallel()
					g := newRig(t, role, backend)
					c.setUp(g)
					before := g.kdc.ChangeRequests(g.principal)
					out := g.run(true, "")
					switch {
					case c.nothing:
						if !out.nothing {
							t.Fatalf("resume found something to do:%s", steps(out.rep))
						}
						out = g.run(false, "")
						wantSteps(t, out.rep, "", "")
					case c.alreadyDone:
						if out.rep == nil || len(out.rep.Steps) != 1 || out.rep.Steps[0].Status != runbook.Pass ||
							!strings.Contains(out.rep.Steps[0].Message, "nothing to resume") {
							t.Fatalf("resume of an ended rotation:%s", steps(out.rep))
						}
					default:
						wantSteps(t, out.rep, c.stop, c.stopStatus)
						if st, _ := stepOf(out.rep, StepSet); !strings.Contains(st.Message, c.setMsg) {
							t.Errorf("set.kdc: %q, want %q", st.Message, c.setMsg)
						}
						if lock, _ := stepOf(out.rep, StepLock); !strings.Contains(lock.Message, "resuming rotation") {
							t.Errorf("preflight.lock: %q", lock.Message)
						}
					}
					if sent := g.kdc.ChangeRequests(g.principal) - before; sent != c.requests {
						t.Errorf("%d key-change requests after the crash, want %d", sent, c.requests)
					}
					kvno := uint32(rigOldKVNO)
					if c.newKVNO {
						kvno++
					}
					// A server's phase-1 keytab keeps the old kvno, so it
					// still logs in where a client's would not.
					g.check(final{kvno: kvno, completed: c.completed, login: !c.lockout || role == Server})
				})
			}
		}
	}
}

// A fresh rotation, client and server, with every backend: all steps
// pass, one key change, kvno 2 to 3, and for a server a ticket issued
// before the change still decrypts with the phase-1 keytab.
func TestRotateFresh(t *testing.T) {
	for _, role := range roles {
		for _, backend := range backends {
			t.Run(string(role)+"/"+backend, func(t *testing.T) {
				t.Parallel()
				g := newRig(t, role, backend)
				out := g.run(false, "")
				wantSteps(t, out.rep, "", "")
				if out.rep.Class != fault.OK {
					t.Errorf("class %s", out.rep.Class)
				}
				if st, _ := stepOf(out.rep, StepTest); role == Server && !strings.Contains(st.Message, "a kvno 2 ticket from before still decrypts") {
					t.Errorf("test.pending: %q", st.Message)
				}
				if n := g.kdc.ChangeRequests(g.principal); n != 1 {
					t.Errorf("%d key-change requests, want 1", n)
				}
				g.check(final{kvno: rigOldKVNO + 1, completed: true, login: true})

				// A second rotation goes on from the KDC's kvno.
				if role == Client {
					wantSteps(t, g.run(false, "").rep, "", "")
					if got := g.kdc.KVNO(g.principal); got != rigOldKVNO+2 {
						t.Errorf("after a second rotation: kvno %d, want %d", got, rigOldKVNO+2)
					}
				}
			})
		}
	}
}

// The reply to the key change is lost: krbops saw an error, the KDC has
// the new key (issue 10 §9). The same run asks the KDC at once — the
// pending keytab logs in — and goes on without sending the change again
// (kpasswd would be refused with the old key; kadmin would move the KDC to
// kvno 4, past the pending keytab).
func TestLostReplyFoundOutInTheSameRun(t *testing.T) {
	for _, role := range roles {
		for _, backend := range backends {
			t.Run(string(role)+"/"+backend, func(t *testing.T) {
				t.Parallel()
				g := newRig(t, role, backend)
				g.kdc.LoseNextReply()
				out := g.run(false, "")
				wantSteps(t, out.rep, StepLedger, runbook.Pass)
				if st, _ := stepOf(out.rep, StepSet); !strings.Contains(st.Message, "applied the key change although") {
					t.Errorf("set.kdc: %q", st.Message)
				}
				if n := g.kdc.ChangeRequests(g.principal); n != 1 {
					t.Errorf("%d key-change requests, want 1", n)
				}
				g.check(final{kvno: rigOldKVNO + 1, completed: true, login: true})
			})
		}
	}
}

// The reply is lost and the KDC restarts before the run can ask: the
// outcome stays unknown, the run stops with the journal at setting and
// sends nothing more; --resume finds out by logging in with the pending
// keytab and does not send the change again.
func TestResumeAfterLostReply(t *testing.T) {
	for _, role := range roles {
		for _, backend := range backends {
			t.Run(string(role)+"/"+backend, func(t *testing.T) {
				t.Parallel()
				g := newRig(t, role, backend)
				g.kdc.LoseNextReplyAndGoDown()
				out := g.run(false, "")
				wantSteps(t, out.rep, StepSet, runbook.Error)
				if out.rep.Class != fault.Unreachable {
					t.Errorf("class %s, want unreachable", out.rep.Class)
				}
				if j := g.loadJournal(); j.State != StateSetting || j.Password == "" {
					t.Fatalf("journal after the lost reply: %s, password kept %v", j.State, j.Password != "")
				}
				if g.kdc.KVNO(g.principal) != rigOldKVNO+1 {
					t.Fatalf("the lost-reply change was not applied")
				}
				g.kdc.SetUnreachable(false)
				out = g.run(true, "")
				wantSteps(t, out.rep, "", "")
				if st, _ := stepOf(out.rep, StepSet); !strings.Contains(st.Message, notRepeated) {
					t.Errorf("set.kdc on resume: %q", st.Message)
				}
				if n := g.kdc.ChangeRequests(g.principal); n != 1 {
					t.Errorf("%d key-change requests in all, want 1", n)
				}
				g.check(final{kvno: rigOldKVNO + 1, completed: true, login: true})
			})
		}
	}
}

// An unreachable KDC: a fresh rotation stops at its first step with
// nothing written; a resume that cannot test the pending keytab sends no
// change, and the next resume completes.
func TestRotateKDCUnreachable(t *testing.T) {
	t.Run("fresh", func(t *testing.T) {
		g := newRig(t, Client, BackendKpasswd)
		g.kdc.SetUnreachable(true)
		out := g.run(false, "")
		wantSteps(t, out.rep, StepClock, runbook.Error)
		if out.rep.Class != fault.Unreachable {
			t.Errorf("class %s, want unreachable", out.rep.Class)
		}
		if _, err := LoadJournal(g.journal, g.principal); !errors.Is(err, ErrNoJournal) {
			t.Errorf("journal: %v", err)
		}
		if cur, _ := g.storeCurrent(); g.kdc.KVNO(g.principal) != rigOldKVNO || cur != nil {
			t.Errorf("a rotation that stopped at its first step changed the KDC (kvno %d) or the store", g.kdc.KVNO(g.principal))
		}
	})
	for _, kdc := range []kdcAt{kdcOld, kdcNew} {
		t.Run("resume-from-setting/kdc-"+string(kdc), func(t *testing.T) {
			g := newRig(t, Client, BackendKadmin)
			resumeCase{state: "setting", kdc: kdc}.setUp(g)
			before := g.kdc.ChangeRequests(g.principal)
			// The KDC goes away after the clock probe: set.kdc cannot test
			// the pending keytab and must not guess.
			g.afterStep = func(id string) {
				if id == StepClock {
					g.kdc.SetUnreachable(true)
				}
			}
			out := g.run(true, "")
			wantSteps(t, out.rep, StepSet, runbook.Error)
			if st, _ := stepOf(out.rep, StepSet); !strings.Contains(st.Message, "asking the KDC whether the change happened") {
				t.Errorf("set.kdc: %q", st.Message)
			}
			if n := g.kdc.ChangeRequests(g.principal) - before; n != 0 {
				t.Errorf("%d key-change requests while the KDC was unreachable", n)
			}
			g.afterStep = nil
			g.kdc.SetUnreachable(false)
			wantSteps(t, g.run(true, "").rep, "", "")
			want := 1
			if kdc == kdcNew {
				want = 0
			}
			if n := g.kdc.ChangeRequests(g.principal) - before; n != want {
				t.Errorf("%d key-change requests on resume, want %d", n, want)
			}
			g.check(final{kvno: rigOldKVNO + 1, completed: true, login: true})
		})
	}
}

// Someone else changes the key between the crash and --resume (the
// journal is at locked: no password yet, so the KDC's new key is not the
// journal's). Before any change krbops asks the KDC which key it holds:
// neither the old nor the pending key logs in, so it stops without
// sending anything (issue 10: never a second key change blindly; it used
// to send it with the admin backends, leaving kvno 4 and a pending keytab
// that did not match).
func TestResumeAfterForeignKeyChange(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			g := newRig(t, Client, backend)
			wantCrash(t, g.run(false, StepLock).rep, StepLock)
			if err := g.kdc.SetPassword(g.principal, "someone-elses-password"); err != nil {
				t.Fatal(err)
			}
			out := g.run(true, "")
			wantSteps(t, out.rep, StepSet, runbook.Fail)
			if set, _ := stepOf(out.rep, StepSet); !strings.Contains(set.Message, "changed by someone else") {
				t.Errorf("set.kdc: %q", set.Message)
			}
			if got := g.kdc.KVNO(g.principal); got != rigOldKVNO+1 {
				t.Errorf("kvno %d, want %d (the foreign change only)", got, rigOldKVNO+1)
			}
			if n := g.kdc.ChangeRequests(g.principal); n != 0 {
				t.Errorf("%d key-change requests, want none", n)
			}
		})
	}
}

// Issue 10 §7 (was a pinned bug): create.keys derives the new keys with
// the enctypes and salts the KDC reported before the change, but MIT gives
// a changed key the realm's enctypes with the normal salt. For a principal
// with another salt, or without the realm's strongest enctype, the pending
// keytab would not match the KDC: test.pending asks the KDC's keys again
// and derives the pending keytab again from the journaled password, so
// the rotation completes with one key change and a keytab holding every
// key the KDC now has.
func TestRotateKeysChangeShape(t *testing.T) {
	for _, tc := range []struct {
		name     string
		salt     string
		enctypes []int32
	}{
		{"non-normal-salt", "batch", nil},              // norealm: a migrated principal
		{"missing-strongest-enctype", "", []int32{17}}, // aes128 only; the realm gives aes256 too
	} {
		for _, backend := range backends {
			for _, role := range []Role{Client, Server} {
				t.Run(tc.name+"/"+backend+"/"+string(role), func(t *testing.T) {
					t.Parallel()
					g := newRigShape(t, role, backend, tc.salt, tc.enctypes)
					out := g.run(false, "")
					wantSteps(t, out.rep, StepLedger, runbook.Pass)
					if sr, _ := stepOf(out.rep, StepTest); !strings.Contains(sr.Message, "derived again") {
						t.Errorf("test.pending: %q, want the re-derivation said", sr.Message)
					}
					if n := g.kdc.ChangeRequests(g.principal); n != 1 {
						t.Errorf("%d key-change requests, want 1", n)
					}
					g.check(final{kvno: rigOldKVNO + 1, completed: true, login: true})
					// Every key the KDC holds now is in the published keytab.
					_, cur := g.storeCurrent()
					for _, k := range g.kdc.KDCKeys(g.principal) {
						found := false
						for _, e := range kdcops.AtKVNO(cur, rigOldKVNO+1) {
							found = found || e.Enctype == k.Enctype
						}
						if !found {
							t.Errorf("the store's keytab lacks the KDC's %s key", kdcops.EnctypeName(k.Enctype))
						}
					}
				})
			}
		}
	}
}
