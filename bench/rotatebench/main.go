// Command rotatebench compares `krbops rotate` (kpasswd backend, limits
// off, a file secret store) with MIT's `k5srvutil change` on N principals
// each, against the same lab KDC in the same run, one rotation at a time.
// It prints rotations per second and the ratio; it asserts nothing.
//
//	go run ./bench/rotatebench --krbops bin/krbops [-n 50]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/krbops/krbops/internal/lab"
)

func main() {
	bin := flag.String("krbops", "bin/krbops", "krbops binary")
	n := flag.Int("n", 50, "principals rotated by each tool")
	flag.Parse()
	if err := run(*bin, *n); err != nil {
		fmt.Fprintln(os.Stderr, "rotatebench:", err)
		os.Exit(1)
	}
}

func run(bin string, n int) error {
	if miss := lab.Missing(); len(miss) > 0 {
		return fmt.Errorf("missing %v: %s", miss, lab.InstallCommand)
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	ctx := context.Background()
	r, err := lab.Start(ctx, lab.Options{})
	if err != nil {
		return err
	}
	defer r.Close()
	dir := filepath.Join(r.Dir, "bench")
	for _, d := range []string{dir, filepath.Join(dir, "store")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	allow := filepath.Join(dir, "allow.txt")
	if err := os.WriteFile(allow, []byte("bench\n"), 0o644); err != nil {
		return err
	}
	// One kadmin.local process for all fixtures: one per principal would
	// dominate the set-up time.
	var q []string
	kt := func(tool string, i int) string { return filepath.Join(dir, fmt.Sprintf("%s%d.keytab", tool, i)) }
	for _, tool := range []string{"krbops", "k5srv"} {
		for i := range n {
			p := fmt.Sprintf("%s%d/bench.krbops.test", tool, i)
			q = append(q, "addprinc -randkey "+p, "ktadd -k "+kt(tool, i)+" "+p)
		}
	}
	if err := r.KadminBatch(ctx, q); err != nil {
		return err
	}

	begin := time.Now()
	for i := range n {
		p := fmt.Sprintf("krbops%d/bench.krbops.test", i)
		c := exec.CommandContext(ctx, abs, "rotate", "--yes", "--principal", p, "--role", "client", "--backend", "kpasswd",
			"--keytab", kt("krbops", i), "--cluster", "bench", "--allowlist", allow, "--max-per-window", "1000000",
			"--secret-store", "file://"+filepath.Join(dir, "store"), "--ledger", filepath.Join(dir, "ledger.db"),
			"--journal-dir", filepath.Join(dir, "journal"), "--kdc-log", r.KDCs[0].Log, "--no-login-record-ok", "-o", "plain")
		c.Env = append(os.Environ(), r.Env()...)
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("krbops rotate %s: %v\n%s", p, err, out)
		}
	}
	krbops := time.Since(begin)

	begin = time.Now()
	for i := range n {
		// k5srvutil change: kadmin -k -t KEYTAB -p PRINC "ktadd -k KEYTAB PRINC",
		// the principal changing its own key (MIT self-service).
		c := r.Command(ctx, "k5srvutil", "-f", kt("k5srv", i), "change")
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("k5srvutil change %d: %v\n%s", i, err, out)
		}
	}
	k5 := time.Since(begin)

	kr, mr := float64(n)/krbops.Seconds(), float64(n)/k5.Seconds()
	fmt.Printf("principals per tool       %d (sequential, one lab KDC)\n", n)
	fmt.Printf("krbops rotate (kpasswd)   %.1f rotations/s (%s)\n", kr, krbops.Round(time.Millisecond))
	fmt.Printf("k5srvutil change          %.1f rotations/s (%s)\n", mr, k5.Round(time.Millisecond))
	fmt.Printf("ratio krbops/k5srvutil    %.2f\n", kr/mr)
	fmt.Println("krbops does more per rotation: preflight (clock, login, allowlist, rate, last login),")
	fmt.Println("secret store pending/promote, journal fsyncs, a post-change test and an atomic keytab write.")
	return nil
}
