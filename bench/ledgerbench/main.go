// Command ledgerbench races admissions into one rate window from several
// processes: 8 processes × 200 attempts against a window of 50, first on
// the DynamoDB ledger (dynalite), then on the bbolt file ledger as the
// peer measured in the same run. It prints how many were admitted — the
// ledger's promise is exactly the limit — and the p50/p99 latency of an
// admission attempt (admitted or refused) for each backend, and their
// ratio. Figures, not assertions: it fails only when the count is not the
// limit, which would be a broken ledger.
//
//	go run ./bench/ledgerbench [-procs 8] [-attempts 200] [-limit 50]
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/krbops/krbops/internal/dynalab"
	"github.com/krbops/krbops/ledger"
)

func main() {
	procs := flag.Int("procs", 8, "racing processes")
	attempts := flag.Int("attempts", 200, "admission attempts per process")
	limit := flag.Int("limit", 50, "rotations the window admits")
	child := flag.Bool("child", false, "internal: be one racing process")
	spec := flag.String("spec", "", "internal: the ledger")
	endpoint := flag.String("endpoint", "", "internal: DynamoDB endpoint")
	index := flag.Int("index", 0, "internal: the process's number")
	flag.Parse()
	if *child {
		if err := race(*spec, *endpoint, *index, *attempts, *limit); err != nil {
			fmt.Fprintln(os.Stderr, "ledgerbench child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*procs, *attempts, *limit); err != nil {
		fmt.Fprintln(os.Stderr, "ledgerbench:", err)
		os.Exit(1)
	}
}

type result struct {
	admitted int
	lat      []time.Duration // every attempt
	won      []time.Duration // the admitted ones (they write)
}

func run(procs, attempts, limit int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ledgerbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := dynalab.Start(ctx, dynalab.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer srv.Close()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": dynalab.AccessKeyID, "AWS_SECRET_ACCESS_KEY": dynalab.SecretAccessKey, "AWS_SESSION_TOKEN": "",
		"AWS_PROFILE": "", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull, "AWS_EC2_METADATA_DISABLED": "true",
	} {
		os.Setenv(k, v)
	}
	if _, err := ledger.Init(ctx, srv.Client, "ledgerbench"); err != nil {
		return err
	}
	fmt.Printf("ledgerbench: %d processes × %d admission attempts, one window of %d (distinct principals, one cluster × role)\n", procs, attempts, limit)
	fmt.Printf("%-9s %9s %9s %10s %10s %14s %14s %10s\n", "backend", "admitted", "refused", "p50", "p99", "admitted p50", "admitted p99", "wall")
	backends := []struct{ name, spec, endpoint string }{
		{"dynamodb", "dynamodb://ledgerbench?region=" + dynalab.Region, srv.Endpoint},
		{"bbolt", filepath.Join(dir, "ledger.db"), ""},
	}
	p50 := map[string]time.Duration{}
	var broken []string
	for _, b := range backends {
		l, err := ledger.Open(ctx, b.spec, ledger.Options{Endpoint: b.endpoint})
		if err != nil {
			return err
		}
		l.Close() // created before the race
		start := time.Now()
		res, err := spawn(procs, attempts, limit, b.spec, b.endpoint)
		if err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
		wall := time.Since(start)
		slices.Sort(res.lat)
		slices.Sort(res.won)
		p50[b.name] = pct(res.lat, 50)
		us := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
		fmt.Printf("%-9s %9d %9d %10s %10s %14s %14s %10s\n", b.name, res.admitted, len(res.lat)-res.admitted,
			us(p50[b.name]), us(pct(res.lat, 99)), us(pct(res.won, 50)), us(pct(res.won, 99)), wall.Round(time.Millisecond))
		if res.admitted != limit {
			broken = append(broken, fmt.Sprintf("%s admitted %d, the limit is %d", b.name, res.admitted, limit))
		}
	}
	if p50["bbolt"] > 0 {
		fmt.Printf("p50 ratio dynamodb/bbolt: %.2f\n", float64(p50["dynamodb"])/float64(p50["bbolt"]))
	}
	if len(broken) > 0 {
		return errors.New(strings.Join(broken, "; "))
	}
	return nil
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[(len(sorted)-1)*p/100]
}

// spawn runs procs children and releases them together (by closing their
// stdin) once every one has opened the ledger.
func spawn(procs, attempts, limit int, spec, endpoint string) (result, error) {
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	var (
		mu           sync.Mutex
		res          result
		errs         []error
		ready, done  sync.WaitGroup
		release      = make(chan struct{})
		releaseClose sync.Once
	)
	defer releaseClose.Do(func() { close(release) })
	for i := range procs {
		cmd := exec.Command(self, "-child", "-spec", spec, "-endpoint", endpoint, "-index", strconv.Itoa(i),
			"-attempts", strconv.Itoa(attempts), "-limit", strconv.Itoa(limit))
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return result{}, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return result{}, err
		}
		if err := cmd.Start(); err != nil {
			return result{}, err
		}
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			sc := bufio.NewScanner(stdout)
			signalled := false
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				switch {
				case len(f) == 1 && f[0] == "READY":
					signalled = true
					ready.Done()
					<-release
					stdin.Close()
				case len(f) == 2 && (f[0] == "admitted" || f[0] == "refused"):
					ns, _ := strconv.ParseInt(f[1], 10, 64)
					mu.Lock()
					res.lat = append(res.lat, time.Duration(ns))
					if f[0] == "admitted" {
						res.admitted++
						res.won = append(res.won, time.Duration(ns))
					}
					mu.Unlock()
				}
			}
			if !signalled {
				ready.Done()
			}
			if err := cmd.Wait(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	ready.Wait()
	releaseClose.Do(func() { close(release) })
	done.Wait()
	if len(errs) > 0 {
		return res, errors.Join(errs...)
	}
	if len(res.lat) != procs*attempts {
		return res, fmt.Errorf("%d results of %d attempts", len(res.lat), procs*attempts)
	}
	return res, nil
}

// race is one child: open, say READY, wait for the release, then make its
// attempts one after another, printing each outcome and latency.
func race(spec, endpoint string, index, attempts, limit int) error {
	ctx := context.Background()
	l, err := ledger.Open(ctx, spec, ledger.Options{Endpoint: endpoint, Timeout: time.Minute})
	if err != nil {
		return err
	}
	defer l.Close()
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "READY")
	out.Flush()
	io.Copy(io.Discard, os.Stdin)
	for i := range attempts {
		req := ledger.AdmitRequest{
			Rotation: ledger.Rotation{Principal: fmt.Sprintf("svc%d-%d@BENCH.TEST", index, i), Cluster: "c1", Role: "server", Operator: "ledgerbench"},
			Limit:    limit, Window: time.Hour,
		}
		start := time.Now()
		_, err := l.Admit(ctx, req)
		lat := time.Since(start)
		switch {
		case err == nil:
			fmt.Fprintf(out, "admitted %d\n", lat.Nanoseconds())
		case errors.Is(err, ledger.ErrNotAdmitted):
			fmt.Fprintf(out, "refused %d\n", lat.Nanoseconds())
		default:
			return err
		}
	}
	return out.Flush()
}
