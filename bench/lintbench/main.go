// Command lintbench measures `krbops klist-lint --dir` on a fleet-sized
// tree: it writes N keytabs (copies of a few seeds that MIT's ktutil
// makes, 10% of them with findings) plus some non-keytab files, times
// krbops over a tenth of the tree and over all of it (wall time, keytabs
// per second, peak RSS: memory must not grow with the tree), and times a
// `klist -k -t -e` loop over a sample for comparison. It prints figures;
// it asserts nothing except that krbops exits 0 or 1.
//
//	go run ./bench/lintbench --krbops bin/krbops [-n 100000] [-sample 500] [-keep]
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// budget is issue 3's target for 100,000 keytabs on a 2-core machine.
const budget = 10 * time.Second

func main() {
	bin := flag.String("krbops", "bin/krbops", "krbops binary to time")
	n := flag.Int("n", 100000, "keytabs in the tree")
	sample := flag.Int("sample", 500, "keytabs read by the klist -k -t -e loop")
	keep := flag.Bool("keep", false, "keep the tree (its path is printed)")
	flag.Parse()
	if err := run(*bin, *n, *sample, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "lintbench:", err)
		os.Exit(1)
	}
}

func run(bin string, n, sample int, keep bool) error {
	if n < 10 || sample < 1 {
		return errors.New("-n must be at least 10 and -sample at least 1")
	}
	for _, tool := range []string{"ktutil", "klist"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: apt-get install -y krb5-user", tool)
		}
	}
	root, err := os.MkdirTemp("", "krbops-lintbench-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Printf("tree kept in %s\n", root)
	} else {
		defer os.RemoveAll(root)
	}

	seeds, err := makeSeeds(filepath.Join(root, "seeds"))
	if err != nil {
		return err
	}
	began := time.Now()
	files, err := buildTree(root, n, seeds)
	if err != nil {
		return err
	}
	fmt.Printf("tree: %d keytabs and %d other files under %s, written in %s\n", n, n/100, root, time.Since(began).Round(time.Millisecond))

	small, err := lint(bin, filepath.Join(root, "tree", "part0"))
	if err != nil {
		return err
	}
	full, err := lint(bin, filepath.Join(root, "tree"))
	if err != nil {
		return err
	}
	// Memory must not grow with the number of files, only with findings:
	// the same tree with the rules that fire there disabled.
	quietSmall, err := lint(bin, filepath.Join(root, "tree", "part0"), "--disable", "KT006,KT009")
	if err != nil {
		return err
	}
	quiet, err := lint(bin, filepath.Join(root, "tree"), "--disable", "KT006,KT009")
	if err != nil {
		return err
	}
	klistRate, klistTook, err := klistLoop(files[:min(sample, len(files))])
	if err != nil {
		return err
	}

	fmt.Printf("krbops klist-lint --dir, %6d keytabs: %7s  %8.0f keytabs/s  peak RSS %4d MiB  %d findings\n",
		small.keytabs, small.took.Round(time.Millisecond), small.rate(), small.rssMiB, small.findings)
	fmt.Printf("krbops klist-lint --dir, %6d keytabs: %7s  %8.0f keytabs/s  peak RSS %4d MiB  %d findings\n",
		full.keytabs, full.took.Round(time.Millisecond), full.rate(), full.rssMiB, full.findings)
	for _, q := range []lintRun{quietSmall, quiet} {
		fmt.Printf("  KT006/KT009 off,        %6d keytabs: %7s  %8.0f keytabs/s  peak RSS %4d MiB  %d findings\n",
			q.keytabs, q.took.Round(time.Millisecond), q.rate(), q.rssMiB, q.findings)
	}
	fmt.Printf("klist -k -t -e loop,      %6d keytabs: %7s  %8.0f keytabs/s\n",
		min(sample, len(files)), klistTook.Round(time.Millisecond), klistRate)
	fmt.Printf("ratio: krbops lints %.0fx as many keytabs per second as the klist loop reads\n", full.rate()/klistRate)
	verdict := "within"
	if full.took > budget {
		verdict = "OVER"
	}
	fmt.Printf("%d keytabs in %s: %s the %s budget (GOMAXPROCS from %d CPUs)\n", full.keytabs, full.took.Round(time.Millisecond), verdict, budget, numCPU())
	return nil
}

