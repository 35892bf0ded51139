package ledger

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/dynalab"
)

// A backend under the contract: fresh returns the spec of a new, empty
// ledger (a file path, or a dynamodb:// table) and the options every
// process must open it with.
type backend struct {
	name  string
	fresh func(t *testing.T) (spec string, opts Options)
}

func fileBackend() backend {
	return backend{name: "bbolt", fresh: func(t *testing.T) (string, Options) {
		return filepath.Join(t.TempDir(), "ledger.db"), Options{Timeout: 30 * time.Second}
	}}
}

// dynamoBackend serves every table from one dynalite; the children of the
// process tests reach it through the same endpoint and dummy keys.
func dynamoBackend(t *testing.T) backend {
	srv := dynalab.ForTest(t)
	t.Setenv("AWS_ACCESS_KEY_ID", dynalab.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", dynalab.SecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	n := 0
	var mu sync.Mutex
	return backend{name: "dynamodb", fresh: func(t *testing.T) (string, Options) {
		mu.Lock()
		n++
		table := fmt.Sprintf("ledger-%d", n)
		mu.Unlock()
		if _, err := Init(t.Context(), srv.Client, table); err != nil {
			t.Fatal(err)
		}
		return "dynamodb://" + table + "?region=" + dynalab.Region, Options{Endpoint: srv.Endpoint}
	}}
}

func openSpec(t *testing.T, spec string, opts Options) Ledger {
	t.Helper()
	l, err := Open(t.Context(), spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestContractFile(t *testing.T) { runContract(t, fileBackend()) }

func TestContractDynamo(t *testing.T) { runContract(t, dynamoBackend(t)) }

// runContract is the Ledger contract, the same for every backend.
func runContract(t *testing.T, b backend) {
	withClock := func(t *testing.T) (Ledger, *clock) {
		spec, opts := b.fresh(t)
		c := &clock{t: time.Now().UTC().Truncate(time.Second)}
		opts.Now = c.now
		return openSpec(t, spec, opts), c
	}
	t.Run("start-update-get", func(t *testing.T) {
		ctx := t.Context()
		l, c := withClock(t)
		r, err := l.Start(ctx, rot("HTTP/web01@EX", "c1", "server"))
		if err != nil || r.ID == "" || r.Outcome != InProgress || !r.Started.Equal(c.now()) {
			t.Fatalf("Start = %+v, %v", r, err)
		}
		if _, err := l.Start(ctx, rot("HTTP/web01@EX", "c1", "server")); !errors.Is(err, ErrConflict) {
			t.Fatalf("second open rotation: %v, want ErrConflict", err)
		}
		got, err := l.Get(ctx, r.ID)
		if err != nil || got != r {
			t.Fatalf("Get = %+v, %v; want %+v", got, err, r)
		}
		c.add(time.Minute)
		done, err := l.Update(ctx, r.ID, func(x *Rotation) error { x.Outcome, x.NewKVNO = Succeeded, 4; return nil })
		if err != nil || done.Outcome != Succeeded || !done.Finished.Equal(c.now()) || done.NewKVNO != 4 {
			t.Fatalf("Update = %+v, %v", done, err)
		}
		if _, err := l.Update(ctx, r.ID, func(x *Rotation) error { x.Outcome = Failed; return nil }); !errors.Is(err, ErrConflict) {
			t.Fatalf("rewriting a final rotation: %v, want ErrConflict", err)
		}
		if _, err := l.Update(ctx, r.ID, func(x *Rotation) error { x.Cluster = "c2"; return nil }); !errors.Is(err, ErrConflict) {
			t.Fatalf("moving a rotation to another cluster: %v, want ErrConflict", err)
		}
		if _, err := l.Start(ctx, rot("HTTP/web01@EX", "c1", "server")); err != nil {
			t.Fatalf("a new rotation after the last one ended: %v", err)
		}
		if _, err := l.Get(ctx, "999999"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of an unknown id: %v, want ErrNotFound", err)
		}
	})
	t.Run("list-pending-count", func(t *testing.T) {
		ctx := t.Context()
		l, c := withClock(t)
		now := c.now()
		var ids []string
		for i, age := range []time.Duration{2 * time.Hour, 30 * time.Minute, 0} {
			r := rot(fmt.Sprintf("svc%d@EX", i), "c1", "server")
			r.Started = now.Add(-age)
			s, err := l.Start(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, s.ID)
		}
		if _, err := l.Start(ctx, rot("other@EX", "c2", "server")); err != nil {
			t.Fatal(err)
		}
		if n, err := l.CountSince(ctx, "c1", "server", now.Add(-time.Hour)); err != nil || n != 2 {
			t.Fatalf("CountSince(1h) = %d, %v; want 2", n, err)
		}
		got, err := l.List(ctx, Filter{Cluster: "c1"})
		if err != nil || len(got) != 3 || got[0].ID != ids[2] || got[2].ID != ids[0] {
			t.Fatalf("List(c1) = %+v, %v; want newest first", got, err)
		}
		if got, _ := l.List(ctx, Filter{Principal: "svc1@EX", Limit: 1}); len(got) != 1 || got[0].ID != ids[1] {
			t.Fatalf("List(principal, limit 1) = %+v", got)
		}
		if got, _ := l.List(ctx, Filter{Since: now.Add(-time.Hour), Until: now}); len(got) != 1 || got[0].ID != ids[1] {
			t.Fatalf("List(since, until) = %+v", got)
		}
		if _, err := l.Update(ctx, ids[1], func(x *Rotation) error { x.Outcome = AwaitingPhase2; return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Update(ctx, ids[2], func(x *Rotation) error { x.Outcome = Failed; return nil }); err != nil {
			t.Fatal(err)
		}
		pend, err := l.Pending(ctx)
		if err != nil || len(pend) != 3 || pend[0].ID != ids[0] || pend[1].ID != ids[1] || pend[1].Phase1Done.IsZero() {
			t.Fatalf("Pending = %+v, %v; want 3, oldest first", pend, err)
		}
		if got, _ := l.List(ctx, Filter{Outcome: Failed}); len(got) != 1 || got[0].ID != ids[2] {
			t.Fatalf("List(failed) = %+v", got)
		}
	})
	t.Run("locks", func(t *testing.T) {
		ctx := t.Context()
		l, c := withClock(t)
		a, err := l.Lock(ctx, "svc@EX", "h1", time.Hour)
		if err != nil || a.Host == "" || a.PID != os.Getpid() || a.User == "" || !a.Renewed.Equal(c.now()) {
			t.Fatalf("Lock = %+v, %v", a, err)
		}
		var le *LockedError
		if _, err := l.Lock(ctx, "svc@EX", "h2", time.Hour); !errors.As(err, &le) || le.Stale || le.Lock.Holder != "h1" {
			t.Fatalf("Lock by another holder: %v", err)
		}
		c.add(30 * time.Minute)
		ext, err := l.Lock(ctx, "svc@EX", "h1", time.Hour)
		if err != nil || !ext.Acquired.Equal(a.Acquired) || !ext.Expires.Equal(c.now().Add(time.Hour)) || !ext.Renewed.Equal(c.now()) {
			t.Fatalf("renewal = %+v, %v", ext, err)
		}
		if _, err := l.BreakLock(ctx, "svc@EX", "", false); !errors.As(err, &le) || le.Stale {
			t.Fatalf("breaking a live lock: %v", err)
		}
		c.add(2 * time.Hour)
		if _, err := l.Lock(ctx, "svc@EX", "h2", time.Hour); !errors.As(err, &le) || !le.Stale {
			t.Fatalf("a stale lock must still hold: %v", err)
		}
		if _, err := l.BreakLock(ctx, "svc@EX", "h2", true); !errors.As(err, &le) {
			t.Fatalf("breaking with the wrong holder: %v", err)
		}
		if err := l.Unlock(ctx, "svc@EX", "h2"); !errors.As(err, &le) {
			t.Fatalf("unlocking another's lock: %v", err)
		}
		if locks, err := l.Locks(ctx); err != nil || len(locks) != 1 || locks[0].Holder != "h1" {
			t.Fatalf("Locks = %+v, %v", locks, err)
		}
		broken, err := l.BreakLock(ctx, "svc@EX", "h1", false)
		if err != nil || broken.Holder != "h1" {
			t.Fatalf("BreakLock(stale) = %+v, %v", broken, err)
		}
		if _, err := l.BreakLock(ctx, "svc@EX", "", true); !errors.Is(err, ErrNotFound) {
			t.Fatalf("breaking no lock: %v, want ErrNotFound", err)
		}
		if err := l.Unlock(ctx, "svc@EX", "h2"); err != nil {
			t.Fatalf("unlocking no lock: %v", err)
		}
		if _, err := l.Lock(ctx, "svc@EX", "h2", time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := l.Unlock(ctx, "svc@EX", "h2"); err != nil {
			t.Fatal(err)
		}
		if locks, _ := l.Locks(ctx); len(locks) != 0 {
			t.Fatalf("Locks after unlock = %+v", locks)
		}
	})
	t.Run("events", func(t *testing.T) {
		ctx := t.Context()
		l, c := withClock(t)
		e, err := l.Record(ctx, Event{Principal: "svc@EX", Action: "unlock", Operator: "ops@host", Reason: "holder died"})
		if err != nil || !e.Time.Equal(c.now()) || e.Seq == 0 {
			t.Fatalf("Record = %+v, %v", e, err)
		}
		c.add(time.Second)
		l.Record(ctx, Event{Principal: "other@EX", Action: "abort", Operator: "ops@host"})
		c.add(time.Second)
		l.Record(ctx, Event{Principal: "svc@EX", Action: "takeover", Operator: "ops@host"})
		evs, err := l.Events(ctx, "svc@EX")
		if err != nil || len(evs) != 2 || evs[0].Action != "unlock" || evs[1].Action != "takeover" || evs[0].Reason != "holder died" {
			t.Fatalf("Events(svc) = %+v, %v", evs, err)
		}
		if all, _ := l.Events(ctx, ""); len(all) != 3 {
			t.Fatalf("Events() = %+v, want 3", all)
		}
	})
	t.Run("admit", func(t *testing.T) {
		ctx := t.Context()
		l, c := withClock(t)
		req := func(p string) AdmitRequest {
			return AdmitRequest{Rotation: rot(p, "c1", "server"), Limit: 2, Window: time.Hour}
		}
		first, err := l.Admit(ctx, req("a@EX"))
		if err != nil || !first.Started.Equal(c.now()) || first.Outcome != InProgress {
			t.Fatalf("Admit = %+v, %v", first, err)
		}
		if _, err := l.Admit(ctx, req("a@EX")); !errors.Is(err, ErrConflict) {
			t.Fatalf("admitting a principal with an open rotation: %v, want ErrConflict", err)
		}
		c.add(10 * time.Minute)
		if _, err := l.Admit(ctx, req("b@EX")); err != nil {
			t.Fatal(err)
		}
		c.add(10 * time.Minute)
		var ae *AdmitError
		_, err = l.Admit(ctx, req("c@EX"))
		if !errors.As(err, &ae) || !errors.Is(err, ErrNotAdmitted) || ae.Reason != WindowFull || ae.Count != 2 ||
			!ae.Until.Equal(first.Started.Add(time.Hour)) || !strings.Contains(err.Error(), "window full until") {
			t.Fatalf("third admission: %v (%+v), want window full until %s", err, ae, first.Started.Add(time.Hour))
		}
		if got, _ := l.List(ctx, Filter{Principal: "c@EX"}); len(got) != 0 {
			t.Fatalf("a refused admission left a record: %+v", got)
		}
		// Sliding: the window opens when the oldest rotation leaves it.
		c.t = ae.Until.Add(-time.Nanosecond)
		if _, err := l.Admit(ctx, req("c@EX")); !errors.Is(err, ErrNotAdmitted) {
			t.Fatalf("admission a nanosecond early: %v", err)
		}
		c.t = ae.Until
		if _, err := l.Admit(ctx, req("c@EX")); err != nil {
			t.Fatalf("admission when the window opens: %v", err)
		}
		// A rotation started without admission counts too.
		if _, err := l.Start(ctx, rot("d@EX", "c1", "server")); err != nil {
			t.Fatal(err)
		}
		c.add(15 * time.Minute) // b left at +70m; c and d remain
		if _, err := l.Admit(ctx, req("e@EX")); !errors.Is(err, ErrNotAdmitted) {
			t.Fatalf("Start's rotation was not counted: %v", err)
		}
		// Another domain has its own window; the minimum gap.
		gap := AdmitRequest{Rotation: rot("kdc@EX", "c1", "control-plane"), MinGap: 30 * time.Minute}
		cp, err := l.Admit(ctx, gap)
		if err != nil {
			t.Fatal(err)
		}
		c.add(20 * time.Minute)
		gap.Rotation.Principal = "kdc2@EX"
		if _, err := l.Admit(ctx, gap); !errors.As(err, &ae) || ae.Reason != MinGapWait || !ae.Until.Equal(cp.Started.Add(30*time.Minute)) ||
			!strings.Contains(err.Error(), "min gap") {
			t.Fatalf("admission inside the min gap: %v", err)
		}
		c.add(10 * time.Minute)
		if _, err := l.Admit(ctx, gap); err != nil {
			t.Fatalf("admission after the min gap: %v", err)
		}
		// Both refuse: the refusal is the one that lasts longer.
		both := AdmitRequest{Rotation: rot("y1@EX", "c3", "server"), Limit: 1, Window: time.Hour, MinGap: 2 * time.Hour}
		y1, err := l.Admit(ctx, both)
		if err != nil {
			t.Fatal(err)
		}
		c.add(10 * time.Minute)
		both.Rotation.Principal = "y2@EX"
		if _, err := l.Admit(ctx, both); !errors.As(err, &ae) || ae.Reason != MinGapWait || !ae.Until.Equal(y1.Started.Add(2*time.Hour)) {
			t.Fatalf("refused by window and gap: %v, want the gap's until %s", err, y1.Started.Add(2*time.Hour))
		}
		if _, err := l.Admit(ctx, AdmitRequest{Rotation: rot("x@EX", "c1", "server"), Limit: 1}); err == nil {
			t.Fatal("a limit without a window was accepted")
		}
	})
	t.Run("one-open-rotation-race", func(t *testing.T) {
		ctx := t.Context()
		l, _ := withClock(t)
		const n = 6
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = l.Admit(ctx, AdmitRequest{Rotation: rot("same@EX", "c1", "server"), Limit: 100, Window: time.Hour})
			})
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, ErrConflict):
				t.Errorf("a racing admission of the same principal: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d admissions of one principal won, want 1", won)
		}
		// The losers took back their records and their window slots.
		if got, _ := l.List(ctx, Filter{}); len(got) != 1 {
			t.Fatalf("records after the race: %+v", got)
		}
		if _, err := l.Admit(ctx, AdmitRequest{Rotation: rot("next@EX", "c1", "server"), Limit: 2, Window: time.Hour}); err != nil {
			t.Fatalf("the window still counts a loser's slot: %v", err)
		}
	})
	t.Run("processes", func(t *testing.T) {
		spec, opts := b.fresh(t)
		openSpec(t, spec, opts).Close() // created before the race
		const procs, attempts, limit = 4, 6, 5
		outs := raceChildren(t, procs, spec, opts, "admit", attempts, limit)
		admitted := 0
		for _, o := range outs {
			admitted += strings.Count(o, "RESULT admitted")
			if n := strings.Count(o, "RESULT admitted") + strings.Count(o, "RESULT refused"); n != attempts {
				t.Errorf("child: %d results, want %d:\n%s", n, attempts, o)
			}
		}
		if admitted != limit {
			t.Fatalf("%d processes × %d attempts admitted %d rotations, want exactly the limit %d", procs, attempts, admitted, limit)
		}
		l := openSpec(t, spec, opts)
		if n, err := l.CountSince(t.Context(), "c1", "server", time.Time{}); err != nil || n != limit {
			t.Fatalf("CountSince after the race = %d, %v; want %d", n, err, limit)
		}
		outs = raceChildren(t, procs, spec, opts, "lock", 1, 0)
		won := 0
		for _, o := range outs {
			won += strings.Count(o, "RESULT won")
			if !strings.Contains(o, "RESULT won") && !strings.Contains(o, "RESULT locked") {
				t.Errorf("child: %s", o)
			}
		}
		if won != 1 {
			t.Fatalf("%d processes hold the lock, want exactly 1", won)
		}
		if locks, err := l.Locks(t.Context()); err != nil || len(locks) != 1 {
			t.Fatalf("Locks after the race = %+v, %v", locks, err)
		}
	})
}

// raceChildren runs procs copies of this test binary as contract children
// (TestContractChild) against spec and releases them together once all
// have opened the ledger, so they race on the ledger, not on start-up.
func raceChildren(t *testing.T, procs int, spec string, opts Options, op string, attempts, limit int) []string {
	t.Helper()
	outs := make([]string, procs)
	var ready, done sync.WaitGroup
	release := make(chan struct{})
	for i := range procs {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestContractChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "KRBOPS_LEDGER_CHILD="+op, "KRBOPS_LEDGER_SPEC="+spec, "KRBOPS_LEDGER_ENDPOINT="+opts.Endpoint,
			fmt.Sprintf("KRBOPS_LEDGER_ATTEMPTS=%d", attempts), fmt.Sprintf("KRBOPS_LEDGER_LIMIT=%d", limit), fmt.Sprintf("KRBOPS_LEDGER_INDEX=%d", i))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			sc := bufio.NewScanner(stdout)
			var b strings.Builder
			signalled := false
			for sc.Scan() {
				b.WriteString(sc.Text() + "\n")
				if !signalled && sc.Text() == "READY" {
					signalled = true
					ready.Done()
					<-release
					stdin.Close()
				}
			}
			if !signalled {
				ready.Done()
			}
			if err := cmd.Wait(); err != nil {
				b.WriteString("exit: " + err.Error())
			}
			outs[i] = b.String()
		}()
	}
	ready.Wait()
	close(release)
	done.Wait()
	return outs
}

