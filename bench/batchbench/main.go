// Command batchbench compares one `krbops rotate --targets` batch (kpasswd
// backend, limits off, --concurrency 16, a file secret store and ledger)
// with a loop of MIT's `k5srvutil change`, on N lab principals each, in
// the same run against the same KDC. It prints rotations per second of
// both and the ratio; it asserts nothing.
//
//	go run ./bench/batchbench --krbops bin/krbops [-n 1000] [-concurrency 16]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/krbops/krbops/bench/internal/benchlab"
)

func main() {
	bin := flag.String("krbops", "bin/krbops", "krbops binary")
	n := flag.Int("n", 1000, "principals rotated by each tool")
	conc := flag.Int("concurrency", 16, "krbops --concurrency")
	flag.Parse()
	if err := run(*bin, *n, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "batchbench:", err)
		os.Exit(1)
	}
}

func run(bin string, n, conc int) error {
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
	var b strings.Builder
	b.WriteString("principal,keytab,role,cluster\n")
	for i := range n {
		fmt.Fprintf(&b, "%s,%s,client,bench\n", l.Principal("krbops", i), l.Keytab("krbops", i))
	}
	targets := filepath.Join(l.Dir, "targets.csv")
	if err := os.WriteFile(targets, []byte(b.String()), 0o600); err != nil {
		return err
	}

	kdcLog := l.R.KDCs[0].Log
	reqs0, err := kdcRequests(kdcLog)
	if err != nil {
		return err
	}
	begin := time.Now()
	// Limits off: the window and the breaker's per-cluster cap must not
	// be what is measured (one cluster, so the cap is the concurrency).
	c := exec.CommandContext(ctx, abs, "rotate", "--yes", "--targets", targets, "--concurrency", fmt.Sprint(conc),
		"--max-failures-per-cluster", fmt.Sprint(conc), "--allowlist", l.Allow, "--max-per-window", "100000",
		"--secret-store", l.Store, "--ledger", l.Ledger, "--journal-dir", l.Journal,
		"--kdc-log", l.R.KDCs[0].Log, "--no-login-record-ok", "-o", "json")
	c.Env = append(os.Environ(), l.R.Env()...)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("krbops rotate --targets: %v\n%s", err, tail(out))
	}
	krbops := time.Since(begin)
	reqs1, err := kdcRequests(kdcLog)
	if err != nil {
		return err
	}

	k5, err := l.K5srvutilLoop(ctx, "k5srv", n)
	if err != nil {
		return err
	}
	reqs2, err := kdcRequests(kdcLog)
	if err != nil {
		return err
	}

	kr, mr := float64(n)/krbops.Seconds(), float64(n)/k5.Seconds()
	fmt.Printf("principals per tool                 %d (one lab KDC, same run)\n", n)
	fmt.Printf("krbops rotate --targets (c=%d)      %.1f rotations/s (%s)\n", conc, kr, krbops.Round(time.Millisecond))
	fmt.Printf("k5srvutil change loop               %.1f rotations/s (%s)\n", mr, k5.Round(time.Millisecond))
	fmt.Printf("ratio krbops/k5srvutil              %.2f (goal >= 5)\n", kr/mr)
	fmt.Printf("KDC requests per rotation (AS+TGS)  krbops %.1f, k5srvutil %.1f (kpasswd/kadmin not counted)\n",
		float64(reqs1-reqs0)/float64(n), float64(reqs2-reqs1)/float64(n))
	return nil
}

// kdcRequests counts the AS and TGS requests the KDC has logged so far
// (krb5kdc logs one AS_REQ or TGS_REQ line per request).
func kdcRequests(log string) (int, error) {
	b, err := os.ReadFile(log)
	if err != nil {
		return 0, err
	}
	return strings.Count(string(b), " AS_REQ ") + strings.Count(string(b), " TGS_REQ "), nil
}

// tail is the end of a long report: enough to see what failed.
func tail(b []byte) []byte {
	if len(b) > 4000 {
		return b[len(b)-4000:]
	}
	return b
}
