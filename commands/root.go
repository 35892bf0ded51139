// Package commands holds krbops' cobra commands: one file per subcommand,
// each with an Options struct (flag values and dependencies), a NewCmdX
// constructor whose RunE only parses and validates, and an xRun function
// that builds the runbook, runs it and renders the report.
//
// Commands never talk to the network themselves; the runbook steps (and
// the kdcops package beneath them) do.
package commands

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/krbops/krbops/internal/cabundle"
	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/safetext"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/output"
	"github.com/krbops/krbops/runbook"
)

// BuildInfo is set from ldflags by the release build.
type BuildInfo struct {
	Version string
	Commit  string
	Date    string
}

// Globals are the persistent flags and the resources they open, shared by
// every subcommand.
type Globals struct {
	IO    *IOStreams
	Build BuildInfo

	Krb5Config    string
	Output        string
	NoColor       bool
	Strict        bool
	Timeout       time.Duration
	CorrelationID string
	LogFile       string
	Quiet         bool
	Verbose       bool
	CABundle      string

	tlsOnce sync.Once
	tlsCfg  *tls.Config
	tlsErr  error

	// Log is the forensic log: JSON lines to --log-file, text to stderr
	// with -v, discarded otherwise. Every record carries the correlation id.
	Log     *slog.Logger
	logFile *logWriter
	command string // the command path, for the log's outcome line
}

// App is the krbops command tree and the resources a run opens (the
// forensic log). cmd/krbops runs it with [App.Execute] and always ends it
// with [App.Close], on success, failure, usage error and SIGINT alike, so
// an incident's forensic log is never left without its outcome.
type App struct {
	Root *cobra.Command
	g    *Globals
}

// NewApp builds the command tree.
func NewApp(io *IOStreams, build BuildInfo) *App {
	g := &Globals{IO: io, Build: build}
	return &App{Root: newRootCmd(g), g: g}
}

// Execute runs the command line args under ctx.
func (a *App) Execute(ctx context.Context, args []string) error {
	a.Root.SetArgs(args)
	return a.Root.ExecuteContext(ctx)
}

// Close writes the run's outcome line (exit code and, for a failed run,
// the error) to the forensic log, then syncs and closes it. It returns an
// error when the log could not be completed: a run whose forensic record
// is lost must not pass silently.
func (a *App) Close(err error, code int) error {
	return a.g.close(err, code)
}

// NewRootCmd builds the krbops command tree (tests that only need the
// tree; a run goes through [NewApp]).
func NewRootCmd(io *IOStreams, build BuildInfo) *cobra.Command {
	return NewApp(io, build).Root
}

func newRootCmd(g *Globals) *cobra.Command {
	io := g.IO
	root := &cobra.Command{
		Use:   "krbops",
		Short: "Kerberos runbooks and keytab rotation for operators",
		Long: `krbops runs Kerberos runbook checklists against the KDC, the secret store
and DynamoDB, in a fixed order, and prints a structured result: a table for
people, plain/JSON/JUnit/markdown for scripts, CI and incident docs, and a
documented exit code.

Start with "krbops clock-check" when Kerberos errors mention clock skew or
tickets are "not yet valid".` + exitStatusHelp,
		SilenceErrors: true,
		SilenceUsage:  true,
		// The log is closed by App.Close, not PersistentPostRun: cobra
		// skips that hook when RunE fails, which is exactly the run an
		// incident needs the log of.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			g.command = cmd.CommandPath()
			return g.setup()
		},
	}
	root.SetOut(io.Out)
	root.SetErr(io.ErrOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError(err, "run with --help to see the flags")
	})

	pf := root.PersistentFlags()
	pf.StringVar(&g.Krb5Config, "krb5-config", "", "krb5.conf to use (default $KRB5_CONFIG, then /etc/krb5.conf)")
	pf.StringVarP(&g.Output, "output", "o", "", "output format: "+strings.Join(output.Names(), "|")+" (default table on a terminal, plain when piped)")
	pf.BoolVar(&g.NoColor, "no-color", false, "never color output (NO_COLOR, CLICOLOR_FORCE and TERM=dumb are honoured too)")
	pf.BoolVar(&g.Strict, "strict", false, "treat warnings as failures (exit 1)")
	pf.DurationVar(&g.Timeout, "timeout", 5*time.Second, "timeout for each network call")
	pf.StringVar(&g.CorrelationID, "correlation-id", "", "id stamped on the report and every log line (default: random)")
	pf.StringVar(&g.CABundle, "ca-bundle", "", "PEM file of CA certificates every HTTPS request trusts on top of the system's (AWS, the credential broker, SPNEGO, clock probes)")
	pf.StringVar(&g.LogFile, "log-file", "", "append a JSON-lines forensic log of every request, reply and error (mode 0600; never secrets)")
	pf.BoolVarP(&g.Quiet, "quiet", "q", false, "no progress lines; table/plain/markdown show only steps that did not pass")
	pf.BoolVarP(&g.Verbose, "verbose", "v", false, "also write the forensic log, as text, to stderr")

	root.AddCommand(NewCmdVersion(g), NewCmdClockCheck(g, nil), NewCmdVerify(g, nil), NewCmdKlistLint(g, nil), NewCmdResumeQuery(g, nil), NewCmdRotate(g, nil), NewCmdKeytab(g), NewCmdLedger(g, nil), NewCmdAudit(g, nil), NewCmdExec(g, nil))
	for _, c := range root.Commands() {
		wrapArgsErrors(c)
	}
	return root
}

