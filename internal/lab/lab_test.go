package lab_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/lab"
)

// run runs an MIT tool against r and returns its combined output.
func run(t *testing.T, r *lab.Realm, stdin string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := r.Command(t.Context(), name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// runConf is run with KRB5_CONFIG pointing at conf.
func runConf(t *testing.T, r *lab.Realm, conf, stdin, name string, args ...string) (string, error) {
	t.Helper()
	cmd := r.Command(t.Context(), name, args...)
	cmd.Env = append(cmd.Env, "KRB5_CONFIG="+conf, "KRB5CCNAME=FILE:"+filepath.Join(t.TempDir(), "cc"))
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestRealmStartsAndIssuesTickets(t *testing.T) {
	r := lab.ForTest(t, lab.Options{})
	ctx := t.Context()

	if r.Name != lab.DefaultRealm || len(r.KDCs) != 1 {
		t.Fatalf("realm %q with %d KDCs", r.Name, len(r.KDCs))
	}
	for _, f := range []string{r.Krb5Conf, r.KDCProfile, r.AdminKeytab, r.KDCLog()} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("missing %v", err)
		}
	}

	t.Run("keytab kinit", func(t *testing.T) {
		const p = "host/kt.krbops.test"
		kt := filepath.Join(t.TempDir(), "host.keytab")
		if err := r.AddPrincipal(ctx, p, ""); err != nil {
			t.Fatal(err)
		}
		if err := r.Keytab(ctx, p, kt); err != nil {
			t.Fatal(err)
		}
		if out, err := run(t, r, "", "kinit", "-k", "-t", kt, p); err != nil {
			t.Fatalf("kinit -k: %v\n%s", err, out)
		}
		out, err := run(t, r, "", "klist")
		if err != nil || !strings.Contains(out, p+"@"+r.Name) || !strings.Contains(out, "krbtgt/"+r.Name) {
			t.Fatalf("klist: %v\n%s", err, out)
		}
		if log, _ := os.ReadFile(r.KDCLog()); !strings.Contains(string(log), "AS_REQ") || !strings.Contains(string(log), p) {
			t.Errorf("kdc.log has no AS_REQ for %s:\n%s", p, log)
		}
	})

	t.Run("password kinit", func(t *testing.T) {
		const pw = "Corr3ct horse; battery $taple"
		if err := r.AddPrincipal(ctx, "alice", pw); err != nil {
			t.Fatal(err)
		}
		if out, err := run(t, r, pw+"\n", "kinit", "alice"); err != nil {
			t.Fatalf("kinit alice: %v\n%s", err, out)
		}
		if out, err := run(t, r, "wrong\n", "kinit", "alice"); err == nil {
			t.Fatalf("kinit with a wrong password succeeded:\n%s", out)
		}
	})

	t.Run("admin over kadmind", func(t *testing.T) {
		out, err := run(t, r, "", "kadmin", "-k", "-t", r.AdminKeytab, "-p", r.AdminPrincipal, "-q", "getprinc alice")
		if err != nil || !strings.Contains(out, "Principal: alice@"+r.Name) {
			t.Fatalf("kadmin: %v\n%s", err, out)
		}
	})

	t.Run("kadmin.local errors", func(t *testing.T) {
		out, err := r.Kadmin(ctx, "getprinc alice")
		if err != nil || !strings.Contains(out, "REQUIRES_PRE_AUTH") {
			t.Fatalf("getprinc alice: %v\n%s", err, out)
		}
		if _, err := r.Kadmin(ctx, "getprinc nobody"); err == nil {
			t.Error("getprinc of a missing principal: no error")
		}
		if err := r.AddPrincipal(ctx, "alice", ""); err == nil {
			t.Error("adding alice twice: no error")
		}
	})

	t.Run("weak enctypes", func(t *testing.T) {
		const p = "svc/rc4.krbops.test"
		kt := filepath.Join(t.TempDir(), "rc4.keytab")
		if err := r.AddPrincipal(ctx, p, ""); err != nil {
			t.Fatal(err)
		}
		if err := r.Keytab(ctx, p, kt, "rc4-hmac", "des3-cbc-sha1"); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, r, "", "klist", "-ke", kt)
		if err != nil || !strings.Contains(out, "arcfour-hmac") || !strings.Contains(out, "des3-cbc-sha1") || strings.Contains(out, "aes") {
			t.Fatalf("klist -ke: %v\n%s", err, out)
		}
		if err := r.Keytab(ctx, p, kt, "no-such-enctype"); err == nil {
			t.Error("unknown enctype: no error")
		}
		if err := r.KeytabWith(ctx, p, filepath.Join(t.TempDir(), "same.keytab"), lab.KeytabOptions{NoRandKey: true}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSecondKDCFakeTimeAndDownAddr(t *testing.T) {
	r := lab.ForTest(t, lab.Options{Realm: "SECOND.TEST"})
	ctx := t.Context()
	const p = "host/demo.second.test"
	kt := filepath.Join(t.TempDir(), "host.keytab")
	if err := r.AddPrincipal(ctx, p, ""); err != nil {
		t.Fatal(err)
	}
	if err := r.Keytab(ctx, p, kt); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	t.Run("second KDC answers", func(t *testing.T) {
		k, err := r.StartKDC(ctx, lab.KDCOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if k.Addr == r.KDCs[0].Addr || k.Log == r.KDCLog() {
			t.Fatalf("second KDC shares %s / %s with the first", k.Addr, k.Log)
		}
		conf := filepath.Join(dir, "second.conf")
		if err := r.WriteKrb5Conf(conf, k.Addr); err != nil {
			t.Fatal(err)
		}
		if out, err := runConf(t, r, conf, "", "kinit", "-k", "-t", kt, p); err != nil {
			t.Fatalf("kinit via second KDC: %v\n%s", err, out)
		}
		if log, _ := os.ReadFile(k.Log); !strings.Contains(string(log), "AS_REQ") {
			t.Errorf("second KDC's log has no AS_REQ:\n%s", log)
		}
	})

	t.Run("faketime KDC is 420s ahead", func(t *testing.T) {
		_, real, err := lab.KDCTime(ctx, r.KDCs[0].Addr, r.Name)
		if err != nil {
			t.Fatal(err)
		}
		if real.Abs() > 2*time.Second {
			t.Fatalf("normal KDC is off by %v", real)
		}
		k, err := r.StartKDC(ctx, lab.KDCOptions{FakeTime: "+420s"})
		if err != nil {
			t.Fatal(err)
		}
		// Measure again, independently of StartKDC's own check, over TCP too.
		for _, network := range []string{"udp", "tcp"} {
			rep, err := lab.Probe(ctx, network, k.Addr, r.Name, "")
			if err != nil {
				t.Fatal(err)
			}
			if off := rep.Offset(); off < 415*time.Second || off > 425*time.Second {
				t.Errorf("%s: faketime KDC offset %v, want ~420s", network, off)
			}
			if rep.ErrorCode != 6 { // KDC_ERR_C_PRINCIPAL_UNKNOWN
				t.Errorf("%s: error code %d, want 6", network, rep.ErrorCode)
			}
		}
		// A real principal gets PREAUTH_REQUIRED, stamped with the fake clock.
		rep, err := lab.Probe(ctx, "udp", k.Addr, r.Name, p)
		if err != nil {
			t.Fatal(err)
		}
		if rep.ErrorCode != 25 || rep.Offset() < 415*time.Second {
			t.Errorf("probe %s: code %d offset %v, want 25 (PREAUTH_REQUIRED) and ~420s", p, rep.ErrorCode, rep.Offset())
		}
		// The KDC still works: its log lines carry the shifted time.
		conf := filepath.Join(dir, "skewed.conf")
		if err := r.WriteKrb5Conf(conf, k.Addr); err != nil {
			t.Fatal(err)
		}
		out, err := runConf(t, r, conf, "", "kinit", "-k", "-t", kt, p)
		t.Logf("kinit against the +420s KDC: err=%v %s", err, strings.TrimSpace(out))
		if log, _ := os.ReadFile(k.Log); !strings.Contains(string(log), "AS_REQ") {
			t.Errorf("faketime KDC logged no AS_REQ:\n%s", log)
		}
	})

	t.Run("down address refuses", func(t *testing.T) {
		down := r.DownAddr()
		for _, network := range []string{"udp", "tcp"} {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := lab.Probe(pctx, network, down, r.Name, "")
			cancel()
			if err == nil {
				t.Errorf("%s %s answered", network, down)
			}
		}
		conf := filepath.Join(dir, "failover.conf")
		if err := r.WriteKrb5Conf(conf, down, r.KDCs[0].Addr); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if out, err := runConf(t, r, conf, "", "kinit", "-k", "-t", kt, p); err != nil {
			t.Fatalf("kinit with a down KDC first: %v\n%s", err, out)
		}
		t.Logf("kinit fail-over past %s took %v", down, time.Since(start).Round(time.Millisecond))
	})
}

func TestCloseLeavesNoProcess(t *testing.T) {
	if miss := lab.Missing(); len(miss) > 0 {
		lab.ForTest(t, lab.Options{}) // skips, or fails under CI
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	r, err := lab.Start(ctx, lab.Options{Realm: "CLOSE.TEST", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.StartKDC(ctx, lab.KDCOptions{FakeTime: "-90s"}); err != nil {
		t.Fatal(err)
	}
	pids := r.PIDs()
	if len(pids) != 3 { // primary KDC, kadmind, faked KDC
		t.Fatalf("PIDs %v, want 3", pids)
	}
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %v", time.Since(start).Round(time.Millisecond))
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, pid := range pids {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
			st, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
			t.Errorf("pid %d still exists after Close: %s", pid, st)
		}
	}
	if _, err := os.Stat(r.Dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s not removed: %v", r.Dir, err)
	}
	if _, err := r.StartKDC(ctx, lab.KDCOptions{}); err == nil {
		t.Error("StartKDC after Close succeeded")
	}
}

// fakeTB records how ForTest gives up; Skip and Fatalf unwind with a panic
// as the real ones would with runtime.Goexit.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.skipped = fmt.Sprint(args...)
	panic(f)
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f)
}

func forTestWithout(t *testing.T, kind lab.Kind) (f *fakeTB) {
	f = &fakeTB{TB: t}
	defer func() {
		if v := recover(); v != f {
			t.Fatalf("ForTest did not give up (recovered %v)", v)
		}
	}()
	lab.ForTest(f, lab.Options{Kind: kind})
	return f
}

func TestForTestMissingBinaries(t *testing.T) {
	t.Setenv("KRBOPS_LIBFAKETIME", filepath.Join(t.TempDir(), "no-libfaketime.so.1"))
	if miss := lab.Missing(); !slices.Contains(miss, "libfaketime.so.1") {
		t.Fatalf("Missing() = %v, want libfaketime.so.1 listed", miss)
	}

	t.Setenv("CI", "")
	f := forTestWithout(t, lab.MIT)
	if f.skipped == "" || f.failed != "" || !strings.Contains(f.skipped, lab.InstallCommand) {
		t.Errorf("outside CI: skipped=%q failed=%q, want a skip with the install command", f.skipped, f.failed)
	}

	t.Setenv("CI", "true")
	f = forTestWithout(t, lab.MIT)
	if f.failed == "" || f.skipped != "" || !strings.Contains(f.failed, lab.InstallCommand) {
		t.Errorf("CI=true: skipped=%q failed=%q, want a failure with the install command", f.skipped, f.failed)
	}
}

// gone reports whether pid has exited (a zombie counts as exited).
func gone(pid int) bool {
	st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	s := string(st)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// TestCrashedTestLeavesNoKDC re-runs this test binary as a "test" that
// starts a realm of each kind and panics without Close: Pdeathsig must take
// the daemons down with it, Heimdal's forked KDC workers included.
func TestCrashedTestLeavesNoKDC(t *testing.T) {
	if kind := os.Getenv("KRBOPS_LAB_CRASH_HELPER"); kind != "" {
		r, err := lab.Start(context.Background(), lab.Options{Kind: lab.Kind(kind), Realm: "CRASH.TEST"})
		if err != nil {
			fmt.Println("START-ERROR", err)
			os.Exit(3)
		}
		if _, err := r.StartKDC(context.Background(), lab.KDCOptions{FakeTime: "+1h"}); err != nil {
			fmt.Println("START-ERROR", err)
			os.Exit(3)
		}
		fmt.Printf("DIR %s\n", r.Dir)
		for _, p := range r.PIDs() {
			for _, m := range groupPIDs(p) {
				fmt.Printf("PID %d\n", m)
			}
		}
		panic("simulated crash of a test holding a realm")
	}
	// MIT: two KDCs and kadmind; Heimdal: two KDCs with a worker each
	// and kpasswdd.
	for kind, want := range map[lab.Kind]int{lab.MIT: 3, lab.Heimdal: 5} {
		t.Run(string(kind), func(t *testing.T) {
			if miss := lab.MissingFor(kind); len(miss) > 0 {
				lab.ForTest(t, lab.Options{Kind: kind}) // skips, or fails under CI
			}
			crashedLeavesNoKDC(t, kind, want)
		})
	}
}

func crashedLeavesNoKDC(t *testing.T, kind lab.Kind, want int) {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashedTestLeavesNoKDC$", "-test.count=1")
	cmd.Env = append(os.Environ(), "KRBOPS_LAB_CRASH_HELPER="+string(kind))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "simulated crash") {
		t.Fatalf("helper did not crash: %v\n%s", err, out)
	}
	var pids []int
	for _, line := range strings.Split(string(out), "\n") {
		if d, ok := strings.CutPrefix(line, "DIR "); ok {
			t.Cleanup(func() { os.RemoveAll(d) }) // the crash leaked it
		}
		if p, ok := strings.CutPrefix(line, "PID "); ok {
			n, err := strconv.Atoi(p)
			if err != nil {
				t.Fatal(err)
			}
			pids = append(pids, n)
		}
	}
	if len(pids) != want {
		t.Fatalf("helper reported pids %v, want %d:\n%s", pids, want, out)
	}
	// A hang guard, not a timing check: the kernel kills them at once.
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range pids {
		for !gone(p) {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d outlived the crashed test binary", p)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// groupPIDs lists the live processes in process group pgid.
func groupPIDs(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || gone(pid) {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// kadmin.local exits 0 when a query fails; KadminBatch must still report
// it, and apply every good query of the batch.
func TestKadminBatch(t *testing.T) {
	r := lab.ForTest(t, lab.Options{})
	ctx := context.Background()
	if err := r.KadminBatch(ctx, []string{"addprinc -randkey batch/a", "addprinc -randkey batch/b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Kadmin(ctx, "getprinc batch/b"); err != nil {
		t.Fatalf("second principal of the batch missing: %v", err)
	}
	err := r.KadminBatch(ctx, []string{"getprinc batch/nosuch"})
	if err == nil || !strings.Contains(err.Error(), "batch of 1 queries") {
		t.Fatalf("failing query: %v, want an error naming the batch", err)
	}
}
