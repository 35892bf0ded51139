// Command krbops-lab runs the internal/lab Kerberos realm outside of `go
// test`: `make demo` uses it to show krbops against a healthy KDC, a KDC
// whose clock is 7 minutes ahead, and a krb5.conf whose first KDC is down.
//
//	krbops-lab demo --krbops ./bin/krbops   # the on-call walkthrough
//	krbops-lab shell [--faketime +420s]     # a realm to poke at; Ctrl-C ends it
//
// Exit codes: 0 done, 1 the lab failed, 2 usage or missing MIT packages,
// 130 interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/krbops/krbops/internal/lab"
)

const demoPrincipal = "host/demo.krbops.test"

func main() {
	os.Exit(run(os.Args[1:]))
}

func usage() {
	fmt.Fprintf(os.Stderr, `usage:
  krbops-lab demo --krbops PATH [--realm R] [--keep]
  krbops-lab shell [--realm R] [--faketime +420s]
`)
}

func run(args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "demo":
		return demo(ctx, args[1:])
	case "shell":
		return shell(ctx, args[1:])
	case "-h", "--help", "help":
		usage()
		return 0
	default:
		fmt.Fprintf(os.Stderr, "krbops-lab: unknown command %q\n", args[0])
		usage()
		return 2
	}
}

// checkInstalled prints the exact install command when MIT packages are
// missing.
func checkInstalled() bool {
	miss := lab.Missing()
	if len(miss) == 0 {
		return true
	}
	fmt.Fprintf(os.Stderr, "krbops-lab: missing %s. Install the MIT Kerberos lab packages with:\n\n    sudo %s\n\n",
		strings.Join(miss, ", "), lab.InstallCommand)
	return false
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "  · "+format+"\n", a...)
}

func startRealm(ctx context.Context, realm string) (*lab.Realm, error) {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return lab.Start(sctx, lab.Options{Realm: realm, Logf: logf})
}

func interrupted(ctx context.Context) bool { return errors.Is(ctx.Err(), context.Canceled) }

func demo(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	krbops := fs.String("krbops", "", "path of the krbops binary to demonstrate (required)")
	realmName := fs.String("realm", lab.DefaultRealm, "realm name")
	skew := fs.String("skew", "+420s", "FAKETIME of the skewed KDC")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *krbops == "" {
		fmt.Fprintln(os.Stderr, "krbops-lab demo: --krbops PATH is required")
		return 2
	}
	bin, err := filepath.Abs(*krbops)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "krbops-lab demo: krbops binary: %v\n", err)
		return 2
	}
	if !checkInstalled() {
		return 2
	}

	fmt.Printf("Starting a throwaway MIT Kerberos realm %s on loopback...\n", *realmName)
	r, err := startRealm(ctx, *realmName)
	if err != nil {
		if interrupted(ctx) {
			return 130
		}
		fmt.Fprintf(os.Stderr, "krbops-lab: %v\n", err)
		return 1
	}
	defer func() {
		fmt.Println("\nTearing the lab realm down.")
		if err := r.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "krbops-lab: %v\n", err)
		}
	}()
	if err := r.AddPrincipal(ctx, demoPrincipal, ""); err != nil {
		fmt.Fprintf(os.Stderr, "krbops-lab: %v\n", err)
		return 1
	}
	skewed, err := r.StartKDC(ctx, lab.KDCOptions{FakeTime: *skew})
	if err != nil {
		if interrupted(ctx) {
			return 130
		}
		fmt.Fprintf(os.Stderr, "krbops-lab: %v\n", err)
		return 1
	}
	normal := r.KDCs[0]
	down := r.DownAddr()

	healthy := filepath.Join(r.Dir, "healthy.conf")
	svcKT := filepath.Join(r.Dir, "web1.keytab")
	weakKT := filepath.Join(r.Dir, "legacy.keytab")
	opCC := "FILE:" + filepath.Join(r.Dir, "oncall.ccache")
	opKT := filepath.Join(r.Dir, "oncall.keytab")
	const svc, op, legacy = "HTTP/web1.krbops.test", "oncall/ops.krbops.test", "host/legacy.krbops.test"
	clockScene := func(file, title string, kdcs ...string) scene {
		conf := filepath.Join(r.Dir, file)
		return scene{
			title: title + "\n   krb5.conf kdc = " + strings.Join(kdcs, ", "),
			conf:  conf,
			setup: func() error { return r.WriteKrb5Conf(conf, kdcs...) },
			argv:  []string{"clock-check", "--krb5-config", conf, "-o", "table", "--principal", demoPrincipal},
		}
	}
	scenes := []scene{
		clockScene("healthy.conf", fmt.Sprintf("Healthy realm: one KDC (%s), clocks in sync", normal.Addr), normal.Addr),
		clockScene("skewed.conf", fmt.Sprintf("A KDC whose clock is %s off (%s, libfaketime)", *skew, skewed.Addr), skewed.Addr),
		clockScene("failover.conf", fmt.Sprintf("First KDC down (%s), second healthy (%s)", down, normal.Addr), down, normal.Addr),
		{
			title: "A service keytab: verify proves keytab -> AS -> TGS -> AP",
			conf:  healthy,
			setup: func() error {
				if err := r.AddPrincipal(ctx, svc, ""); err != nil {
					return err
				}
				if err := r.Keytab(ctx, svc, svcKT); err != nil {
					return err
				}
				return os.Chmod(svcKT, 0o600)
			},
			argv: []string{"verify", "--keytab", svcKT, "-o", "table"},
		},
		{
			title: "Someone ran `cpw -randkey` at the KDC; this host kept the old keytab",
			conf:  healthy,
			setup: func() error {
				// The on-call's own TGT lets verify ask the KDC's kvno.
				if err := r.AddPrincipal(ctx, op, ""); err != nil {
					return err
				}
				if err := r.Keytab(ctx, op, opKT); err != nil {
					return err
				}
				if out, err := r.Command(ctx, "kinit", "-k", "-t", opKT, "-c", opCC, op).CombinedOutput(); err != nil {
					return fmt.Errorf("kinit: %v: %s", err, out)
				}
				_, err := r.Kadmin(ctx, "cpw -randkey "+svc)
				return err
			},
			argv: []string{"verify", "--keytab", svcKT, "--ccache", opCC, "-o", "table"},
		},
		{
			title: "klist-lint: an old, group-readable keytab with rc4 and three kvnos",
			conf:  healthy,
			setup: func() error {
				if err := r.AddPrincipal(ctx, legacy, ""); err != nil {
					return err
				}
				for range 3 { // each ktadd adds a kvno
					if err := r.Keytab(ctx, legacy, weakKT, "aes256-cts-hmac-sha1-96", "rc4-hmac"); err != nil {
						return err
					}
				}
				return os.Chmod(weakKT, 0o640)
			},
			argv: []string{"klist-lint", "--keytab", weakKT, "--ccache", opCC, "-o", "table"},
		},
	}
	type result struct {
		title string
		code  int
	}
	var results []result
	for i, sc := range scenes {
		if err := sc.setup(); err != nil {
			fmt.Fprintf(os.Stderr, "krbops-lab: %v\n", err)
			return 1
		}
		fmt.Printf("\n━━ %d/%d  %s\n", i+1, len(scenes), sc.title)
		fmt.Printf("$ krbops %s\n", strings.Join(sc.argv, " "))
		code, err := runKrbops(ctx, r, bin, sc.conf, sc.argv)
		if interrupted(ctx) {
			fmt.Println("\nInterrupted.")
			return 130
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "krbops-lab: running krbops: %v\n", err)
			return 1
		}
		fmt.Printf("→ exit code %d\n", code)
		title, _, _ := strings.Cut(sc.title, "\n")
		results = append(results, result{title, code})
	}
	fmt.Println("\nSummary (a non-zero exit code for a broken realm is expected, not a demo failure):")
	for i, res := range results {
		fmt.Printf("  %d. exit %-3d %s\n", i+1, res.code, res.title)
	}
	return 0
}

