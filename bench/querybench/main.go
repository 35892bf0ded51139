// Command querybench measures krbops resume-query against dynalite: a
// 4-segment scan of 100,000 items by the krbops binary (checkpointing
// every page: append, fsync, atomic checkpoint replace) next to a raw
// aws-sdk-go-v2 paginator loop with the same segments and page size that
// writes the same JSON lines without any of that, alternating in the same
// run. Then it kills krbops with SIGKILL at about 90 % and counts the
// pages the resumed run reads. It prints figures; it asserts nothing
// except that the outputs are exact.
//
//	go run ./bench/querybench --krbops bin/krbops [-items 100000] [-rounds 3]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/krbops/krbops/commands"
	"github.com/krbops/krbops/dynamo"
	"github.com/krbops/krbops/internal/dynalab"
)

func main() {
	bin := flag.String("krbops", "bin/krbops", "krbops binary to measure")
	items := flag.Int("items", 100000, "items in the table")
	segments := flag.Int("segments", 4, "scan segments (and workers)")
	pageSize := flag.Int("page-size", 500, "items per page (Limit)")
	rounds := flag.Int("rounds", 7, "alternating rounds of each contender")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "also run one krbops scan in this process and write its CPU profile here (go tool pprof)")
	flag.Parse()
	if err := run(*bin, *items, *segments, *pageSize, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "querybench:", err)
		os.Exit(1)
	}
}

type bench struct {
	bin      string
	srv      *dynalab.Server
	dir      string
	table    string
	items    int
	segments int
	pageSize int
	// CPU time of each measured scan: the raw loop's share of this
	// process, and the krbops process's.
	rawCPU, krbCPU []time.Duration
}

