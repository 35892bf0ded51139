// Command auditbench measures `krbops audit` on KDC logs of gigabytes: it
// writes a realistic MIT krb5kdc log (AS and TGS requests, pre-auth
// rounds, refused logins, a little start-up noise) of 1 and 10 million
// lines across 100,000 principals, then times `grep -c AS_REQ` and
// `krbops audit --kdc-log FILE` over the same file in the same run. It
// prints bytes per second of both, their ratio, and krbops' peak RSS at
// each size (memory must stay flat: it holds per-principal aggregates
// only). It asserts nothing except that krbops and grep succeed.
//
//	go run ./bench/auditbench --krbops bin/krbops [-lines 10000000] [-principals 100000] [-keep] [-dir DIR]
//
// With -dir the logs are written to DIR once and reused by later runs
// with the same -lines and -principals (writing 4 GiB takes longer than
// timing it), and kept.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("krbops", "bin/krbops", "krbops binary to time")
	lines := flag.Int("lines", 10_000_000, "lines of the large log; a tenth of it is the small one")
	principals := flag.Int("principals", 100_000, "principals in the logs")
	keep := flag.Bool("keep", false, "keep the generated logs (their directory is printed)")
	reuse := flag.String("dir", "", "write the logs to this directory once, reuse them in later runs, and keep them")
	flag.Parse()
	if err := run(*bin, *lines, *principals, *keep, *reuse); err != nil {
		fmt.Fprintln(os.Stderr, "auditbench:", err)
		os.Exit(1)
	}
}

