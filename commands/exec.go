package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/kdcops/keeper"
	"github.com/krbops/krbops/kdcops/keylogin"
)

// ExecOptions are exec's flags and the command it runs.
type ExecOptions struct {
	*Globals
	Keytab            string
	Principal         string
	CCacheDir         string
	Margin            time.Duration
	OnExpiry          string
	FallbackKeytab    string
	FallbackPrincipal string
	Command           []string
}

// Exec's --on-expiry values.
const (
	onExpirySignal = "signal"
	onExpiryNone   = "none"
)

// NewCmdExec builds "krbops exec". runF replaces the run function in
// tests that only check flag parsing.
func NewCmdExec(g *Globals, runF func(context.Context, *ExecOptions) error) *cobra.Command {
	opts := &ExecOptions{Globals: g}
	cmd := &cobra.Command{
		Use:   "exec --keytab K --principal P [flags] -- COMMAND [ARGS...]",
		Short: "Run a command with a Kerberos ticket that stays fresh (perpetual login from a keytab)",
		Long: `Run COMMAND with a TGT that krbops keeps fresh for as long as it runs, as
k5start -K or Hadoop's perpetual login do.

krbops logs in as --principal from --keytab, writes the TGT into a private
credential cache (MIT FILE: format, version 4, mode 0600, in a new mode
0700 directory under --ccache-dir), and runs COMMAND with
KRB5CCNAME=FILE:<that cache>. While COMMAND runs, krbops renews the ticket
when it is renewable and a renewal reaches past the margin, and otherwise
logs in again from the keytab before less than --margin is left (half the
ticket's lifetime when the KDC issues tickets shorter than --margin). The
keytab is read again at every login, so a rotation that replaces it on disk
is picked up; a changed kvno is logged. The cache is replaced in one rename:
COMMAND never reads a half-written cache.

A login that fails before COMMAND starts ends krbops with exit 2 (or 3 when
no KDC answered), the reason and a hint; COMMAND is not started. A refresh
that fails later is logged and retried with backoff (1s doubling to 1m)
while the ticket held is still valid; only when it has really expired is
COMMAND sent SIGTERM (--on-expiry signal) or left alone (--on-expiry none),
and krbops keeps trying to log in.

With --fallback-keytab and --fallback-principal, a login whose key fails
(pre-authentication failed, principal unknown, keytab unreadable or
unusable) is made as the fallback principal instead ("ticket fallback" in
the log); the primary is tried again once its keytab file changes.

SIGINT, SIGTERM and SIGHUP sent to krbops are forwarded to COMMAND, and
krbops waits for it. When COMMAND ends, the cache and its directory are
removed and krbops exits with COMMAND's exit status, or 128+N when a signal
N killed it.

Every ticket request, renewal, cache write, failure, forwarded signal and
the child's exit go to --log-file with the correlation id. See
docs/exec.md.

EXIT STATUS
  COMMAND's exit status, or 128+N when signal N killed it
  2    usage or configuration error (bad flags, unreadable keytab or
       krb5.conf, the KDC refused the first login, COMMAND not found);
       COMMAND was not started
  3    no KDC answered the first login; COMMAND was not started`,
		Example: `  krbops exec --keytab /etc/krb5.keytab --principal svc-etl@EXAMPLE.COM -- /opt/etl/nightly.sh
  krbops exec --keytab svc.keytab --principal svc-etl --margin 30m --log-file etl.log \
      --fallback-keytab standby.keytab --fallback-principal svc-etl-standby -- hdfs dfs -ls /
  krbops exec --keytab svc.keytab --principal svc-etl --on-expiry none -- python3 export.py`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError(errors.New("exec needs a command to run after --"),
					"krbops exec --keytab K --principal P -- COMMAND [ARGS...]")
			}
			if dash := cmd.ArgsLenAtDash(); dash != 0 {
				return usageError(fmt.Errorf("the command must follow -- (got %q before it)", args[0]),
					"krbops exec --keytab K --principal P -- COMMAND [ARGS...]")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Command = args
			if err := opts.validate(); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return execRun(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Keytab, "keytab", "", "keytab to log in from, read again at every login (required)")
	f.StringVar(&opts.Principal, "principal", "", "principal in --keytab, name@REALM (the realm defaults to krb5.conf's default_realm; required)")
	f.StringVar(&opts.CCacheDir, "ccache-dir", "", "directory the private cache directory is made in (default $TMPDIR, else /tmp)")
	f.DurationVar(&opts.Margin, "margin", 10*time.Minute, "refresh the ticket when less than this is left")
	f.StringVar(&opts.OnExpiry, "on-expiry", onExpirySignal, "when the ticket expires without a refresh: signal (SIGTERM to COMMAND) or none")
	f.StringVar(&opts.FallbackKeytab, "fallback-keytab", "", "keytab of a second principal to log in as when --principal's key fails (needs --fallback-principal)")
	f.StringVar(&opts.FallbackPrincipal, "fallback-principal", "", "principal in --fallback-keytab, name@REALM")
	return cmd
}

func (o *ExecOptions) validate() error {
	switch {
	case o.Keytab == "" || o.Principal == "":
		return usageError(errors.New("exec needs --keytab and --principal"), "pass the keytab and the principal the command runs as")
	case o.Margin <= 0:
		return usageError(fmt.Errorf("--margin %s must be positive", o.Margin), "for example --margin 10m")
	case o.OnExpiry != onExpirySignal && o.OnExpiry != onExpiryNone:
		return usageError(fmt.Errorf("--on-expiry %q: want signal or none", o.OnExpiry), "--on-expiry signal sends SIGTERM to the command when its ticket expires")
	case (o.FallbackKeytab == "") != (o.FallbackPrincipal == ""):
		return usageError(errors.New("--fallback-keytab and --fallback-principal go together"), "the fallback is a second principal and its own keytab: pass both, or neither")
	}
	return nil
}

func execRun(ctx context.Context, o *ExecOptions) error {
	log := o.Log.With("command", "exec")
	kc, err := kdcops.LoadConfig(kdcops.ConfigPath(o.Krb5Config, o.IO.Getenv))
	if err != nil {
		return usageError(err, "check --krb5-config (KRB5_CONFIG)")
	}
	var fallback *keylogin.Identity
	if o.FallbackKeytab != "" {
		fallback = &keylogin.Identity{Principal: o.FallbackPrincipal, Keytab: o.FallbackKeytab}
	}
	login, err := keylogin.New(keylogin.Options{Primary: keylogin.Identity{Principal: o.Principal, Keytab: o.Keytab},
		Fallback: fallback, Config: kc.Config, Log: log})
	if err != nil {
		return usageError(err, "pass --principal as name@REALM, or set default_realm in krb5.conf")
	}
	dir := o.CCacheDir
	if dir == "" {
		dir = os.TempDir()
	}
	k := keeper.New(keeper.Options{Login: login, Dir: dir, Margin: o.Margin, Log: log})
	// The cache holds a session key: it goes on every path out.
	defer func() {
		if err := k.Close(); err != nil {
			log.LogAttrs(ctx, slog.LevelError, "ccache removal error", slog.String("error", err.Error()))
		}
	}()
	if err := k.Start(ctx); err != nil {
		return startError(ctx, err)
	}

	// Signals are caught before the child starts, so none is lost in
	// between; they stay caught until it has exited.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	child := exec.Command(o.Command[0], o.Command[1:]...)
	child.Env = append(envWithout(os.Environ(), "KRB5CCNAME"), "KRB5CCNAME=FILE:"+k.Path())
	child.Stdin, child.Stdout, child.Stderr = o.IO.In, o.IO.Out, o.IO.ErrOut
	foreground := execForeground(o.IO.In)
	execPlace(child, foreground)
	if err := child.Start(); err != nil {
		return usageError(fmt.Errorf("command %s: %w", o.Command[0], errors.Unwrap(err)), "check the command's name and PATH")
	}
	log.LogAttrs(ctx, slog.LevelInfo, "child started", slog.String("program", o.Command[0]), slog.Int("pid", child.Process.Pid),
		slog.String("ccache", k.Path()))
	waited := make(chan error, 1)
	go func() { waited <- child.Wait() }()

	// The keeper outlives a SIGTERM to krbops (which cancels ctx): the
	// child may take its time to finish and still needs its ticket.
	kctx, stopKeeper := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		k.Run(kctx, func() {
			if o.OnExpiry != onExpirySignal {
				log.LogAttrs(kctx, slog.LevelWarn, "child left running with an expired ticket", slog.String("on_expiry", o.OnExpiry))
				return
			}
			log.LogAttrs(kctx, slog.LevelWarn, "child signalled", slog.String("signal", "SIGTERM"), slog.String("reason", "ticket expired"))
			execForward(child.Process, syscall.SIGTERM, foreground)
		})
	})
	var werr error