func run(bin string, items, segments, pageSize, rounds int) error {
	if err := dynalab.Missing(); err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s: %v (make build)", bin, err)
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "querybench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := dynalab.Start(ctx, dynalab.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer srv.Close()
	b := &bench{bin: bin, srv: srv, dir: dir, table: "bench", items: items, segments: segments, pageSize: pageSize}

	began := time.Now()
	if err := srv.Setup(ctx, b.table, items, 0); err != nil {
		return err
	}
	fmt.Printf("querybench: %d items loaded into dynalite in %s; %d segments, pages of %d\n\n",
		items, time.Since(began).Round(time.Second), segments, pageSize)

	// One unmeasured scan first: dynalite (node) is still collecting the
	// garbage of the load, which would slow whichever contender went first.
	if _, err := b.raw(ctx, filepath.Join(dir, "warmup.jsonl")); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if cpuProfile != "" {
		if err := b.profile(ctx, cpuProfile); err != nil {
			return fmt.Errorf("profile: %w", err)
		}
	}
	var raw, krb []time.Duration
	for i := range rounds {
		d, err := b.raw(ctx, filepath.Join(dir, fmt.Sprintf("raw-%d.jsonl", i)))
		if err != nil {
			return fmt.Errorf("raw loop: %w", err)
		}
		raw = append(raw, d)
		d, err = b.krbops(filepath.Join(dir, fmt.Sprintf("krbops-%d.jsonl", i)))
		if err != nil {
			return fmt.Errorf("krbops: %w", err)
		}
		krb = append(krb, d)
		fmt.Printf("  round %d: raw paginator %6.0f items/s   krbops %6.0f items/s\n", i+1, rate(items, raw[i]), rate(items, krb[i]))
	}
	rawMed, krbMed := median(raw), median(krb)
	fmt.Printf("\nmedian of %d rounds (whole krbops process: start, pre-flight, DescribeTable, clock check):\n", rounds)
	fmt.Printf("  raw aws-sdk-go-v2 paginator loop  %8.0f items/s  (%s)\n", rate(items, rawMed), rawMed.Round(time.Millisecond))
	fmt.Printf("  krbops resume-query               %8.0f items/s  (%s)\n", rate(items, krbMed), krbMed.Round(time.Millisecond))
	fmt.Printf("  ratio krbops/raw                  %8.3f         (goal ≥ 0.95, checkpointing every page)\n", rate(items, krbMed)/rate(items, rawMed))
	ratios := make([]float64, len(raw))
	for i := range raw {
		ratios[i] = raw[i].Seconds() / krb[i].Seconds()
	}
	slices.Sort(ratios)
	fmt.Printf("  median of the per-round ratios    %8.3f\n", ratios[len(ratios)/2])
	rawCPU, krbCPU := median(b.rawCPU), median(b.krbCPU)
	fmt.Printf("  client CPU per 1000 items         raw %.1f ms, krbops %.1f ms (median; dynalite's not included)\n",
		rawCPU.Seconds()*1e6/float64(items), krbCPU.Seconds()*1e6/float64(items))
	cpuRatios := make([]float64, len(raw))
	for i := range raw {
		cpuRatios[i] = b.krbCPU[i].Seconds() / b.rawCPU[i].Seconds()
	}
	slices.Sort(cpuRatios)
	fmt.Printf("  client CPU ratio krbops/raw       %8.3f         (goal ≤ 1.1; median of the per-round ratios %.3f)\n",
		krbCPU.Seconds()/rawCPU.Seconds(), cpuRatios[len(cpuRatios)/2])

	// Outputs are exact: every item once.
	want, err := b.want(ctx)
	if err != nil {
		return err
	}
	for _, f := range []string{"raw-0.jsonl", "krbops-0.jsonl"} {
		got, err := dynalab.ReadLines(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		if d := dynalab.Compare(want, got); !d.OK() {
			return fmt.Errorf("%s: %s", f, d)
		}
	}
	return b.killAt90(want)
}

func rate(items int, d time.Duration) float64 { return float64(items) / d.Seconds() }

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// raw is what one would write by hand: a paginator per segment, each
// page's items appended as JSON lines through a buffered writer, no fsync
// and no checkpoint.
func (b *bench) raw(ctx context.Context, out string) (time.Duration, error) {
	f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	var mu sync.Mutex
	errc := make(chan error, b.segments)
	cpu0 := selfCPU()
	began := time.Now()
	var wg sync.WaitGroup
	for seg := range b.segments {
		wg.Go(func() {
			p := dynamodb.NewScanPaginator(b.srv.Client, &dynamodb.ScanInput{
				TableName: aws.String(b.table), Segment: aws.Int32(int32(seg)), TotalSegments: aws.Int32(int32(b.segments)),
				Limit: aws.Int32(int32(b.pageSize)),
				// The same request krbops sends (it reports capacity and
				// feeds --max-rcu with it): dynalite's own work per page
				// is then equal and the ratio is krbops' overhead alone.
				ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
			})
			var buf []byte
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					errc <- err
					return
				}
				buf = buf[:0]
				for _, it := range page.Items {
					if buf, err = dynamo.AppendItem(buf, it, dynamo.FormatJSON); err != nil {
						errc <- err
						return
					}
					buf = append(buf, '\n')
				}
				mu.Lock()
				w.Write(buf)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := w.Flush(); err != nil {
		return 0, err
	}
	d := time.Since(began)
	b.rawCPU = append(b.rawCPU, selfCPU()-cpu0)
	select {
	case err := <-errc:
		return 0, err
	default:
	}
	return d, nil
}

// cpuProfile is -cpuprofile.
var cpuProfile string

// profile runs one krbops scan inside this process (the same command
// tree the binary runs) under the CPU profiler: where krbops' own client
// time goes, next to the raw loop's.
func (b *bench) profile(ctx context.Context, path string) error {
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": dynalab.AccessKeyID, "AWS_SECRET_ACCESS_KEY": dynalab.SecretAccessKey,
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_PROFILE": ""} {
		os.Setenv(k, v)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var out, errOut bytes.Buffer
	streams := &commands.IOStreams{In: bytes.NewReader(nil), Out: &out, ErrOut: &errOut, Getenv: os.Getenv}
	app := commands.NewApp(streams, commands.BuildInfo{Version: "querybench"})
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	began := time.Now()
	err = app.Execute(ctx, b.args(filepath.Join(b.dir, "profiled.jsonl"), b.srv.Endpoint))
	pprof.StopCPUProfile()
	app.Close(err, 0)
	if err != nil {
		return fmt.Errorf("%v: %s", err, errOut.String())
	}
	fmt.Printf("  profiled krbops scan in this process: %s; profile in %s\n\n", time.Since(began).Round(time.Millisecond), path)
	return nil
}

// selfCPU is this process's user+system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (b *bench) args(out, endpoint string) []string {
	return []string{"resume-query", "--table", b.table, "--scan", "--segments", fmt.Sprint(b.segments),
		"--page-size", fmt.Sprint(b.pageSize), "--endpoint-url", endpoint, "--region", dynalab.Region,
		"--out", out, "--timeout", "60s", "-o", "json"}
}

func (b *bench) cmd(out, endpoint string) *exec.Cmd {
	c := exec.Command(b.bin, b.args(out, endpoint)...)
	c.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+dynalab.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+dynalab.SecretAccessKey,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent", "AWS_PROFILE=")
	return c
}

// krbops times the whole process, start to exit.
func (b *bench) krbops(out string) (time.Duration, error) {
	c := b.cmd(out, b.srv.Endpoint)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	began := time.Now()
	if err := c.Run(); err != nil {
		return 0, fmt.Errorf("%v: %s", err, stderr.String())
	}
	d := time.Since(began)
	b.krbCPU = append(b.krbCPU, c.ProcessState.UserTime()+c.ProcessState.SystemTime())
	return d, nil
}

func (b *bench) want(ctx context.Context) ([]string, error) {
	items, err := b.srv.ScanAll(ctx, &dynamodb.ScanInput{TableName: aws.String(b.table)})
	if err != nil {
		return nil, err
	}
	return dynalab.Lines(items, dynamo.FormatJSON)
}

// killAt90 SIGKILLs a run once its checkpoint has committed 90 % of the
// items, resumes it, and reports how many pages the resumed run read.
func (b *bench) killAt90(want []string) error {
	// Through the harness's proxy (no faults): a request cut off by the
	// kill would otherwise reach dynalite aborted, and dynalite 4 exits
	// on that.
	proxy, err := dynalab.NewProxy(b.srv.Endpoint, 1)
	if err != nil {
		return err
	}
	defer proxy.Close()
	out := filepath.Join(b.dir, "killed.jsonl")
	c := b.cmd(out, proxy.URL)
	if err := c.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	target := int64(float64(b.items) * 0.9)
	var atKill int64
	for atKill < target {
		select {
		case err := <-done:
			return fmt.Errorf("the run finished before 90%% (%d items committed): %v", atKill, err)
		case <-time.After(5 * time.Millisecond):
		}
		if cp, err := dynamo.LoadCheckpoint(out + ".checkpoint"); err == nil {
			atKill = 0
			for _, s := range cp.Segments {
				atKill += s.Items
			}
		}
	}
	c.Process.Signal(syscall.SIGKILL)
	<-done
	cp, err := dynamo.LoadCheckpoint(out + ".checkpoint")
	if err != nil {
		return err
	}
	var committedPages, committedItems int64
	for _, s := range cp.Segments {
		committedPages += s.Pages
		committedItems += s.Items
	}

	r := b.cmd(out, proxy.URL)
	var stdout bytes.Buffer
	r.Stdout = &stdout
	began := time.Now()
	if err := r.Run(); err != nil {
		return fmt.Errorf("resume: %v", err)
	}
	took := time.Since(began)
	var rep struct {
		Steps []struct {
			ID       string
			Evidence map[string]any
		}
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return err
	}
	var resumed, total float64
	for _, s := range rep.Steps {
		if len(s.ID) > len("query.segment:") && s.ID[:len("query.segment:")] == "query.segment:" {
			resumed += s.Evidence["pages"].(float64)
			total += s.Evidence["pages_total"].(float64)
		}
	}
	got, err := dynalab.ReadLines(out)
	if err != nil {
		return err
	}
	d := dynalab.Compare(want, got)
	fmt.Printf("\nSIGKILL at %.1f %% (%d items, %d pages committed), then resume (%s):\n",
		100*float64(committedItems)/float64(b.items), committedItems, committedPages, took.Round(time.Millisecond))
	fmt.Printf("  pages read by the resumed run     %6.0f of %.0f in all (%.1f %%)\n", resumed, total, 100*resumed/total)
	fmt.Printf("  output after resume               %d items, %d duplicates, %d missing\n", d.Got, d.Duplicates, d.Missing)
	if !d.OK() {
		return fmt.Errorf("resumed output is not exact: %s", d)
	}
	return nil
}