func run(bin string, lines, principals int, keep bool, reuse string) error {
	if lines < 1000 || principals < 10 {
		return errors.New("-lines must be at least 1000 and -principals at least 10")
	}
	if _, err := exec.LookPath("grep"); err != nil {
		return err
	}
	dir := reuse
	if reuse != "" {
		keep = true
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	} else {
		d, err := os.MkdirTemp("", "krbops-auditbench-")
		if err != nil {
			return err
		}
		dir = d
	}
	if keep {
		fmt.Printf("logs kept in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	fmt.Printf("auditbench: %d principals, %d CPUs\n", principals, runtime.NumCPU())
	for _, n := range []int{lines / 10, lines} {
		path := filepath.Join(dir, fmt.Sprintf("krb5kdc-%d-%d.log", n, principals))
		began := time.Now()
		size, reused, err := logFile(path, n, principals, reuse != "")
		if err != nil {
			return err
		}
		if reused {
			fmt.Printf("\n%d lines, %s, reused %s\n", n, mib(size), path)
		} else {
			fmt.Printf("\n%d lines, %s, written in %s\n", n, mib(size), time.Since(began).Round(time.Millisecond))
		}
		// Warm the page cache once so neither tool pays for the first read.
		if _, err := timed(exec.Command("cat", path)); err != nil {
			return err
		}
		g, err := timed(exec.Command("grep", "-c", "AS_REQ", path))
		if err != nil {
			return fmt.Errorf("grep: %w", err)
		}
		k, err := timed(exec.Command(bin, "audit", "--kdc-log", path, "--since", "3650d", "-o", "json"))
		if err != nil && !exitedWith(err, 1) {
			return fmt.Errorf("krbops audit: %w", err)
		}
		gRate, kRate := float64(size)/g.wall.Seconds(), float64(size)/k.wall.Seconds()
		fmt.Printf("  grep -c AS_REQ   %8s  %9s/s  cpu %8s  peak RSS %s\n", g.wall.Round(time.Millisecond), mib(int64(gRate)), g.cpu.Round(time.Millisecond), mib(g.maxRSS))
		fmt.Printf("  krbops audit     %8s  %9s/s  cpu %8s  peak RSS %s\n", k.wall.Round(time.Millisecond), mib(int64(kRate)), k.cpu.Round(time.Millisecond), mib(k.maxRSS))
		fmt.Printf("  ratio krbops/grep bytes per second: %.2f (wall), %.2f (per CPU second)\n", kRate/gRate, g.cpu.Seconds()/k.cpu.Seconds())
		// On a shared host the wall ratio depends on the load; say what it was.
		if b, err := os.ReadFile("/proc/loadavg"); err == nil {
			fmt.Printf("  load average: %s", b)
		}
		if !keep {
			// Free the disk before the next, ten times larger log.
			if err := os.Remove(path); err != nil {
				return err
			}
		}
	}
	return nil
}

// logFile writes the log at path, or with reuse keeps one a finished
// earlier run wrote there (a partial one is written under a temporary
// name and renamed only when complete).
func logFile(path string, n, principals int, reuse bool) (size int64, reused bool, err error) {
	if reuse {
		if fi, err := os.Stat(path); err == nil {
			return fi.Size(), true, nil
		}
	}
	tmp := path + ".partial"
	if size, err = writeLog(tmp, n, principals); err != nil {
		os.Remove(tmp)
		return 0, false, err
	}
	return size, false, os.Rename(tmp, path)
}

type measure struct {
	wall, cpu time.Duration
	maxRSS    int64 // bytes
}

// timed runs cmd with its output read and discarded (through a pipe: GNU
// grep stops at the first match when its output is /dev/null) and
// returns its wall time, CPU time and peak resident set.
func timed(cmd *exec.Cmd) (measure, error) {
	cmd.Stdout = io.Discard
	began := time.Now()
	err := cmd.Run()
	m := measure{wall: time.Since(began)}
	if cmd.ProcessState != nil {
		m.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			m.maxRSS = ru.Maxrss * 1024 // kilobytes on Linux
		}
	}
	return m, err
}

func exitedWith(err error, code int) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == code
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

const etypes8 = "8 etypes {aes256-cts-hmac-sha1-96(18), aes128-cts-hmac-sha1-96(17), aes256-cts-hmac-sha384-192(20), aes128-cts-hmac-sha256-128(19), DEPRECATED:des3-cbc-sha1(16), DEPRECATED:arcfour-hmac(23), camellia128-cts-cmac(25), camellia256-cts-cmac(26)}"
const etypes2 = "2 etypes {aes256-cts-hmac-sha1-96(18), aes128-cts-hmac-sha1-96(17)}"
const issued = "etypes {rep=aes256-cts-hmac-sha1-96(18), tkt=aes256-cts-hmac-sha1-96(18), ses=aes256-cts-hmac-sha1-96(18)}"

// writeLog writes n lines of krb5kdc log in the proportions of a busy
// realm: most requests are TGS (services asked for), each login is two
// AS lines (NEEDED_PREAUTH, then ISSUE), and a few logins are refused.
func writeLog(path string, n, principals int) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2026, 9, 1, 0, 0, 0, 0, time.Local)
	// The log spans 90 days, one line every few hundred milliseconds.
	step := 90 * 24 * time.Hour / time.Duration(n)
	clients, services := principals/2, principals-principals/2
	for i := 0; i < n; i++ {
		t := start.Add(time.Duration(i) * step)
		ts := t.Format("Jan 02 15:04:05")
		authtime := t.Unix()
		c := rng.IntN(clients)
		addr := fmt.Sprintf("10.%d.%d.%d", c>>16&255, c>>8&255, c&255)
		client := fmt.Sprintf("user%06d@EXAMPLE.COM", c)
		et := etypes8
		if c%3 == 0 {
			et = etypes2
		}
		var line string
		switch k := rng.IntN(100); {
		case k < 55:
			svc := fmt.Sprintf("host/node%06d.example.com@EXAMPLE.COM", rng.IntN(services))
			line = fmt.Sprintf("%s kdc1 krb5kdc[2211](info): TGS_REQ (%s) %s: ISSUE: authtime %d, %s, %s for %s", ts, et, addr, authtime, issued, client, svc)
		case k < 75:
			line = fmt.Sprintf("%s kdc1 krb5kdc[2211](info): AS_REQ (%s) %s: NEEDED_PREAUTH: %s for krbtgt/EXAMPLE.COM@EXAMPLE.COM, Additional pre-authentication required", ts, et, addr, client)
		case k < 95:
			line = fmt.Sprintf("%s kdc1 krb5kdc[2211](info): AS_REQ (%s) %s: ISSUE: authtime %d, %s, %s for krbtgt/EXAMPLE.COM@EXAMPLE.COM", ts, et, addr, authtime, issued, client)
		case k < 98:
			line = fmt.Sprintf("%s kdc1 krb5kdc[2211](info): AS_REQ (%s) %s: PREAUTH_FAILED: %s for krbtgt/EXAMPLE.COM@EXAMPLE.COM, Preauthentication failed", ts, et, addr, client)
		case k < 99:
			line = fmt.Sprintf("%s kdc1 krb5kdc[2211](info): preauth (encrypted_timestamp) verify failure: Preauthentication failed", ts)
		default:
			line = fmt.Sprintf("%s kdc1 krb5kdc[2211](info): closing down fd %d", ts, 10+rng.IntN(20))
		}
		w.WriteString(line)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, err
	}
	return fi.Size(), f.Close()
}