wait:
	for {
		select {
		case s := <-sigs:
			if execForward(child.Process, s, foreground) {
				log.LogAttrs(ctx, slog.LevelInfo, "signal forwarded", slog.String("signal", s.String()), slog.Int("pid", child.Process.Pid))
			} else {
				log.LogAttrs(ctx, slog.LevelInfo, "signal not forwarded", slog.String("signal", s.String()), slog.Int("pid", child.Process.Pid),
					slog.String("reason", "the terminal sent it to the command too"))
			}
		case werr = <-waited:
			break wait
		}
	}
	stopKeeper()
	wg.Wait()
	code := exitStatus(child.ProcessState, werr)
	log.LogAttrs(ctx, slog.LevelInfo, "child exited", slog.Int("exit_status", code), slog.String("state", child.ProcessState.String()))
	if code == 0 {
		return nil
	}
	return &fault.Status{Code: code}
}

// startError words a failed first login: exit 3 when no KDC answered,
// else 2 (the keytab, the principal or the KDC's answer must change).
func startError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fault.New(fault.Cancelled, errors.New("interrupted before the command started"), "")
	}
	var e *keylogin.Error
	if errors.As(err, &e) {
		class := fault.Usage
		if e.Unreachable {
			class = fault.Unreachable
		}
		hint := e.Hint()
		if strings.HasPrefix(e.Reason, "keytab ") {
			hint = "check --keytab: it must be a readable keytab holding --principal's key"
		}
		return fault.New(class, fmt.Errorf("%s; the command was not started", e.Error()), hint)
	}
	if errors.Is(err, durable.ErrUntrusted) {
		return usageError(err, "pass --ccache-dir a directory owned by you (or root) that no one else may write (chmod go-w), or a sticky one such as /tmp")
	}
	return usageError(err, "check --ccache-dir: krbops makes a private directory there")
}

// exitStatus is the child's status, or 128+N when signal N killed it.
func exitStatus(ps *os.ProcessState, err error) int {
	if ps == nil {
		if err != nil {
			return 1
		}
		return 0
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func envWithout(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}
