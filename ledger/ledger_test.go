package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func open(t *testing.T, path string, c *clock) *File {
	t.Helper()
	opts := Options{Timeout: 2 * time.Second}
	if c != nil {
		opts.Now = c.now
	}
	l, err := OpenFile(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func rot(principal, cluster, role string) Rotation {
	return Rotation{Principal: principal, Cluster: cluster, Role: role, Tier: "data-plane", Operator: "alice@ops1", CorrelationID: "corr-" + principal, OldKVNO: 3}
}

func TestStartUpdateGet(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: t0}
	l := open(t, filepath.Join(t.TempDir(), "ledger.db"), c)

	r, err := l.Start(ctx, rot("HTTP/web01@EX", "prod-eu", "server"))
	if err != nil {
		t.Fatal(err)
	}
	if r.ID == "" || r.Outcome != InProgress || !r.Started.Equal(t0) {
		t.Fatalf("Start = %+v, want an ID, in-progress, started at the clock", r)
	}
	if _, err := l.Start(ctx, rot("HTTP/web01@EX", "prod-eu", "server")); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), r.ID) {
		t.Fatalf("second Start of an open principal = %v, want ErrConflict naming rotation %s", err, r.ID)
	}

	c.add(time.Minute)
	p1, err := l.Update(ctx, r.ID, func(x *Rotation) error {
		x.NewKVNO, x.Phase, x.Outcome = 4, Phase1, AwaitingPhase2
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !p1.Phase1Done.Equal(t0.Add(time.Minute)) || !p1.Finished.IsZero() {
		t.Fatalf("after phase 1: %+v, want Phase1Done stamped, not finished", p1)
	}
	// The principal is still open while it waits for phase 2.
	if _, err := l.Start(ctx, rot("HTTP/web01@EX", "prod-eu", "server")); !errors.Is(err, ErrConflict) {
		t.Fatalf("Start while awaiting phase 2 = %v, want ErrConflict", err)
	}

	if _, err := l.Update(ctx, r.ID, func(x *Rotation) error { x.Cluster = "elsewhere"; return nil }); !errors.Is(err, ErrConflict) {
		t.Errorf("changing the cluster = %v, want ErrConflict", err)
	}
	boom := errors.New("boom")
	if _, err := l.Update(ctx, r.ID, func(x *Rotation) error { x.NewKVNO = 99; return boom }); !errors.Is(err, boom) {
		t.Errorf("fn error = %v, want it back", err)
	}
	if g, _ := l.Get(ctx, r.ID); g.NewKVNO != 4 {
		t.Errorf("a failed fn changed the record: %+v", g)
	}

	c.add(24 * time.Hour)
	done, err := l.Update(ctx, r.ID, func(x *Rotation) error { x.Phase, x.Outcome = Phase2, Succeeded; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !done.Finished.Equal(t0.Add(time.Minute+24*time.Hour)) || !done.Phase1Done.Equal(p1.Phase1Done) {
		t.Fatalf("finished: %+v", done)
	}
	if _, err := l.Update(ctx, r.ID, func(x *Rotation) error { x.Outcome = InProgress; return nil }); !errors.Is(err, ErrConflict) {
		t.Errorf("reopening a finished rotation = %v, want ErrConflict", err)
	}
	if _, err := l.Update(ctx, r.ID, func(*Rotation) error { return nil }); err != nil {
		t.Errorf("a no-op update of a finished rotation = %v, want nil", err)
	}
	got, err := l.Get(ctx, r.ID)
	if err != nil || got != done {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, done)
	}
	if _, err := l.Get(ctx, "12345"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(unknown) = %v", err)
	}
	if _, err := l.Get(ctx, "not-a-number"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(bad id) = %v", err)
	}
	// With the old rotation finished the principal may rotate again.
	if _, err := l.Start(ctx, rot("HTTP/web01@EX", "prod-eu", "server")); err != nil {
		t.Fatalf("Start after the previous rotation finished: %v", err)
	}

	for _, bad := range []Rotation{
		{Cluster: "c", Role: "r", Operator: "o"},
		{Principal: "p", Role: "r", Operator: "o"},
		{Principal: "p", Cluster: "c\x00x", Role: "r", Operator: "o"},
		{Principal: "p", Cluster: "c", Role: "r"},
		{Principal: "p", Cluster: "c", Role: "r", Operator: "o", Outcome: "done?"},
		{Principal: "p", Cluster: "c", Role: "r", Operator: "o", Phase: "phase3"},
	} {
		if _, err := l.Start(ctx, bad); err == nil {
			t.Errorf("Start(%+v) accepted", bad)
		}
	}
}

func TestCountSinceWindow(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: t0}
	l := open(t, filepath.Join(t.TempDir(), "ledger.db"), c)
	start := func(p, cluster, role string, at time.Time, outcome Outcome) {
		t.Helper()
		r := rot(p, cluster, role)
		r.Started, r.Outcome = at, outcome
		if _, err := l.Start(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	start("a", "prod-eu", "server", t0.Add(-2*time.Hour), Succeeded)
	start("b", "prod-eu", "server", t0.Add(-time.Hour), Failed) // exactly at the window's edge
	start("c", "prod-eu", "server", t0.Add(-10*time.Minute), InProgress)
	start("d", "prod-eu", "client", t0.Add(-5*time.Minute), Succeeded)
	start("e", "prod-us", "server", t0.Add(-5*time.Minute), Succeeded)
	start("f", "prod-eu", "serverx", t0.Add(-5*time.Minute), Succeeded) // a role that extends "server"
	start("g", "prod-e", "userver", t0.Add(-5*time.Minute), Succeeded)  // cluster+role that concatenate alike

	for _, c := range []struct {
		cluster, role string
		since         time.Time
		want          int
	}{
		{"prod-eu", "server", t0.Add(-time.Hour), 2},
		{"prod-eu", "server", t0.Add(-3 * time.Hour), 3},
		{"prod-eu", "server", t0, 0},
		{"prod-eu", "server", time.Time{}, 3},
		{"prod-eu", "client", t0.Add(-time.Hour), 1},
		{"prod-us", "server", t0.Add(-time.Hour), 1},
		{"prod-eu", "serverx", t0.Add(-time.Hour), 1},
		{"nowhere", "server", time.Time{}, 0},
	} {
		n, err := l.CountSince(ctx, c.cluster, c.role, c.since)
		if err != nil || n != c.want {
			t.Errorf("CountSince(%s, %s, %s) = %d, %v; want %d", c.cluster, c.role, c.since.Format(time.Kitchen), n, err, c.want)
		}
	}
}

func TestPendingAndList(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: t0}
	l := open(t, filepath.Join(t.TempDir(), "ledger.db"), c)
	ids := map[string]string{}
	for _, p := range []string{"client1", "server1", "server2", "client2", "aborted"} {
		c.add(time.Minute)
		role := "server"
		if strings.HasPrefix(p, "client") {
			role = "client"
		}
		r, err := l.Start(ctx, rot(p, "prod-eu", role))
		if err != nil {
			t.Fatal(err)
		}
		ids[p] = r.ID
	}
	set := func(p string, o Outcome, ph Phase) {
		t.Helper()
		if _, err := l.Update(ctx, ids[p], func(r *Rotation) error { r.Outcome, r.Phase = o, ph; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	set("client1", Succeeded, NoPhase)
	set("server1", AwaitingPhase2, Phase1)
	set("server2", AwaitingPhase2, Phase1)
	set("server2", InProgress, Phase2) // phase 2 under way: still pending
	set("aborted", Aborted, NoPhase)

	pend, err := l.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range pend {
		got = append(got, r.Principal+":"+string(r.Outcome))
	}
	want := "server1:awaiting-phase2 server2:in-progress client2:in-progress"
	if strings.Join(got, " ") != want {
		t.Fatalf("Pending = %v, want %s (oldest first)", got, want)
	}

	all, err := l.List(ctx, Filter{})
	if err != nil || len(all) != 5 || all[0].Principal != "aborted" || all[4].Principal != "client1" {
		t.Fatalf("List() = %d rotations, %v; want 5 newest first", len(all), err)
	}
	for _, c := range []struct {
		f    Filter
		want string
	}{
		{Filter{Role: "client"}, "client2 client1"},
		{Filter{Outcome: AwaitingPhase2}, "server1"},
		{Filter{Principal: "server2"}, "server2"},
		{Filter{Since: t0.Add(2 * time.Minute), Until: t0.Add(4 * time.Minute)}, "server2 server1"},
		{Filter{Limit: 2}, "aborted client2"},
		{Filter{Cluster: "prod-us"}, ""},
	} {
		rs, err := l.List(ctx, c.f)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range rs {
			names = append(names, r.Principal)
		}
		if strings.Join(names, " ") != c.want {
			t.Errorf("List(%+v) = %v, want %s", c.f, names, c.want)
		}
	}
}

func TestLocks(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: t0}
	l := open(t, filepath.Join(t.TempDir(), "ledger.db"), c)
	const p = "HTTP/web01@EX"

	lk, err := l.Lock(ctx, p, "alice", time.Hour)
	if err != nil || !lk.Expires.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Lock = %+v, %v", lk, err)
	}
	_, err = l.Lock(ctx, p, "bob", time.Hour)
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) || le.Stale || le.Lock.Holder != "alice" || !strings.Contains(err.Error(), `"alice"`) {
		t.Fatalf("bob's Lock = %v, want a live LockedError naming alice", err)
	}
	c.add(30 * time.Minute)
	ext, err := l.Lock(ctx, p, "alice", time.Hour) // a resume extends
	if err != nil || !ext.Acquired.Equal(t0) || !ext.Expires.Equal(t0.Add(90*time.Minute)) {
		t.Fatalf("extension = %+v, %v; want acquired kept, expiry moved", ext, err)
	}
	if _, err := l.BreakLock(ctx, p, "", false); !errors.As(err, &le) || le.Stale {
		t.Fatalf("BreakLock of a live lock = %v, want a live LockedError", err)
	}
	if err := l.Unlock(ctx, p, "bob"); !errors.Is(err, ErrLocked) {
		t.Fatalf("Unlock by another holder = %v, want ErrLocked", err)
	}

	c.add(2 * time.Hour) // alice's process died; the lock went stale
	_, err = l.Lock(ctx, p, "bob", time.Hour)
	if !errors.As(err, &le) || !le.Stale || !strings.Contains(err.Error(), "stale since") {
		t.Fatalf("Lock over a stale lock = %v, want a stale LockedError (never taken over silently)", err)
	}
	broken, err := l.BreakLock(ctx, p, "", false)
	if err != nil || broken.Holder != "alice" {
		t.Fatalf("BreakLock of a stale lock = %+v, %v", broken, err)
	}
	if _, err := l.BreakLock(ctx, p, "", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("BreakLock without a lock = %v, want ErrNotFound", err)
	}
	if _, err := l.Lock(ctx, p, "bob", time.Hour); err != nil {
		t.Fatalf("Lock after the break: %v", err)
	}
	if _, err := l.Lock(ctx, "other@EX", "carol", time.Hour); err != nil {
		t.Fatal(err)
	}
	locks, err := l.Locks(ctx)
	if err != nil || len(locks) != 2 {
		t.Fatalf("Locks = %+v, %v; want 2", locks, err)
	}
	if err := l.Unlock(ctx, p, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx, p, "bob"); err != nil {
		t.Errorf("second Unlock = %v, want nil", err)
	}
	for _, bad := range []struct {
		p, h string
		ttl  time.Duration
	}{{"", "h", time.Hour}, {p, "", time.Hour}, {p, "h", 0}} {
		if _, err := l.Lock(ctx, bad.p, bad.h, bad.ttl); err == nil {
			t.Errorf("Lock(%q, %q, %s) accepted", bad.p, bad.h, bad.ttl)
		}
	}
}

func TestConcurrentLockGoroutines(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	shared := open(t, path, nil)
	const n = 12
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := shared
			if i%2 == 1 { // half through their own File: separate file locks
				l = open(t, path, nil)
			}
			_, results[i] = l.Lock(ctx, "svc@EX", fmt.Sprintf("holder-%d", i), time.Minute)
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range results {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrLocked):
			t.Errorf("holder-%d: %v, want ErrLocked or success", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d goroutines hold the lock, want exactly 1", won)
	}
}

// TestConcurrentLockProcesses races helper processes (this test binary
// re-run) for one principal's lock through one ledger file.
func TestConcurrentLockProcesses(t *testing.T) {
	if path := os.Getenv("KRBOPS_LEDGER_HELPER"); path != "" {
		l, err := OpenFile(path, Options{Timeout: 10 * time.Second})
		if err == nil {
			_, err = l.Lock(context.Background(), "svc@EX", "pid "+fmt.Sprint(os.Getpid()), time.Minute)
		}
		switch {
		case err == nil:
			fmt.Println("RESULT won")
		case errors.Is(err, ErrLocked):
			fmt.Println("RESULT locked")
		default:
			fmt.Println("RESULT error", err)
		}
		return
	}
	path := filepath.Join(t.TempDir(), "ledger.db")
	open(t, path, nil) // create it before the race
	const n = 4
	outs := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestConcurrentLockProcesses$", "-test.count=1")
			cmd.Env = append(os.Environ(), "KRBOPS_LEDGER_HELPER="+path)
			out, err := cmd.CombinedOutput()
			if err != nil {
				outs[i] = "exec error " + err.Error() + ": " + string(out)
				return
			}
			outs[i] = string(out)
		}()
	}
	wg.Wait()
	won, locked := 0, 0
	for _, o := range outs {
		switch {
		case strings.Contains(o, "RESULT won"):
			won++
		case strings.Contains(o, "RESULT locked"):
			locked++
		default:
			t.Errorf("helper: %s", o)
		}
	}
	if won != 1 || locked != n-1 {
		t.Fatalf("%d processes won and %d were refused, want 1 and %d", won, locked, n-1)
	}
	locks, err := open(t, path, nil).Locks(context.Background())
	if err != nil || len(locks) != 1 || !strings.HasPrefix(locks[0].Holder, "pid ") {
		t.Fatalf("Locks after the race = %+v, %v", locks, err)
	}
}

func TestBusyFileFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := OpenFile(path, Options{Timeout: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Another process holding the file looks like this: bbolt's exclusive
	// lock held for longer than our timeout.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = l.Pending(context.Background())
	db.Close()
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another krbops") {
		t.Fatalf("Pending while the file is held = %v, want ErrBusy naming %s", err, path)
	}
	// The error names the wait it gave up after: the 150ms asked for, not
	// DefaultTimeout (bbolt polls its flock, so it may end a poll early;
	// load only lengthens the wait).
	if !strings.Contains(err.Error(), "stayed locked for 150ms") {
		t.Errorf("Pending = %v, want it to have waited the 150ms timeout", err)
	}
	if d := time.Since(start); d >= DefaultTimeout {
		t.Errorf("waited %s, want the 150ms timeout (not the default %s)", d, DefaultTimeout)
	}
	if _, err := l.Pending(context.Background()); err != nil {
		t.Fatalf("after the other process let go: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Start(ctx, rot("p", "c", "r")); !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a cancelled context = %v", err)
	}
}

func TestReopenPersists(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state", "krbops")
	path := filepath.Join(dir, "ledger.db")
	c := &clock{t: t0}
	l, err := OpenFile(path, Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	r, err := l.Start(ctx, rot("svc@EX", "prod-eu", "server"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Lock(ctx, "svc@EX", "alice", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Pending(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Pending after Close = %v, want ErrClosed", err)
	}

	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("ledger file mode %v, %v; want 0600", fi.Mode().Perm(), err)
		}
		di, err := os.Stat(dir)
		if err != nil || di.Mode().Perm() != 0o700 {
			t.Errorf("ledger directory mode %v, %v; want 0700", di.Mode().Perm(), err)
		}
	}

	l2 := open(t, path, c)
	got, err := l2.Get(ctx, r.ID)
	if err != nil || got != r {
		t.Fatalf("after reopen Get = %+v, %v; want %+v", got, err, r)
	}
	if pend, _ := l2.Pending(ctx); len(pend) != 1 || pend[0].ID != r.ID {
		t.Errorf("after reopen Pending = %+v", pend)
	}
	if n, _ := l2.CountSince(ctx, "prod-eu", "server", t0.Add(-time.Minute)); n != 1 {
		t.Errorf("after reopen CountSince = %d", n)
	}
	if _, err := l2.Lock(ctx, "svc@EX", "bob", time.Hour); !errors.Is(err, ErrLocked) {
		t.Errorf("after reopen alice's lock is gone: %v", err)
	}
	r2, err := l2.Start(ctx, rot("other@EX", "prod-eu", "server"))
	if err != nil || r2.ID == r.ID {
		t.Errorf("after reopen Start = %+v, %v; want a fresh id", r2, err)
	}
}

// A lock records the process that holds it; a dead holder's live lock is
// broken only with force; the audit trail keeps who broke what and why.
func TestLockHolderForceBreakAndAudit(t *testing.T) {
	ctx := context.Background()
	l, err := OpenFile(filepath.Join(t.TempDir(), "ledger.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	lk, err := l.Lock(ctx, "svc@EX", "krbops rotate j1", time.Hour)
	if err != nil || lk.PID != os.Getpid() || lk.Host == "" || lk.User == "" {
		t.Fatalf("Lock = %+v, %v; want this process as holder", lk, err)
	}
	if _, err := l.BreakLock(ctx, "svc@EX", "", false); !errors.Is(err, ErrLocked) {
		t.Fatalf("BreakLock of a live lock without force = %v", err)
	}
	if _, err := l.BreakLock(ctx, "svc@EX", "krbops rotate j2", true); !errors.Is(err, ErrLocked) {
		t.Fatalf("BreakLock of another holder's lock = %v", err)
	}
	broken, err := l.BreakLock(ctx, "svc@EX", "krbops rotate j1", true)
	if err != nil || broken.Holder != "krbops rotate j1" {
		t.Fatalf("forced BreakLock = %+v, %v", broken, err)
	}
	e, err := l.Record(ctx, Event{Principal: "svc@EX", Action: "unlock", Operator: "ops@host", Reason: "holder died", Detail: broken.Holder})
	if err != nil || e.Seq == 0 || e.Time.IsZero() {
		t.Fatalf("Record = %+v, %v", e, err)
	}
	l.Record(ctx, Event{Principal: "other@EX", Action: "abort", Operator: "ops@host"})
	evs, err := l.Events(ctx, "svc@EX")
	if err != nil || len(evs) != 1 || evs[0].Reason != "holder died" || evs[0].Detail != "krbops rotate j1" {
		t.Fatalf("Events = %+v, %v", evs, err)
	}
	if all, _ := l.Events(ctx, ""); len(all) != 2 {
		t.Errorf("all events: %d, want 2", len(all))
	}
}