// TestContractChild is a racing process of raceChildren; it does nothing
// in a normal run.
func TestContractChild(t *testing.T) {
	op := os.Getenv("KRBOPS_LEDGER_CHILD")
	if op == "" {
		t.Skip("only a child of the contract's process tests")
	}
	var attempts, limit, index int
	fmt.Sscan(os.Getenv("KRBOPS_LEDGER_ATTEMPTS"), &attempts)
	fmt.Sscan(os.Getenv("KRBOPS_LEDGER_LIMIT"), &limit)
	fmt.Sscan(os.Getenv("KRBOPS_LEDGER_INDEX"), &index)
	ctx := context.Background()
	l, err := Open(ctx, os.Getenv("KRBOPS_LEDGER_SPEC"), Options{Endpoint: os.Getenv("KRBOPS_LEDGER_ENDPOINT"), Timeout: 30 * time.Second})
	if err != nil {
		fmt.Println("RESULT error", err)
		return
	}
	defer l.Close()
	fmt.Println("READY")
	io.Copy(io.Discard, os.Stdin) // the release: stdin closes
	for i := range attempts {
		var err error
		switch op {
		case "admit":
			_, err = l.Admit(ctx, AdmitRequest{Rotation: rot(fmt.Sprintf("p%d-%d@EX", index, i), "c1", "server"), Limit: limit, Window: time.Hour})
		case "lock":
			_, err = l.Lock(ctx, "svc@EX", fmt.Sprintf("child %d", index), time.Minute)
		}
		switch {
		case err == nil && op == "admit":
			fmt.Println("RESULT admitted")
		case err == nil:
			fmt.Println("RESULT won")
		case errors.Is(err, ErrNotAdmitted):
			fmt.Println("RESULT refused")
		case errors.Is(err, ErrLocked):
			fmt.Println("RESULT locked")
		default:
			fmt.Println("RESULT error", err)
		}
	}
}
