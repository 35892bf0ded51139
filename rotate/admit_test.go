package rotate

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/awserr"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/ledger"
)

// The count-then-lock race: preflight.rate-limit sees room, then another
// operator's rotation takes the window's last slot before this one locks.
// The ledger's admission at preflight.lock refuses it, says until when,
// and nothing is changed.
func TestAdmissionClosesCountThenLockRace(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limit  int
		minGap time.Duration
		want   string
	}{
		{"window", 1, 0, "window full until"},
		{"min-gap", 100, time.Hour, "min gap 1h0m0s until"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRig(t, Server, BackendKpasswd)
			g.limit, g.minGap = tc.limit, tc.minGap
			var other ledger.Rotation
			g.afterStep = func(id string) {
				if id != StepRate {
					return
				}
				led, err := ledger.OpenFile(g.ledger, ledger.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer led.Close()
				other, err = led.Admit(context.Background(), ledger.AdmitRequest{
					Rotation: ledger.Rotation{Principal: "HTTP/other@" + rigRealm, Cluster: "c1", Role: string(Server), Operator: "bob@ops2"},
					Limit:    tc.limit, Window: time.Hour, MinGap: tc.minGap,
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			out := g.run(false, "")
			st, ok := stepOf(out.rep, StepLock)
			if !ok || st.Status != "fail" || !strings.Contains(st.Message, tc.want) {
				t.Fatalf("%s: %+v, want a refusal %q", StepLock, st, tc.want)
			}
			until := other.Started.Add(time.Hour).UTC().Format(time.RFC3339)
			if st.Evidence["until"] != until || !strings.Contains(st.Hint, until) {
				t.Errorf("refusal until %v (hint %q), want %s", st.Evidence["until"], st.Hint, until)
			}
			if n := g.kdc.ChangeRequests(g.principal); n != 0 {
				t.Errorf("%d key-change requests after a refused admission", n)
			}
			led, err := ledger.OpenFile(g.ledger, ledger.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer led.Close()
			recs, _ := led.List(context.Background(), ledger.Filter{Principal: g.principal})
			locks, _ := led.Locks(context.Background())
			if len(recs) != 0 || len(locks) != 0 {
				t.Errorf("a refused admission left records %+v and locks %+v", recs, locks)
			}
			if _, err := LoadJournal(g.journal, g.principal); err == nil {
				t.Error("a refused admission left a journal")
			}
		})
	}
}

// A shared ledger's failure keeps its class (exit 3) and its hint (the
// IAM action that was denied) in the step's result.
func TestLedgerResultKeepsTheLedgersHint(t *testing.T) {
	err := &ledger.ServiceError{Op: "PutItem", Table: "krbops-ledger", Classified: awserr.Classified{Class: awserr.Permission, Code: "AccessDeniedException"}}
	res := ledgerResult(err, "ledger: %s", err)
	if res.Class != fault.Unreachable || !strings.Contains(res.Hint, "dynamodb:PutItem on table krbops-ledger") {
		t.Fatalf("ledgerResult = class %s, hint %q", res.Class, res.Hint)
	}
}