// wrapArgsErrors turns cobra's positional-argument errors into usage errors
// (exit 2) like flag errors.
func wrapArgsErrors(c *cobra.Command) {
	if c.Args == nil {
		return
	}
	orig := c.Args
	c.Args = func(cmd *cobra.Command, args []string) error {
		if err := orig(cmd, args); err != nil {
			return usageError(err, "run \""+cmd.CommandPath()+" --help\" to see the usage")
		}
		return nil
	}
}

func (g *Globals) setup() error {
	if g.Output != "" {
		if _, err := output.Get(g.Output); err != nil {
			return usageError(fmt.Errorf("--output: %w", err), "pick one of "+strings.Join(output.Names(), ", "))
		}
	}
	if g.Timeout <= 0 {
		return usageError(errors.New("--timeout must be positive"), "for example --timeout 5s")
	}
	if g.CorrelationID == "" {
		g.CorrelationID = newCorrelationID()
	}
	var handlers []slog.Handler
	if g.LogFile != "" {
		// The log records principals, hosts and KDC replies: it is opened
		// without following a link planted in a shared directory, and an
		// existing file must be this user's (its mode is narrowed to 0600).
		f, err := durable.OpenPrivateAppend(g.LogFile)
		if err != nil {
			if errors.Is(err, durable.ErrNotPrivate) {
				return usageError(fmt.Errorf("--log-file %w", err), "pick a path in a directory only you can write to, e.g. under $HOME")
			}
			return usageError(fmt.Errorf("--log-file %s: %s", g.LogFile, describeFileError(err)), "pick a writable path")
		}
		g.logFile = &logWriter{f: f}
		handlers = append(handlers, slog.NewJSONHandler(g.logFile, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if g.Verbose {
		handlers = append(handlers, slog.NewTextHandler(g.IO.ErrOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var h slog.Handler = slog.DiscardHandler
	if len(handlers) > 0 {
		h = slog.NewMultiHandler(handlers...)
	}
	g.Log = slog.New(h).With(slog.String("correlation_id", g.CorrelationID))
	return nil
}

// close ends the forensic log with the run's outcome and closes it.
// Before setup (a flag error) there is no log to close.
func (g *Globals) close(err error, code int) error {
	if g.Log != nil {
		attrs := []slog.Attr{slog.String("command", g.command), slog.Int("exit_code", code), slog.String("class", fault.ClassOf(err).String())}
		if err != nil && !fault.Silent(err) {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		g.Log.LogAttrs(context.Background(), slog.LevelInfo, "run outcome", attrs...)
	}
	if g.logFile == nil {
		return nil
	}
	w := g.logFile
	g.logFile = nil
	if err := w.close(); err != nil {
		return fmt.Errorf("--log-file %s: %s", g.LogFile, describeFileError(err))
	}
	return nil
}

// logWriter is the forensic log file. slog drops a handler's write error,
// so the writer keeps the first one: a run whose forensic record is
// incomplete must not end as if it were whole.
type logWriter struct {
	mu  sync.Mutex
	f   *os.File
	err error
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("writing: %w", err)
	}
	return n, err
}

// close syncs and closes the file and returns the first failure of a
// write, the sync or the close.
func (w *logWriter) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	serr := w.f.Sync()
	cerr := w.f.Close()
	return errors.Join(w.err, serr, cerr)
}

// usageError is a usage or local-input error: exit 2, with a hint.
func usageError(err error, hint string) error { return fault.New(fault.Usage, err, hint) }

// TLS is the TLS configuration of every HTTPS client of the run:
// --ca-bundle's CAs on top of the system's, or nil for the default trust.
func (g *Globals) TLS() (*tls.Config, error) {
	g.tlsOnce.Do(func() {
		g.tlsCfg, g.tlsErr = cabundle.Load(g.CABundle)
		if g.tlsErr != nil {
			hint := "pass a PEM file of the CA certificates to trust"
			if errors.Is(g.tlsErr, durable.ErrUntrusted) {
				hint = "keep the CA bundle owned by you or root, writable by no one else (chmod go-w), and pass the file itself, not a symbolic link"
			}
			g.tlsErr = usageError(fmt.Errorf("--ca-bundle %s", strings.TrimPrefix(g.tlsErr.Error(), "ca bundle ")), hint)
		}
	})
	return g.tlsCfg, g.tlsErr
}

func newCorrelationID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func describeFileError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// krb5Config loads the krb5.conf in effect (--krb5-config, then
// $KRB5_CONFIG, then /etc/krb5.conf). A broken file is a usage error (exit
// 2) naming it; directives gokrb5 ignores go to the forensic log.
func (g *Globals) krb5Config() (*kdcops.Config, error) {
	path := kdcops.ConfigPath(g.Krb5Config, g.IO.Getenv)
	cfg, err := kdcops.LoadConfig(path)
	if err != nil {
		return nil, configError(err)
	}
	for _, w := range cfg.Warnings {
		g.Log.Warn("krb5.conf directive ignored", "file", path, "detail", w)
	}
	return cfg, nil
}

// realmFor is the realm a command works in: --realm, else the realm of
// the principal it acts for, else default_realm.
func realmFor(cfg *kdcops.Config, realmFlag, principal string) (string, error) {
	realm := realmFlag
	if _, pr := kdcops.SplitPrincipal(principal); realm == "" {
		realm = pr
	}
	realm, err := cfg.DefaultRealm(realm)
	if err != nil {
		return "", usageError(err, "pass --realm REALM or set default_realm in [libdefaults]")
	}
	return realm, nil
}

// format is the output format in effect.
func (g *Globals) format() string {
	if g.Output != "" {
		return g.Output
	}
	return output.DefaultFormat(g.IO.OutTTY)
}

// machineReadable formats get no progress lines and no quiet filtering.
func (g *Globals) machineReadable() bool {
	switch g.format() {
	case "json", "junit", "prometheus":
		return true
	}
	return false
}

// runReport runs rb and renders the report, returning an error that
// carries the report's exit code.
func (g *Globals) runReport(ctx context.Context, rb runbook.Runbook) error {
	g.Log.Info("run start", slog.String("command", rb.Command), slog.Int("steps", len(rb.Steps)))
	return g.renderReport(runbook.Run(ctx, rb, g.runOptions()))
}

// runOptions are the engine options of a run: correlation id, --strict
// and, on a terminal, one progress line per step.
func (g *Globals) runOptions() runbook.Options {
	opts := runbook.Options{CorrelationID: g.CorrelationID, Strict: g.Strict}
	if g.IO.ErrTTY && !g.Quiet && !g.machineReadable() {
		opts.OnStep = func(sr runbook.StepResult) { progressLine(g.IO.ErrOut, sr) }
	}
	return opts
}

// renderReport writes a finished report and returns an error carrying its
// class; the report shows the exit code that class maps to.
func (g *Globals) renderReport(rep *runbook.Report) error {
	rep.ExitCode = fault.ExitCode(rep.Class)
	g.Log.Info("run end", slog.String("command", rep.Command), slog.String("status", rep.Status), slog.Int("exit_code", rep.ExitCode))
	if err := g.render(rep); err != nil {
		return fault.New(fault.Unreachable, fmt.Errorf("writing the report: %w", err), "")
	}
	if rep.Class != fault.OK {
		return fault.New(rep.Class, nil, "")
	}
	return nil
}

func (g *Globals) render(rep *runbook.Report) error {
	r, err := output.Get(g.format())
	if err != nil {
		return err
	}
	if g.Quiet && !g.machineReadable() {
		rep = onlyProblems(rep)
	}
	return r.Render(g.IO.Out, rep, output.Options{
		Color: output.ColorEnabled(g.IO.OutTTY, g.NoColor, g.IO.Getenv),
		Width: g.IO.OutWidth,
	})
}

func onlyProblems(rep *runbook.Report) *runbook.Report {
	cp := *rep
	cp.Steps = nil
	for _, s := range rep.Steps {
		if s.Status != runbook.Pass {
			cp.Steps = append(cp.Steps, s)
		}
	}
	return &cp
}

// progressLine is the one-line-per-step trace an on-call sees on a
// terminal while a slow runbook runs; it goes to stderr so stdout stays the
// report.
func progressLine(w io.Writer, sr runbook.StepResult) {
	fmt.Fprintf(w, "  %-5s %s (%s)\n", sr.Status, safetext.Line(sr.ID), sr.Duration.Round(time.Millisecond))
}