// makeSeeds writes the keytabs the tree is made of with ktutil, offline
// (addent -password needs no KDC): a clean one, one with an rc4 key
// (KT006), one with three kvnos (KT009).
func makeSeeds(dir string) (map[string][]byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	specs := map[string][][2]string{ // kvno, enctype
		"clean": {{"2", "aes256-cts-hmac-sha1-96"}, {"2", "aes128-cts-hmac-sha1-96"}},
		"rc4":   {{"2", "aes256-cts-hmac-sha1-96"}, {"2", "rc4-hmac"}},
		"prune": {{"1", "aes256-cts-hmac-sha1-96"}, {"2", "aes256-cts-hmac-sha1-96"}, {"3", "aes256-cts-hmac-sha1-96"}},
	}
	seeds := map[string][]byte{}
	for name, entries := range specs {
		path := filepath.Join(dir, name+".keytab")
		var script strings.Builder
		for _, e := range entries {
			fmt.Fprintf(&script, "addent -password -p host/%s.bench.test@BENCH.TEST -k %s -e %s\nbench-password\n", name, e[0], e[1])
		}
		fmt.Fprintf(&script, "wkt %s\nquit\n", path)
		cmd := exec.Command("ktutil")
		cmd.Stdin = strings.NewReader(script.String())
		cmd.Env = append(os.Environ(), "KRB5_CONFIG=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ktutil: %v\n%s", err, out)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		seeds[name] = data
	}
	return seeds, nil
}

// buildTree writes n keytabs, 1,000 per directory, in ten parts (part0 is
// the tenth the small run lints), plus one README per 100 keytabs.
func buildTree(root string, n int, seeds map[string][]byte) ([]string, error) {
	var files []string
	for i := 0; i < n; i++ {
		dir := filepath.Join(root, "tree", fmt.Sprintf("part%d", i*10/n), fmt.Sprintf("d%04d", i/1000))
		if i%1000 == 0 || i*10/n != (i-1)*10/n {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
		}
		seed := seeds["clean"]
		switch i % 20 {
		case 7:
			seed = seeds["rc4"]
		case 13:
			seed = seeds["prune"]
		}
		p := filepath.Join(dir, fmt.Sprintf("host%06d.keytab", i))
		if err := os.WriteFile(p, seed, 0o600); err != nil {
			return nil, err
		}
		files = append(files, p)
		if i%100 == 0 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("README%06d", i)), []byte("keytabs for the bench fleet\n"), 0o644); err != nil {
				return nil, err
			}
		}
	}
	return files, nil
}

type lintRun struct {
	keytabs  int
	findings int
	took     time.Duration
	rssMiB   int64
}

func (r lintRun) rate() float64 { return float64(r.keytabs) / r.took.Seconds() }

func lint(bin, dir string, extra ...string) (lintRun, error) {
	cmd := exec.Command(bin, append([]string{"klist-lint", "--dir", dir, "--max-age", "0", "-o", "json"}, extra...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	begin := time.Now()
	err := cmd.Run()
	took := time.Since(begin)
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		return lintRun{}, fmt.Errorf("%s klist-lint --dir %s: %v", bin, dir, err)
	}
	var doc struct {
		Steps []struct {
			ID       string         `json:"id"`
			Evidence map[string]any `json:"evidence"`
		} `json:"steps"`
		Findings []json.RawMessage `json:"findings"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		return lintRun{}, fmt.Errorf("krbops json: %v", err)
	}
	r := lintRun{findings: len(doc.Findings), took: took}
	for _, s := range doc.Steps {
		if s.ID == "keytab.dir" {
			n, _ := s.Evidence["keytabs"].(float64)
			r.keytabs = int(n)
		}
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.rssMiB = int64(ru.Maxrss) / 1024 // KiB on Linux
	}
	return r, nil
}

// klistLoop is what an operator's shell loop costs: one klist process per
// keytab.
func klistLoop(files []string) (float64, time.Duration, error) {
	begin := time.Now()
	for _, f := range files {
		cmd := exec.Command("klist", "-k", "-t", "-e", f)
		cmd.Env = append(os.Environ(), "KRB5_CONFIG=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, 0, fmt.Errorf("klist -k -t -e %s: %v\n%s", f, err, out)
		}
	}
	took := time.Since(begin)
	return float64(len(files)) / took.Seconds(), took, nil
}

func numCPU() int {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(data), "processor\t:")
}
