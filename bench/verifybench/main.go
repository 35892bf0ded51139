// Command verifybench compares `krbops verify --targets` with the shell
// loop an operator would otherwise write (`kinit -k -t` then `kvno` per
// principal) against the same lab KDC in the same run, and measures the
// KDC's own ceiling with an in-process AS-exchange load. It prints
// figures; it asserts nothing.
//
//	go run ./bench/verifybench --krbops bin/krbops [-n 500] [-loop 100]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/krbops/krbops/internal/lab"
	"github.com/krbops/krbops/kdcops"
)

func main() {
	bin := flag.String("krbops", "bin/krbops", "krbops binary")
	n := flag.Int("n", 500, "targets for krbops verify")
	loopN := flag.Int("loop", 100, "targets for the kinit+kvno shell loop (a sample: it is slow)")
	conc := flag.Int("concurrency", 16, "krbops verify --concurrency")
	flag.Parse()
	if err := run(*bin, *n, *loopN, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "verifybench:", err)
		os.Exit(1)
	}
}

func run(bin string, n, loopN, conc int) error {
	if miss := lab.Missing(); len(miss) > 0 {
		return fmt.Errorf("missing %v: %s", miss, lab.InstallCommand)
	}
	ctx := context.Background()
	r, err := lab.Start(ctx, lab.Options{})
	if err != nil {
		return err
	}
	defer r.Close()
	dir := filepath.Join(r.Dir, "bench")
	os.MkdirAll(dir, 0o700)
	var queries []string
	var csv strings.Builder
	type target struct{ p, kt string }
	var targets []target
	for i := range n {
		p := fmt.Sprintf("svc%05d/bench.krbops.test", i)
		kt := filepath.Join(dir, fmt.Sprintf("svc%05d.keytab", i))
		queries = append(queries, "addprinc -randkey "+p, "ktadd -k "+kt+" "+p)
		fmt.Fprintf(&csv, "%s@%s,%s\n", p, r.Name, kt)
		targets = append(targets, target{p, kt})
	}
	if err := r.KadminBatch(ctx, queries); err != nil {
		return err
	}
	tf := filepath.Join(dir, "targets.csv")
	os.WriteFile(tf, []byte(csv.String()), 0o600)

	// krbops: the whole fleet in one process.
	begin := time.Now()
	v := exec.Command(bin, "verify", "--krb5-config", r.Krb5Conf, "--targets", tf, "--concurrency", fmt.Sprint(conc), "-o", "json")
	v.Stdout = nil
	if err := v.Run(); err != nil {
		return fmt.Errorf("krbops verify: %v", err)
	}
	krbopsRate := float64(n) / time.Since(begin).Seconds()

	// The shell loop: kinit from the keytab, then a service ticket.
	begin = time.Now()
	loopN = min(loopN, n)
	for _, t := range targets[:loopN] {
		cc := "FILE:" + filepath.Join(dir, "loop.ccache")
		sh := fmt.Sprintf("kinit -k -t %s -c %s %s && kvno -c %s %s >/dev/null", t.kt, cc, t.p, cc, t.p)
		c := r.Command(ctx, "sh", "-c", sh)
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("shell loop %s: %v: %s", t.p, err, out)
		}
	}
	loopRate := float64(loopN) / time.Since(begin).Seconds()

	// The KDC's ceiling: AS exchanges (encrypted timestamp, AES) from
	// in-process workers for two seconds.
	cfg, err := kdcops.LoadConfig(r.Krb5Conf)
	if err != nil {
		return err
	}
	kt, err := kdcops.ReadKeytabFile(targets[0].kt, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		return err
	}
	var done atomic.Int64
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for range 2 * conc {
		wg.Go(func() {
			c := &kdcops.OnlineClient{Config: cfg, Timeout: 5 * time.Second}
			for time.Now().Before(deadline) {
				if s, _, err := c.LoginPerKVNO(ctx, kt.Entries); err == nil && s != nil {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	ceiling := float64(done.Load()) / 2

	fmt.Printf("verify against one lab KDC (MIT krb5kdc, loopback, 2 cores)\n")
	fmt.Printf("  krbops verify --targets (%d targets, --concurrency %d)  %8.1f targets/s\n", n, conc, krbopsRate)
	fmt.Printf("  shell loop kinit -k -t + kvno (%d targets)            %8.1f targets/s\n", loopN, loopRate)
	fmt.Printf("  ratio krbops / shell loop                              %8.1fx  (goal >= 10x)\n", krbopsRate/loopRate)
	fmt.Printf("  KDC ceiling: in-process AS exchanges                   %8.1f AS/s  (krbops needs 2 KDC requests per target)\n", ceiling)
	return nil
}