// scene is one step of the demo: what the on-call faces, how the lab
// makes it real, and the krbops command they would run.
type scene struct {
	title string
	conf  string
	setup func() error
	argv  []string
}

// runKrbops runs krbops like an on-call would, stdout and stderr on the
// terminal, and returns its exit code. err is for failures to run it at all.
func runKrbops(ctx context.Context, r *lab.Realm, bin, conf string, argv []string) (int, error) {
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Env = append(os.Environ(), r.Env()...)
	cmd.Env = append(cmd.Env, "KRB5_CONFIG="+conf)
	cmd.Stdin = os.Stdin
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 3 * time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode(), nil
	case errors.As(err, &ee):
		return -1, fmt.Errorf("%s: %v", bin, ee)
	default:
		return -1, err
	}
}

func shell(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("shell", flag.ContinueOnError)
	realmName := fs.String("realm", lab.DefaultRealm, "realm name")
	skew := fs.String("faketime", "", "also start a KDC with this FAKETIME, e.g. +420s")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !checkInstalled() {
		return 2
	}
	r, err := startRealm(ctx, *realmName)
	if err != nil {
		if interrupted(ctx) {
			return 130
		}
		fmt.Fprintf(os.Stderr, "krbops-lab: %v\n", err)
		return 1
	}
	defer r.Close()
	if *skew != "" {
		k, err := r.StartKDC(ctx, lab.KDCOptions{FakeTime: *skew})
		if err != nil {
			fmt.Fprintf(os.Stderr, "krbops-lab: %v\n", err)
			return 1
		}
		conf := filepath.Join(r.Dir, "skewed.conf")
		if err := r.WriteKrb5Conf(conf, k.Addr); err != nil {
			fmt.Fprintf(os.Stderr, "krbops-lab: %v\n", err)
			return 1
		}
		fmt.Printf("# skewed KDC %s (FAKETIME=%s): KRB5_CONFIG=%s\n", k.Addr, *skew, conf)
	}
	fmt.Printf("# realm %s, KDC %s, kadmind %s; admin %s keytab %s\n", r.Name, r.KDCs[0].Addr, r.KadminAddr, r.AdminPrincipal, r.AdminKeytab)
	fmt.Printf("# kdc log: %s\n", r.KDCLog())
	for _, kv := range r.Env() {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Printf("export %s=%q\n", k, v)
	}
	fmt.Fprintln(os.Stderr, "# lab running; Ctrl-C to stop it")
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "\n# stopping")
	return 0
}
