package commands

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/ledger"
	"github.com/krbops/krbops/rotate"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/secretstore"
)

// Rate-limit defaults per tier: control-plane principals (KDC, IdP,
// orchestration) take a whole cluster down when they break, so fewer of
// them may change per window.
var tierLimits = map[string]struct {
	max    int
	window time.Duration
}{
	"standard":      {20, time.Hour},
	"control-plane": {2, 6 * time.Hour},
}

// RotateOptions are rotate's flags (shared by its subcommands).
type RotateOptions struct {
	*Globals
	Realm           string
	Principal       string
	Role            string
	Backend         string
	Keytab          string
	Cluster         string
	Tier            string
	Allowlist       string
	SecretStore     string
	Secret          string
	LedgerPath      string
	JournalDir      string
	MaxPerWindow    int
	Window          time.Duration
	KDCLog          string
	MinTGTRemaining time.Duration
	TicketLifetime  time.Duration
	AdminPrincipal  string
	AdminKeytab     string
	Kadmin          string
	Resume          bool
	DryRun          bool
	Yes             bool
	Force           bool
	WarnSkew        time.Duration
}

// NewCmdRotate builds "krbops rotate" and its finish and status
// subcommands.
func NewCmdRotate(g *Globals, runF func(context.Context, *RotateOptions, string) error) *cobra.Command {
	opts := &RotateOptions{Globals: g}
	run := func(cmd *cobra.Command, which string) error {
		if runF != nil {
			return runF(cmd.Context(), opts, which)
		}
		switch which {
		case "finish":
			return rotateFinishRun(cmd.Context(), opts)
		case "status":
			return rotateStatusRun(cmd.Context(), opts)
		}
		return rotateRun(cmd.Context(), opts)
	}
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate a principal's key and keytab, crash-safe, through the secret store",
		Long: `Rotate one principal's key: a journaled state machine whose every step is a
runbook step. The new keytab is stored as pending in the secret store and in
a local journal (0600) before the KDC changes anything, so a crash at any
point leaves a keytab that authenticates, and "rotate --resume" continues
from the journal: it tests the pending keytab before it sets, so a key
change that reached the KDC is never repeated.

Steps, in order (ids as in the report):
  preflight.clock         one clock probe of the realm's KDC
  preflight.keytab        --keytab authenticates; the KDC's kvno and salts
                          (server: a service ticket under the old kvno)
  preflight.kpasswd       the kpasswd (or kadmin) server answers
  preflight.secret-store  the secret can be written
  preflight.allowlist     --cluster is listed in --allowlist
  preflight.rate-limit    fewer than --max-per-window rotations of
                          (cluster, role) in --window (ledger)
  preflight.last-login    client: the last AS_REQ in --kdc-log leaves at
                          least --min-tgt-remaining of --ticket-lifetime
  preflight.lock          ledger lock and record; journal written
  create.keys             random password, keys per enctype with the KDC's
                          salts at kvno+1 (server: old + new kvno); journaled
  create.store            pending version in the secret store
  set.kdc                 the key change (--backend kpasswd, kpasswd-admin,
                          kadmin); the password only ever on stdin/wire
  test.pending            client: login with the new kvno; server: a ticket
                          under the new kvno and one from before decrypt
  finish.promote          pending -> current in the secret store
  finish.keytab           --keytab rewritten atomically; old file kept as
                          KEYTAB.kvnoN.bak (0600)
  finish.ledger           recorded (server: awaiting phase 2); unlocked

A server keytab holds old and new kvno after phase 1; "rotate finish"
publishes the new kvno only once --ticket-lifetime has passed (--force to
override). "rotate status" lists open rotations. Without --yes, rotate asks
on a terminal and refuses (exit 2) when stdin is not one. --dry-run prints
the plan and changes nothing.

See docs/rotate.md for the t0..t7 timeline and what to do when a step fails.` + exitStatusHelp + `
  With rotate: 1 also when a pre-check refuses (allowlist, rate limit, last
  login, lock) or rotate finish comes before the ticket lifetime.`,
		Example: `  krbops rotate --principal svc-batch --role client --keytab /etc/batch.keytab \
    --cluster eu1 --allowlist clusters.txt --secret-store file:///var/lib/krbops/keytabs \
    --kdc-log /var/log/krb5kdc.log --yes
  krbops rotate --resume --principal svc-batch@EXAMPLE.COM --secret-store file:///var/lib/krbops/keytabs --yes
  krbops rotate status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.validate(); err != nil {
				return err
			}
			return run(cmd, "rotate")
		},
	}
	f := cmd.PersistentFlags()
	f.StringVar(&opts.Realm, "realm", "", "realm (default: the principal's, then default_realm)")
	f.StringVar(&opts.Principal, "principal", "", "principal to rotate (the realm is added when missing)")
	f.StringVar(&opts.Keytab, "keytab", "", "the principal's keytab file: read before, rewritten after the rotation")
	f.StringVar(&opts.SecretStore, "secret-store", "", "secret store: file://DIR or awssm://PREFIX?region=R")
	f.StringVar(&opts.Secret, "secret", "", "secret name in the store (default: the principal)")
	f.StringVar(&opts.LedgerPath, "ledger", defaultStatePath("ledger.db"), "rotation ledger (bbolt file, 0600)")
	f.StringVar(&opts.JournalDir, "journal-dir", defaultStatePath("rotate"), "directory of rotation journals (0700; they hold the pending keytab)")
	f.DurationVar(&opts.TicketLifetime, "ticket-lifetime", 0, "the realm's max TGT/service-ticket lifetime (default: krb5.conf ticket_lifetime, 24h when unset)")
	f.BoolVar(&opts.Yes, "yes", false, "do not ask for confirmation")

	lf := cmd.Flags()
	lf.StringVar(&opts.Role, "role", "", "client (logs in with the keytab) or server (decrypts service tickets; two phases)")
	lf.StringVar(&opts.Backend, "backend", rotate.BackendKpasswd, "key change: kpasswd (the principal's own key), kpasswd-admin (RFC 3244 set-password as --admin-principal), kadmin (MIT kadmin cpw)")
	lf.StringVar(&opts.Cluster, "cluster", "", "cluster (fault domain) the principal belongs to; must be in --allowlist")
	lf.StringVar(&opts.Tier, "tier", "standard", "standard or control-plane (stricter rate-limit defaults: 2 per 6h instead of 20 per 1h)")
	lf.StringVar(&opts.Allowlist, "allowlist", "", "file of clusters cleared for rotation, one per line (# comments)")
	lf.IntVar(&opts.MaxPerWindow, "max-per-window", 0, "rotations per (cluster, role) per --window (default: the tier's)")
	lf.DurationVar(&opts.Window, "window", 0, "rate-limit window (default: the tier's)")
	lf.StringVar(&opts.KDCLog, "kdc-log", "", "MIT krb5kdc log with the principal's AS_REQ lines (required for --role client)")
	lf.DurationVar(&opts.MinTGTRemaining, "min-tgt-remaining", 30*time.Minute, "client: TGT lifetime the last login must still leave")
	lf.StringVar(&opts.AdminPrincipal, "admin-principal", "", "kpasswd-admin/kadmin: administrator principal")
	lf.StringVar(&opts.AdminKeytab, "admin-keytab", "", "kpasswd-admin/kadmin: the administrator's keytab")
	lf.StringVar(&opts.Kadmin, "kadmin", "kadmin", "kadmin backend: the MIT kadmin client binary")
	lf.BoolVar(&opts.Resume, "resume", false, "continue the principal's rotation from its journal after a crash")
	lf.BoolVar(&opts.DryRun, "dry-run", false, "print the plan; change nothing")
	lf.DurationVar(&opts.WarnSkew, "warn-skew", 60*time.Second, "clock step: warn beyond this offset")

	finish := &cobra.Command{
		Use:   "finish",
		Short: "Phase 2 of a server rotation: publish the new kvno only",
		Long: `Publish a keytab with only the new kvno of a server rotation whose phase 1
is done, in the secret store (a new current version) and in --keytab
(atomically; the phase-1 file is kept as KEYTAB.kvnoN.bak.phase1).

Refuses (exit 1) until --ticket-lifetime has passed since phase 1: a
service ticket issued under the old kvno just before the key change is
valid that long. --force publishes anyway.

Steps: phase2.ticket-lifetime, phase2.store, phase2.keytab, phase2.ledger.` + exitStatusHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case opts.Principal == "" || opts.Keytab == "" || opts.SecretStore == "":
				return runbook.UsageError(errors.New("rotate finish needs --principal, --keytab and --secret-store"), "use the values of phase 1")
			case !opts.Yes && !opts.DryRun:
				if err := confirm(opts, "publish only the new kvno of "+opts.Principal); err != nil {
					return err
				}
			}
			return run(cmd, "finish")
		},
	}
	finish.Flags().BoolVar(&opts.Force, "force", false, "publish before the ticket lifetime has passed")
	status := &cobra.Command{
		Use:   "status",
		Short: "List rotations in progress and server rotations awaiting phase 2",
		Long: `List open rotations: from the ledger (in progress, awaiting phase 2) and the
journals on this host. One row per principal; a warning where something is
to be done (resume, or phase 2 ready).` + exitStatusHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return run(cmd, "status") },
	}
	cmd.AddCommand(finish, status)
	return cmd
}

func defaultStatePath(name string) string {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = "."
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "krbops", name)
}

func (o *RotateOptions) validate() error {
	if o.Principal == "" {
		return runbook.UsageError(errors.New("--principal is required"), "for example --principal svc-batch@EXAMPLE.COM")
	}
	if o.SecretStore == "" {
		return runbook.UsageError(errors.New("--secret-store is required"), "for example --secret-store file:///var/lib/krbops/keytabs")
	}
	if o.Resume {
		return o.confirmUnlessDry("resume the rotation of " + o.Principal)
	}
	switch {
	case o.Role != string(rotate.Client) && o.Role != string(rotate.Server):
		return runbook.UsageError(fmt.Errorf("--role must be client or server, not %q", o.Role), "client: logs in with the keytab; server: decrypts service tickets")
	case o.Backend != rotate.BackendKpasswd && o.Backend != rotate.BackendKpasswdAdmin && o.Backend != rotate.BackendKadmin:
		return runbook.UsageError(fmt.Errorf("--backend must be kpasswd, kpasswd-admin or kadmin, not %q", o.Backend), "")
	case o.Backend != rotate.BackendKpasswd && (o.AdminPrincipal == "" || o.AdminKeytab == ""):
		return runbook.UsageError(fmt.Errorf("--backend %s needs --admin-principal and --admin-keytab", o.Backend), "")
	case o.Keytab == "" || o.Cluster == "" || o.Allowlist == "":
		return runbook.UsageError(errors.New("--keytab, --cluster and --allowlist are required"), "the allowlist names the clusters cleared for rotation")
	case o.Role == string(rotate.Client) && o.KDCLog == "":
		return runbook.UsageError(errors.New("--role client needs --kdc-log"), "the last login decides whether the client's TGT outlives the key change")
	case o.MaxPerWindow < 0 || o.Window < 0 || o.MinTGTRemaining < 0 || o.TicketLifetime < 0:
		return runbook.UsageError(errors.New("--max-per-window, --window, --min-tgt-remaining and --ticket-lifetime must not be negative"), "")
	}
	lim, ok := tierLimits[o.Tier]
	if !ok {
		return runbook.UsageError(fmt.Errorf("--tier must be standard or control-plane, not %q", o.Tier), "")
	}
	if o.MaxPerWindow == 0 {
		o.MaxPerWindow = lim.max
	}
	if o.Window == 0 {
		o.Window = lim.window
	}
	return o.confirmUnlessDry(fmt.Sprintf("rotate %s (%s, %s) in cluster %s", o.Principal, o.Role, o.Backend, o.Cluster))
}

func (o *RotateOptions) confirmUnlessDry(what string) error {
	if o.Yes || o.DryRun {
		return nil
	}
	return confirm(o, what)
}

// confirm asks on a terminal; without one a script must say --yes.
func confirm(o *RotateOptions, what string) error {
	f, ok := o.IO.In.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return runbook.UsageError(errors.New("refusing to change keys without --yes: stdin is not a terminal"), "pass --yes in scripts, or --dry-run to see the plan")
	}
	fmt.Fprintf(o.IO.ErrOut, "%s? type yes to continue: ", what)
	line, _ := bufio.NewReader(f).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		return runbook.UsageError(errors.New("not confirmed; nothing was changed"), "")
	}
	return nil
}

func operatorName() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// rotation builds the domain object from flags, opening the store and
// ledger; close releases them.
func (o *RotateOptions) rotation(ctx context.Context) (*rotate.Rotation, func(), error) {
	cfg, err := o.krb5Config()
	if err != nil {
		return nil, nil, err
	}
	path := cfg.Path
	_, pr := kdcops.SplitPrincipal(o.Principal)
	realm, err := realmFor(cfg, o.Realm, o.Principal)
	if err != nil {
		return nil, nil, err
	}
	principal := o.Principal
	if pr == "" {
		principal += "@" + realm
	}
	secret := o.Secret
	if secret == "" {
		secret = principal
	}
	if err := secretstore.ValidName(secret); err != nil {
		return nil, nil, runbook.UsageError(err, "pass --secret NAME")
	}
	kdcs, err := cfg.ResolveKDCs(ctx, realm, nil)
	if err != nil {
		return nil, nil, runbook.UsageError(err, "list the realm's KDCs under [realms] in krb5.conf")
	}
	st, err := secretstore.Open(ctx, o.SecretStore, secretstore.Options{Holder: operatorName()})
	if err != nil {
		return nil, nil, runbook.UsageError(fmt.Errorf("--secret-store: %w", err), "file://DIR or awssm://PREFIX?region=R")
	}
	led, err := ledger.OpenFile(o.LedgerPath, ledger.Options{})
	if err != nil {
		return nil, nil, runbook.UsageError(fmt.Errorf("--ledger: %w", err), "pick a writable path")
	}
	life := o.TicketLifetime
	if life == 0 {
		life = cfg.LibDefaults.TicketLifetime
	}
	if life <= 0 {
		life = 24 * time.Hour
	}
	r := &rotate.Rotation{
		Config: cfg, KDCs: kdcs, Realm: realm, Principal: principal,
		Role: rotate.Role(o.Role), Backend: o.Backend, Cluster: o.Cluster, Tier: o.Tier,
		Keytab: o.Keytab, Secret: secret, Store: st, Ledger: led,
		JournalDir: o.JournalDir, Allowlist: o.Allowlist, MaxPerWindow: o.MaxPerWindow, Window: o.Window,
		KDCLog: o.KDCLog, MinTGTRemaining: o.MinTGTRemaining, TicketLifetime: life,
		AdminPrincipal: o.AdminPrincipal, AdminKeytab: o.AdminKeytab, Kadmin: o.Kadmin,
		KadminEnv: []string{"KRB5_CONFIG=" + path},
		Operator:  operatorName(), CorrelationID: o.CorrelationID, Timeout: o.Timeout, WarnSkew: o.WarnSkew,
		Log: o.Log.With("command", "rotate"),
	}
	if o.AdminPrincipal != "" {
		if _, ar := kdcops.SplitPrincipal(o.AdminPrincipal); ar == "" {
			r.AdminPrincipal += "@" + realm
		}
	}
	r.AfterStep = crashHook(o.IO) // nil unless built with -tags krbops_testhooks
	return r, func() { led.Close() }, nil
}

func rotateRun(ctx context.Context, o *RotateOptions) error {
	r, closeFn, err := o.rotation(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	var j *rotate.Journal
	if o.Resume {
		j, err = rotate.LoadJournal(o.JournalDir, r.Principal)
		if errors.Is(err, rotate.ErrNoJournal) {
			if rb, ok := rotate.AlreadyDone(ctx, r.Ledger, r.Principal); ok {
				// A crash after the last step left nothing to do: say so
				// with exit 0, so a script's resume loop ends.
				return o.runReport(ctx, rb)
			}
			return &runbook.ExitError{Code: runbook.ExitFail, Err: fmt.Errorf("no rotation of %s in progress in %s", r.Principal, o.JournalDir),
				Hint: "krbops rotate status lists the open rotations; pass --journal-dir if the journal lives elsewhere"}
		}
		if err != nil {
			return &runbook.ExitError{Code: runbook.ExitIncomplete, Err: err}
		}
		// The journal, not the flags, says what this rotation is.
		r.Role, r.Backend, r.Cluster, r.Tier, r.Keytab, r.Secret = j.Role, j.Backend, j.Cluster, j.Tier, j.Keytab, j.Secret
		if r.Backend != rotate.BackendKpasswd && (r.AdminPrincipal == "" || r.AdminKeytab == "") {
			return runbook.UsageError(fmt.Errorf("the rotation uses --backend %s: --resume needs --admin-principal and --admin-keytab", r.Backend), "")
		}
	}
	if o.DryRun {
		return o.runReport(ctx, r.Plan(o.Resume))
	}
	return o.runReport(ctx, r.Runbook(o.Resume, j))
}

func rotateFinishRun(ctx context.Context, o *RotateOptions) error {
	r, closeFn, err := o.rotation(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	r.Role = rotate.Server
	return o.runReport(ctx, r.Finish(o.Force))
}

func rotateStatusRun(ctx context.Context, o *RotateOptions) error {
	led, err := ledger.OpenFile(o.LedgerPath, ledger.Options{})
	if err != nil {
		return runbook.UsageError(fmt.Errorf("--ledger: %w", err), "pick a readable path")
	}
	defer led.Close()
	life := o.TicketLifetime
	if life == 0 {
		if cfg, err := o.krb5Config(); err == nil {
			life = cfg.LibDefaults.TicketLifetime
		}
	}
	if life <= 0 {
		life = 24 * time.Hour
	}
	rb, err := rotate.Status(ctx, led, o.JournalDir, life, time.Now())
	if err != nil {
		return &runbook.ExitError{Code: runbook.ExitIncomplete, Err: err}
	}
	return o.runReport(ctx, rb)
}
