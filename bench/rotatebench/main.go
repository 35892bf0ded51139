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

	"github.com/krbops/krbops/bench/internal/benchlab"
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
	abs, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	ctx := context.Background()
	l, err := benchlab.Start(ctx)
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.Create(ctx, n, "krbops", "k5srv"); err != nil {
		return err
	}

	begin := time.Now()
	for i := range n {
		p := l.Principal("krbops", i)
		c := exec.CommandContext(ctx, abs, "rotate", "--yes", "--principal", p, "--role", "client", "--backend", "kpasswd",
			"--keytab", l.Keytab("krbops", i), "--cluster", "bench", "--allowlist", l.Allow, "--max-per-window", "1000000",
			"--secret-store", l.Store, "--ledger", l.Ledger,
			"--journal-dir", l.Journal, "--kdc-log", l.R.KDCs[0].Log, "--no-login-record-ok", "-o", "plain")
		c.Env = append(os.Environ(), l.R.Env()...)
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("krbops rotate %s: %v\n%s", p, err, out)
		}
	}
	krbops := time.Since(begin)

	k5, err := l.K5srvutilLoop(ctx, "k5srv", n)
	if err != nil {
		return err
	}

	kr, mr := float64(n)/krbops.Seconds(), float64(n)/k5.Seconds()
	fmt.Printf("principals per tool       %d (sequential, one lab KDC)\n", n)
	fmt.Printf("krbops rotate (kpasswd)   %.1f rotations/s (%s)\n", kr, krbops.Round(time.Millisecond))
	fmt.Printf("k5srvutil change          %.1f rotations/s (%s)\n", mr, k5.Round(time.Millisecond))
	fmt.Printf("ratio krbops/k5srvutil    %.2f\n", kr/mr)
	fmt.Println("krbops does more per rotation: preflight (clock, login, allowlist, rate, last login),")
	fmt.Println("secret store pending/promote, journal fsyncs, a post-change test and an atomic keytab write.")
	return nil
}
