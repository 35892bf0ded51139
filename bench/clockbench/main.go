// Command clockbench measures clock-check against a lab realm: the median
// wall time of a whole `krbops clock-check -o json` process, and of one
// in-process probe (a single AS-REQ, and the refined estimate that waits for
// a KDC second boundary). It prints figures; it asserts nothing.
//
//	go run ./bench/clockbench --krbops bin/krbops [-n 15]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/krbops/krbops/internal/lab"
	"github.com/krbops/krbops/kdcops"
)

func main() {
	bin := flag.String("krbops", "bin/krbops", "krbops binary to time")
	n := flag.Int("n", 15, "runs per measurement")
	flag.Parse()
	if err := run(*bin, *n); err != nil {
		fmt.Fprintln(os.Stderr, "clockbench:", err)
		os.Exit(1)
	}
}

func run(bin string, n int) error {
	if miss := lab.Missing(); len(miss) > 0 {
		return fmt.Errorf("missing %v: %s", miss, lab.InstallCommand)
	}
	ctx := context.Background()
	r, err := lab.Start(ctx, lab.Options{})
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.AddPrincipal(ctx, "host/bench.krbops.test", ""); err != nil {
		return err
	}
	conf := filepath.Join(r.Dir, "bench.conf")
	if err := r.WriteKrb5Conf(conf, r.KDCs[0].Addr); err != nil {
		return err
	}

	process := measure(n, func() error {
		cmd := exec.Command(bin, "clock-check", "--krb5-config", conf, "--principal", "host/bench.krbops.test", "-o", "json")
		cmd.Stdout, cmd.Stderr = nil, os.Stderr
		return cmd.Run()
	})

	cfg, err := kdcops.LoadConfig(conf)
	if err != nil {
		return err
	}
	kdcs, err := cfg.ResolveKDCs(ctx, r.Name, nil)
	if err != nil {
		return err
	}
	var uncert []time.Duration
	probe := func(refine int) func() error {
		return func() error {
			s, err := kdcops.ProbeClock(ctx, cfg, kdcs[0], r.Name, "host/bench.krbops.test",
				kdcops.ProbeOptions{Timeout: 5 * time.Second, Refine: refine, Target: kdcops.DefaultTarget})
			if err == nil && refine > 0 {
				uncert = append(uncert, s.Uncertainty)
			}
			return err
		}
	}
	single := measure(n*4, probe(0))
	refined := measure(n, probe(kdcops.DefaultRefine))

	fmt.Printf("clock-check against one lab KDC on loopback (%d runs each, median)\n", n)
	fmt.Printf("  whole process  krbops clock-check -o json   %8.1f ms\n", ms(process))
	fmt.Printf("  in-process     single AS-REQ probe          %8.3f ms\n", ms(single))
	fmt.Printf("  in-process     refined probe (default)      %8.1f ms  (median uncertainty ±%.1f ms)\n", ms(refined), ms(median(uncert)))
	fmt.Printf("  process / refined probe                     %8.2fx\n", float64(process)/float64(refined))
	return nil
}

func measure(n int, f func() error) time.Duration {
	var ds []time.Duration
	for range n {
		begin := time.Now()
		if err := f(); err != nil {
			// Exit 1 from krbops is a verdict, not a harness failure.
			if _, ok := err.(*exec.ExitError); !ok {
				fmt.Fprintln(os.Stderr, "clockbench:", err)
				os.Exit(1)
			}
		}
		ds = append(ds, time.Since(begin))
	}
	return median(ds)
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
