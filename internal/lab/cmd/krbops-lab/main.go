// Command krbops-lab runs the internal/lab Kerberos realm outside of `go
// test`: `make demo` uses it to show krbops against a healthy KDC, a KDC
// whose clock is 7 minutes ahead, a krb5.conf whose first KDC is down, a
// stale and a weak keytab, and a key rotation — on an MIT, Heimdal or
// Samba AD realm (--kind; `make demo KDC=ad`).
//
//	krbops-lab demo --krbops ./bin/krbops [--kind ad]  # the on-call walkthrough
//	krbops-lab shell [--kind heimdal] [--faketime +420s] # a realm to poke at; Ctrl-C ends it
//
// Exit codes: 0 done, 1 the lab failed, 2 usage or missing packages,
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

func main() {
	os.Exit(run(os.Args[1:]))
}

func usage() {
	fmt.Fprintf(os.Stderr, `usage:
  krbops-lab demo --krbops PATH [--kind mit|heimdal|ad] [--realm R] [--skew +420s]
  krbops-lab shell [--kind mit|heimdal|ad] [--realm R] [--faketime +420s]
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

// checkInstalled prints the exact install command when the programs a
// realm of kind needs are missing; an unknown kind is startRealm's error.
func checkInstalled(kind string) bool {
	k, err := lab.ParseKind(kind)
	if err != nil {
		return true
	}
	miss := lab.MissingFor(k)
	if len(miss) == 0 {
		return true
	}
	fmt.Fprintf(os.Stderr, "krbops-lab: missing %s. Install what the %s lab needs with:\n\n    sudo %s\n\n",
		strings.Join(miss, ", "), k, lab.InstallCommandFor(k))
	return false
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "  · "+format+"\n", a...)
}

// startRealm bounds start-up: a Samba AD domain is provisioned on the
// first start, which takes tens of seconds on a loaded machine.
func startRealm(ctx context.Context, kind, realm string) (*lab.Realm, error) {
	k, err := lab.ParseKind(kind)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	return lab.Start(sctx, lab.Options{Kind: k, Realm: realm, Logf: logf})
}

// demoNames are the demo's principals on one kind of realm. AD has no
// multi-component user principals: a service is a user account with an
// SPN, and krbops is pointed at the account.
type demoNames struct {
	probe, op, legacy, batch string
	svcAccount, svcSPN       string
}

func namesFor(r *lab.Realm) demoNames {
	if r.Kind == lab.AD {
		dom := strings.ToLower(r.Name)
		return demoNames{probe: "demo-host", op: "oncall", legacy: "legacy", batch: "batch1",
			svcAccount: "svc-web1", svcSPN: "HTTP/web1." + dom}
	}
	return demoNames{probe: "host/demo.krbops.test", op: "oncall/ops.krbops.test", legacy: "host/legacy.krbops.test",
		batch: "batch1", svcAccount: "HTTP/web1.krbops.test", svcSPN: "HTTP/web1.krbops.test"}
}

// newKeytab creates principal with random keys and writes them to path.
func newKeytab(ctx context.Context, r *lab.Realm, principal, path string) error {
	if err := r.AddPrincipal(ctx, principal, ""); err != nil {
		return err
	}
	if r.Kind == lab.MIT {
		return r.Keytab(ctx, principal, path)
	}
	return r.ExportKeytab(ctx, principal, path)
}

func interrupted(ctx context.Context) bool { return errors.Is(ctx.Err(), context.Canceled) }

func demo(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	krbops := fs.String("krbops", "", "path of the krbops binary to demonstrate (required)")
	kind := fs.String("kind", "mit", "KDC implementation: mit, heimdal or ad (Samba AD DC)")
	realmName := fs.String("realm", "", "realm name (default: KRBOPS.TEST, AD.TEST for ad)")
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
	if !checkInstalled(*kind) {
		return 2
	}

	fmt.Printf("Starting a throwaway %s realm on loopback...\n", kindTitle(*kind))
	r, err := startRealm(ctx, *kind, *realmName)
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
	n := namesFor(r)
	if err := r.AddPrincipal(ctx, n.probe, ""); err != nil {
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
	batchKT := filepath.Join(r.Dir, "batch1.keytab")
	allow := filepath.Join(r.Dir, "clusters.txt")
	store := filepath.Join(r.Dir, "store")
	clockScene := func(file, title string, kdcs ...string) scene {
		conf := filepath.Join(r.Dir, file)
		return scene{
			title: title + "\n   krb5.conf kdc = " + strings.Join(kdcs, ", "),
			conf:  conf,
			setup: func() error { return r.WriteKrb5Conf(conf, kdcs...) },
			argv:  []string{"clock-check", "--krb5-config", conf, "-o", "table", "--principal", n.probe},
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
				if r.Kind != lab.AD {
					if err := newKeytab(ctx, r, n.svcAccount, svcKT); err != nil {
						return err
					}
					return os.Chmod(svcKT, 0o600)
				}
				// An AD service keytab as adcli and msktutil write it: the
				// account's keys under its own name and under the SPN.
				if err := r.AddPrincipal(ctx, n.svcAccount, ""); err != nil {
					return err
				}
				if err := r.AddSPN(ctx, n.svcAccount, n.svcSPN); err != nil {
					return err
				}
				if err := r.ExportServiceKeytab(ctx, n.svcAccount, svcKT); err != nil {
					return err
				}
				return os.Chmod(svcKT, 0o600)
			},
			argv: []string{"verify", "--keytab", svcKT, "--principal", n.svcAccount, "--service", n.svcSPN, "-o", "table"},
		},
		{
			title: "Someone reset the service's key at the KDC; this host kept the old keytab",
			conf:  healthy,
			setup: func() error {
				// The on-call's own TGT lets verify ask the KDC's kvno.
				if err := newKeytab(ctx, r, n.op, opKT); err != nil {
					return err
				}
				if out, err := r.Command(ctx, "kinit", "-k", "-t", opKT, "-c", opCC, n.op).CombinedOutput(); err != nil {
					return fmt.Errorf("kinit: %v: %s", err, out)
				}
				return r.SetPassword(ctx, n.svcAccount, "")
			},
			argv: []string{"verify", "--keytab", svcKT, "--principal", n.svcAccount, "--service", n.svcSPN, "--ccache", opCC, "-o", "table"},
		},
		{
			title: "klist-lint: a group-readable keytab that piled up kvnos",
			conf:  healthy,
			setup: func() error {
				if err := r.AddPrincipal(ctx, n.legacy, ""); err != nil {
					return err
				}
				for range 3 { // each export after a key change adds a kvno
					var err error
					if r.Kind == lab.MIT {
						err = r.Keytab(ctx, n.legacy, weakKT, "aes256-cts-hmac-sha1-96", "rc4-hmac")
					} else if err = r.SetPassword(ctx, n.legacy, ""); err == nil {
						err = r.ExportKeytab(ctx, n.legacy, weakKT)
					}
					if err != nil {
						return err
					}
				}
				return os.Chmod(weakKT, 0o640)
			},
			argv: []string{"klist-lint", "--keytab", weakKT, "--ccache", opCC, "-o", "table"},
		},
		{
			title: "Rotate a batch client's key with kpasswd (a self change), keytab and secret store updated",
			conf:  healthy,
			setup: func() error {
				if err := newKeytab(ctx, r, n.batch, batchKT); err != nil {
					return err
				}
				if err := os.Mkdir(store, 0o700); err != nil {
					return err
				}
				return os.WriteFile(allow, []byte("# clusters cleared for rotation\ndemo\n"), 0o600)
			},
			// The batch principal never logged in, so the last-login
			// pre-check has no record: --no-login-record-ok says that
			// is expected.
			argv: []string{"rotate", "--principal", n.batch, "--keytab", batchKT, "--role", "client", "--backend", "kpasswd",
				"--cluster", "demo", "--allowlist", allow, "--secret-store", "file://" + store,
				"--ledger", filepath.Join(r.Dir, "ledger.db"), "--journal-dir", filepath.Join(r.Dir, "journal"),
				"--kdc-log", r.KDCLog(), "--no-login-record-ok", "--yes", "-o", "table"},
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
	kind := fs.String("kind", "mit", "KDC implementation: mit, heimdal or ad (Samba AD DC)")
	realmName := fs.String("realm", "", "realm name (default: KRBOPS.TEST, AD.TEST for ad)")
	skew := fs.String("faketime", "", "also start a KDC with this FAKETIME, e.g. +420s")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !checkInstalled(*kind) {
		return 2
	}
	r, err := startRealm(ctx, *kind, *realmName)
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
	fmt.Printf("# %s realm %s, KDC %s, kpasswd %s, kadmind %s; admin %s keytab %s\n", r.Kind, r.Name, r.KDCs[0].Addr, r.KpasswdAddr, r.KadminAddr, r.AdminPrincipal, r.AdminKeytab)
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

func kindTitle(kind string) string {
	switch k, _ := lab.ParseKind(kind); k {
	case lab.Heimdal:
		return "Heimdal Kerberos"
	case lab.AD:
		return "Active Directory (Samba AD DC)"
	}
	return "MIT Kerberos"
}
