package commands

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/ledger"
	"github.com/krbops/krbops/policy"
	"github.com/krbops/krbops/rotate"
	"github.com/krbops/krbops/secretstore"
)

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
	KDCLogs         []string
	NoLoginRecordOK bool
	Deny            []string
	MinTGTRemaining time.Duration
	TicketLifetime  time.Duration
	AdminPrincipal  string
	AdminKeytab     string
	Kadmin          string
	Resume          bool
	DryRun          bool
	Yes             bool
	Force           bool
	Reason          string
	WarnSkew        time.Duration
	PolicyPath      string
	NoPolicy        bool
	MinGap          time.Duration

	Targets               string
	Concurrency           int
	Wait                  bool
	MaxFailuresPerCluster int

	policy    *policy.Policy    // nil: no policy file
	effective *policy.Effective // set by validate for a new rotation
	batch     []*RotateOptions  // --targets: one resolved copy per target
	batchID   string
	// sharedLedger is the ledger a batch opened once for all its targets;
	// nil: rotation opens --ledger itself.
	sharedLedger ledger.Ledger
	// targetBackend is a target's backend column: it counts as --backend.
	targetBackend string
	// endProgress ends the batch's progress line before the report.
	endProgress func()
}

// defaultMinTGTRemaining is --min-tgt-remaining's default.
const defaultMinTGTRemaining = 30 * time.Minute

// NewCmdRotate builds "krbops rotate" and its finish and status
// subcommands.
func NewCmdRotate(g *Globals, runF func(context.Context, *RotateOptions, string) error) *cobra.Command {
	opts := &RotateOptions{Globals: g}
	run := func(cmd *cobra.Command, which string) error {
		if runF != nil {
			return runF(cmd.Context(), opts, which)
		}
		switch {
		case which == "rotate" && opts.Targets != "":
			return rotateBatchRun(cmd.Context(), opts)
		case which == "finish" && opts.Targets != "":
			return rotateFinishBatchRun(cmd.Context(), opts)
		}
		switch which {
		case "finish":
			return rotateFinishRun(cmd.Context(), opts)
		case "status":
			return rotateStatusRun(cmd.Context(), opts)
		case "abort":
			return rotateAbortRun(cmd.Context(), opts)
		case "unlock":
			return rotateUnlockRun(cmd.Context(), opts)
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
from the journal. Whenever the outcome of a key change is unknown (a crash,
a lost or reset reply, a timeout) krbops asks the KDC which key it holds
before anything else, so a key change is never sent twice blindly: a
kpasswd request that got no reply is resent over the other transport
only once the KDC shows the new password does not work yet.

Steps, in order (ids as in the report):
  preflight.clock         one clock probe of the realm's KDC
  preflight.keytab        --keytab is a regular file whose owner, group and
                          mode krbops can keep; it authenticates; the KDC's
                          kvno and salts; the ticket lifetimes the KDC issues
                          (server, both: a service ticket under the old kvno)
  preflight.kpasswd       the kpasswd server answers over TCP or UDP (or
                          kadmind over TCP)
  preflight.secret-store  the secret can be written
  preflight.allowlist     --cluster is cleared: allowlisted in the policy's
                          clusters, or (without one) listed in --allowlist
  preflight.rate-limit    fewer than --max-per-window rotations of
                          (cluster, role) in --window (ledger)
  preflight.last-login    client, both: the newest AS_REQ over every
                          --kdc-log leaves at least --min-tgt-remaining of
                          the TGT lifetime the KDC issues; no login found
                          fails unless --no-login-record-ok
  preflight.lock          the ledger lock first, then the plan from the
                          KDC's kvno read again under it; journal written;
                          --resume: the journal must match its ledger record
                          and the store's pending version
  create.keys             random password, keys per enctype with the KDC's
                          salts at kvno+1 (server, both: old + new kvno)
  create.store            pending version in the secret store
  set.kdc                 the key change (--backend kpasswd, kpasswd-admin,
                          kadmin); the password only ever on stdin/wire; on
                          an error, the KDC is asked at once whether it
                          applied the change
  test.pending            the new kvno's enctypes and salts asked again (the
                          pending keytab derived again if they changed);
                          login with the new kvno; a ticket under it
                          decrypts (server: one from before too)
  finish.promote          pending -> current in the secret store
  finish.keytab           --keytab rewritten atomically with its owner,
                          group, mode and xattrs; the old file saved first as
                          KEYTAB.kvnoN.bak (never over an existing file)
  finish.ledger           recorded (server: awaiting phase 2); unlocked
  plan.policy             --dry-run only: the effective policy, each value
                          with its source (flag --x, policy FILE:LINE (KEY),
                          built-in default); one info finding per value,
                          rules policy.tier, policy.limit, policy.window,
                          policy.min-gap, policy.allowlisted (or
                          policy.allowlist), policy.deny, policy.kdc-logs,
                          policy.no-login-record-ok, policy.min-tgt-remaining,
                          policy.ticket-lifetime, policy.backend,
                          policy.ledger, policy.secret-store

A policy file (--policy FILE; default /etc/krbops/policy.yaml or
policy.yml when present; --no-policy for none) decides the tier by
principal patterns (first match in file order), the cluster allowlist,
each tier's limit, window and min-gap, deny patterns, last-login rules, the
phase-2 wait and default backend, ledger and secret store. Other flags
override it, but --tier, --max-per-window, --window and --min-gap may only
tighten it, and --allowlist is refused when it lists clusters. A malformed
or untrusted policy is exit 2 naming file, line and key. See
docs/policy.md.

Refused before anything is read (exit 2): krbtgt/*, kadmin/*, K/M, kiprop/*,
changepw/*, --deny and the policy's deny patterns; a journal directory, journal or ledger that
another user could have written.

A server keytab holds old and new kvno after phase 1; "rotate finish"
publishes the new kvno only once the longest ticket lifetime the KDC issued
(never less than --ticket-lifetime) has passed (--force to override).
"rotate status" lists open rotations and locks with their holder;
"rotate abort" discards a rotation that has not reached the KDC; "rotate
unlock --force --reason TEXT" breaks the lock of a krbops that is gone.
Without --yes, rotate asks on a terminal and refuses (exit 2) when stdin is
not one. --dry-run runs every read-only check for real and writes nothing.

Batch (--targets FILE): rotate every principal of a CSV file with a header
(principal,keytab,role,cluster[,secret][,backend]) or of JSON lines with
those fields, each through the runbook above, --concurrency at a time. The
file must be yours (or root's) and writable by no one else; every line is
checked first (exit 2 naming FILE:LINE and the field, nothing started).
The ledger's admission decides windows and min gaps across operators: a
full one reports the target "deferred until T" (--wait: waits until T).
--max-failures-per-cluster N stops a cluster after N failed targets
("skipped: cluster c stopped after N failures"); at most N of a cluster's
rotations run at once. The report has one group per target, ending in
step batch.target (outcome rotated, done, deferred, failed, skipped,
cancelled). Run the same command again after a crash or Ctrl-C: targets
this batch rotated are skipped, interrupted ones resume from their
journals. "rotate finish --targets FILE" runs phase 2 of every server
target whose wait has passed ("waiting until T" for the others).

See docs/rotate.md for the t0..t7 timeline and what to do when a step fails.` + exitStatusHelp + `
  With rotate: 1 also when a pre-check refuses (allowlist, rate limit, last
  login, lock) or rotate finish comes before the ticket lifetime.
  With --targets: 0 when every target rotated, was done or deferred
  (deferred is a warning: 1 with --strict); 1 when a target failed or
  was skipped by the breaker.`,
		Example: `  krbops rotate --principal svc-batch --role client --keytab /etc/batch.keytab \
    --cluster eu1 --allowlist clusters.txt --secret-store file:///var/lib/krbops/keytabs \
    --kdc-log /var/log/krb5kdc.log --yes
  krbops rotate --resume --principal svc-batch@EXAMPLE.COM --secret-store file:///var/lib/krbops/keytabs --yes
  krbops rotate --policy /etc/krbops/policy.yaml --principal kdc/core1 --role server \
    --keytab /etc/krb5.keytab --cluster eu1 --dry-run
  krbops rotate --targets fleet.csv --policy /etc/krbops/policy.yaml --concurrency 8 \
    --max-failures-per-cluster 3 --kdc-log /var/log/krb5kdc.log --yes
  krbops rotate finish --targets fleet.csv --secret-store file:///var/lib/krbops/keytabs --yes
  krbops rotate status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.validate(cmd.Flags()); err != nil {
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
	f.StringVar(&opts.LedgerPath, "ledger", defaultStatePath("ledger.db"), "rotation ledger: a bbolt file (PATH or file://PATH, 0600) or a DynamoDB table shared by operators (dynamodb://TABLE?region=R; endpoint from AWS_ENDPOINT_URL_DYNAMODB; create it with krbops ledger init)")
	f.StringVar(&opts.JournalDir, "journal-dir", defaultStatePath("rotate"), "directory of rotation journals (0700; they hold the pending keytab)")
	f.DurationVar(&opts.TicketLifetime, "ticket-lifetime", 0, "the realm's max TGT/service-ticket lifetime (default: krb5.conf ticket_lifetime, 24h when unset)")
	f.BoolVar(&opts.Yes, "yes", false, "do not ask for confirmation")
	f.StringVar(&opts.PolicyPath, "policy", "", "rotation policy file (YAML, see docs/policy.md; default: /etc/krbops/policy.yaml or policy.yml when present)")
	f.BoolVar(&opts.NoPolicy, "no-policy", false, "read no policy file, not even the default one (flags and built-in defaults only)")
	f.StringArrayVar(&opts.Deny, "deny", nil, "principal pattern never to rotate (path.Match syntax, e.g. 'svc-pay*'), on top of the built-in krbtgt/*, kadmin/*, K/M, kiprop/*, changepw/*; repeatable")

	lf := cmd.Flags()
	lf.StringVar(&opts.Role, "role", "", "client (logs in with the keytab), server (decrypts service tickets; two phases) or both")
	lf.StringVar(&opts.Backend, "backend", rotate.BackendKpasswd, "key change: kpasswd (the principal's own key), kpasswd-admin (RFC 3244 set-password as --admin-principal), kadmin (MIT kadmin cpw)")
	lf.StringVar(&opts.Cluster, "cluster", "", "cluster (fault domain) the principal belongs to; must be cleared by the policy's clusters or --allowlist")
	lf.StringVar(&opts.Tier, "tier", "standard", "standard or control-plane (stricter rate-limit defaults: 2 per 6h instead of 20 per 1h); with a policy the policy's patterns decide, and --tier may only name a stricter tier")
	lf.StringVar(&opts.Allowlist, "allowlist", "", "file of clusters cleared for rotation, one per line (# comments); not with a policy that lists clusters")
	lf.IntVar(&opts.MaxPerWindow, "max-per-window", 0, "rotations per (cluster, role) per --window (default: the tier's; with a policy only lower)")
	lf.DurationVar(&opts.Window, "window", 0, "rate-limit window (default: the tier's; with a policy only longer)")
	lf.DurationVar(&opts.MinGap, "min-gap", 0, "least time between two rotations of the tier in (cluster, role) (default: the tier's; with a policy only longer)")
	lf.StringArrayVar(&opts.KDCLogs, "kdc-log", nil, "MIT krb5kdc log with the principal's AS_REQ lines; repeatable (every KDC's log; rotated and .gz files too); required for --role client and both")
	lf.BoolVar(&opts.NoLoginRecordOK, "no-login-record-ok", false, "rotate a client even when no --kdc-log records a login of it (otherwise the last-login check fails closed)")
	lf.DurationVar(&opts.MinTGTRemaining, "min-tgt-remaining", defaultMinTGTRemaining, "client: TGT lifetime the last login must still leave")
	lf.StringVar(&opts.AdminPrincipal, "admin-principal", "", "kpasswd-admin/kadmin: administrator principal")
	lf.StringVar(&opts.AdminKeytab, "admin-keytab", "", "kpasswd-admin/kadmin: the administrator's keytab")
	lf.StringVar(&opts.Kadmin, "kadmin", "kadmin", "kadmin backend: the MIT kadmin client binary")
	lf.BoolVar(&opts.Resume, "resume", false, "continue the principal's rotation from its journal after a crash")
	lf.BoolVar(&opts.DryRun, "dry-run", false, "print the plan; change nothing")
	lf.DurationVar(&opts.WarnSkew, "warn-skew", 60*time.Second, "clock step: warn beyond this offset")
	opts.batchFlags(f, lf)

	finish := &cobra.Command{
		Use:   "finish",
		Short: "Phase 2 of a server rotation: publish the new kvno only",
		Long: `Publish a keytab with only the new kvno of a server rotation whose phase 1
is done, in the secret store (a new current version) and in --keytab
(atomically; the phase-1 file is kept as KEYTAB.kvnoN.bak.phase1).

Refuses (exit 1) until --ticket-lifetime has passed since phase 1: a
service ticket issued under the old kvno just before the key change is
valid that long. --force publishes anyway.

With --targets FILE (the batch's file): every server and both target whose
wait has passed; the others are reported "waiting until T" (a warning, exit
0), clients have no phase 2.

Steps: phase2.ticket-lifetime, phase2.store, phase2.keytab, phase2.ledger.` + exitStatusHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.subcommandPolicy(cmd.Flags()); err != nil {
				return err
			}
			if opts.Targets != "" {
				if err := opts.validateFinishBatch(cmd.Flags()); err != nil {
					return err
				}
				return run(cmd, "finish")
			}
			switch {
			case opts.Principal == "" || opts.Keytab == "" || opts.SecretStore == "":
				return usageError(errors.New("rotate finish needs --principal, --keytab and --secret-store"), "use the values of phase 1")
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
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.subcommandPolicy(cmd.Flags()); err != nil {
				return err
			}
			return run(cmd, "status")
		},
	}
	abort := &cobra.Command{
		Use:   "abort",
		Short: "Discard a rotation that has not reached the KDC",
		Long: `Discard the principal's rotation in progress when it stopped before the key
change (journal state locked, created or stored): its pending version leaves
the store's pending stage (current is untouched), its ledger record ends as
"aborted" with who and why in the audit trail, the lock is released and the
journal removed. The KDC and the store's current keytab are as before.

A rotation at "setting" or later may have changed the key: abort refuses
(exit 1) and points at "rotate --resume", which asks the KDC what it holds
and finishes. A rotation whose krbops is still running is refused too.

Steps: abort.journal, abort.store, abort.ledger.` + exitStatusHelp,
		Example: `  krbops rotate abort --principal svc-batch@EXAMPLE.COM --secret-store file:///var/lib/krbops/keytabs --reason "wrong cluster" --yes`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.subcommandPolicy(cmd.Flags()); err != nil {
				return err
			}
			switch {
			case opts.Principal == "" || opts.SecretStore == "":
				return usageError(errors.New("rotate abort needs --principal and --secret-store"), "use the values of the rotation")
			case strings.TrimSpace(opts.Reason) == "":
				return usageError(errors.New("rotate abort needs --reason"), "the reason goes to the ledger's audit trail, e.g. --reason \"wrong cluster\"")
			case !opts.Yes:
				if err := confirm(opts, "abort the rotation of "+opts.Principal); err != nil {
					return err
				}
			}
			return run(cmd, "abort")
		},
	}
	unlock := &cobra.Command{
		Use:   "unlock",
		Short: "Break the ledger lock of a rotation whose krbops is gone",
		Long: `Break the principal's ledger lock when the krbops that holds it is gone: its
process no longer runs on this host, or — held from another host — its
lease expired. Who, when and why go to the ledger's audit trail. The lock of
a running krbops is never broken (exit 1). The rotation's journal, if any,
stays: resume it (rotate --resume) or discard it (rotate abort).

Needs --force and --reason: breaking a lock is a decision an operator
records. Step: unlock.lock.` + exitStatusHelp,
		Example: `  krbops rotate unlock --principal svc-batch@EXAMPLE.COM --force --reason "host rebooted mid-rotation"`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.subcommandPolicy(cmd.Flags()); err != nil {
				return err
			}
			switch {
			case opts.Principal == "":
				return usageError(errors.New("rotate unlock needs --principal"), "")
			case !opts.Force:
				return usageError(errors.New("rotate unlock needs --force"), "it breaks a lock: make sure its krbops is gone (rotate status shows the holder)")
			case strings.TrimSpace(opts.Reason) == "":
				return usageError(errors.New("rotate unlock needs --reason"), "the reason goes to the ledger's audit trail")
			}
			return run(cmd, "unlock")
		},
	}
	for _, c := range []*cobra.Command{abort, unlock} {
		c.Flags().StringVar(&opts.Reason, "reason", "", "why, for the ledger's audit trail (required)")
	}
	unlock.Flags().BoolVar(&opts.Force, "force", false, "break the lock (required; a live holder's lock is still refused)")
	cmd.AddCommand(finish, status, abort, unlock)
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

func (o *RotateOptions) validate(fl *pflag.FlagSet) error {
	if o.Targets != "" {
		return o.validateBatch(fl)
	}
	if o.Principal == "" {
		return usageError(errors.New("--principal is required"), "for example --principal svc-batch@EXAMPLE.COM")
	}
	pol, err := o.loadPolicy()
	if err != nil {
		return err
	}
	o.policy = pol
	if o.Resume {
		o.policyDefaults(fl)
	} else if o.SecretStore == "" && pol != nil && pol.SecretStore.Set {
		o.SecretStore = pol.SecretStore.V // needed now; resolvePolicy records its source
	}
	if o.SecretStore == "" {
		return usageError(errors.New("--secret-store is required"), "for example --secret-store file:///var/lib/krbops/keytabs")
	}
	for _, p := range o.Deny {
		if err := rotate.ValidDenyPattern(p); err != nil {
			return usageError(fmt.Errorf("--deny %q: %w", p, err), "a path.Match pattern such as 'svc-pay*' or '*@OTHER.REALM'")
		}
	}
	deny := o.Deny
	if pol != nil {
		for _, p := range pol.Deny {
			deny = append(deny, p.Text)
		}
	}
	if p, denied := rotate.Denied(o.Principal, deny); denied {
		return usageError(fmt.Errorf("refusing to rotate %s: it matches the deny pattern %s", o.Principal, p),
			"the realm's own keys (krbtgt, kadmin, changepw, kiprop, K/M) are never rotated by krbops; nothing was changed")
	}
	if o.Resume {
		o.Deny = deny
		return o.confirmUnlessDry("resume the rotation of " + o.Principal)
	}
	if err := o.checkNew(fl); err != nil {
		return err
	}
	return o.confirmUnlessDry(fmt.Sprintf("rotate %s (%s, %s) in cluster %s", o.Principal, o.Role, o.Backend, o.Cluster))
}

// checkNew checks a new rotation's options and resolves its policy.
func (o *RotateOptions) checkNew(fl *pflag.FlagSet) error {
	if !rotate.Role(o.Role).Valid() {
		return usageError(fmt.Errorf("--role must be client, server or both, not %q", o.Role), "client: logs in with the keytab; server: decrypts service tickets; both: does both")
	}
	if o.MaxPerWindow < 0 || o.Window < 0 || o.MinGap < 0 || o.MinTGTRemaining < 0 || o.TicketLifetime < 0 {
		return usageError(errors.New("--max-per-window, --window, --min-gap, --min-tgt-remaining and --ticket-lifetime must not be negative"), "")
	}
	if o.policy == nil {
		if _, ok := rotate.TierLimit(rotate.Tier(o.Tier)); !ok {
			return usageError(fmt.Errorf("--tier must be standard or control-plane, not %q", o.Tier), "")
		}
	}
	if err := o.resolvePolicy(fl); err != nil {
		return err
	}
	switch {
	case o.Backend != rotate.BackendKpasswd && o.Backend != rotate.BackendKpasswdAdmin && o.Backend != rotate.BackendKadmin:
		return usageError(fmt.Errorf("--backend must be kpasswd, kpasswd-admin or kadmin, not %q", o.Backend), "")
	case o.Backend != rotate.BackendKpasswd && (o.AdminPrincipal == "" || o.AdminKeytab == ""):
		return usageError(fmt.Errorf("--backend %s needs --admin-principal and --admin-keytab", o.Backend), "")
	case o.Keytab == "" || o.Cluster == "":
		return usageError(errors.New("--keytab and --cluster are required"), "the cluster must be cleared for rotation by the policy or --allowlist")
	case o.Allowlist == "" && !o.policy.HasClusters():
		return usageError(errors.New("--allowlist is required when no policy file lists the clusters"), "the allowlist names the clusters cleared for rotation; a policy's clusters section replaces it (docs/policy.md)")
	case rotate.Role(o.Role).LogsIn() && len(o.KDCLogs) == 0:
		return usageError(fmt.Errorf("--role %s needs --kdc-log", o.Role), "the last login decides whether the client's TGT outlives the key change; a policy gives them as last-login.kdc-logs")
	case o.NoLoginRecordOK && fl.Changed("no-login-record-ok") && o.Targets == "" && !rotate.Role(o.Role).LogsIn(): // a batch applies it to the targets that log in
		return usageError(fmt.Errorf("--no-login-record-ok applies to --role client or both, not %s", o.Role), "")
	}
	return nil
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
		return usageError(errors.New("refusing to change keys without --yes: stdin is not a terminal"), "pass --yes in scripts, or --dry-run to see the plan")
	}
	fmt.Fprintf(o.IO.ErrOut, "%s? type yes to continue: ", what)
	line, _ := bufio.NewReader(io.LimitReader(f, 64)).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		return usageError(errors.New("not confirmed; nothing was changed"), "")
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
		return nil, nil, usageError(err, "pass --secret NAME")
	}
	kdcs, err := cfg.ResolveKDCs(ctx, realm, nil)
	if err != nil {
		return nil, nil, usageError(err, "list the realm's KDCs under [realms] in krb5.conf")
	}
	tlsCfg, err := o.TLS()
	if err != nil {
		return nil, nil, err
	}
	st, err := secretstore.Open(ctx, o.SecretStore, secretstore.Options{Holder: operatorName(), TLS: tlsCfg})
	if err != nil {
		return nil, nil, usageError(fmt.Errorf("--secret-store: %w", err), "file://DIR or awssm://PREFIX?region=R")
	}
	led, closeLedger := o.sharedLedger, func() {}
	if led == nil {
		if led, err = o.openLedger(ctx, o.DryRun); err != nil {
			return nil, nil, err
		}
		closeLedger = func() { led.Close() }
	}
	life := o.TicketLifetime
	if life == 0 {
		life = rotate.DefaultTicketLifetime(cfg)
	}
	r := &rotate.Rotation{
		Config: cfg, KDCs: kdcs, Realm: realm, Principal: principal,
		Role: rotate.Role(o.Role), Backend: o.Backend, Cluster: o.Cluster, Tier: o.Tier,
		Keytab: o.Keytab, Secret: secret, Store: st, Ledger: led,
		JournalDir: o.JournalDir, Allowlist: o.Allowlist, MaxPerWindow: o.MaxPerWindow, Window: o.Window,
		KDCLogs: o.KDCLogs, NoLoginRecordOK: o.NoLoginRecordOK, Deny: o.Deny, MinTGTRemaining: o.MinTGTRemaining, TicketLifetime: life,
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
	o.applyPolicy(r, cfg)
	r.AfterStep = crashHook(o.IO) // nil unless built with -tags krbops_testhooks
	return r, closeLedger, nil
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
			return fault.New(fault.CheckFailed, fmt.Errorf("no rotation of %s in progress in %s", r.Principal, o.JournalDir),
				"krbops rotate status lists the open rotations; pass --journal-dir if the journal lives elsewhere")
		}
		if err != nil {
			// A journal that cannot be read is local input: nothing was
			// asked of the KDC, and fixing the file fixes the run.
			return usageError(err, "inspect the journal in --journal-dir; krbops rotate status lists the open rotations")
		}
		// The journal, not the flags, says what this rotation is.
		r.Role, r.Backend, r.Cluster, r.Tier, r.Keytab, r.Secret = j.Role, j.Backend, j.Cluster, j.Tier, j.Keytab, j.Secret
		if r.Backend != rotate.BackendKpasswd && (r.AdminPrincipal == "" || r.AdminKeytab == "") {
			return usageError(fmt.Errorf("the rotation uses --backend %s: --resume needs --admin-principal and --admin-keytab", r.Backend), "")
		}
	}
	if o.DryRun {
		return o.runReport(ctx, r.Plan(o.Resume, j))
	}
	return o.runReport(ctx, r.Runbook(o.Resume, j))
}

// openLedger opens --ledger: a bbolt file (PATH or file://PATH) or a
// shared DynamoDB table (dynamodb://TABLE?region=R; endpoint from
// AWS_ENDPOINT_URL_DYNAMODB). readOnly (a dry run, status) opens it
// without creating it or anything around it, and takes a missing file as
// an empty ledger.
func (o *RotateOptions) openLedger(ctx context.Context, readOnly bool) (ledger.Ledger, error) {
	spec, err := ledger.ParseSpec(o.LedgerPath)
	if err != nil {
		return nil, usageError(fmt.Errorf("--%w", err), "pass a file path (or file://PATH) or dynamodb://TABLE?region=R")
	}
	if spec.IsDynamo() {
		// A shared table is guarded by IAM, not by file ownership.
		tlsCfg, err := o.TLS()
		if err != nil {
			return nil, err
		}
		led, err := ledger.Open(ctx, o.LedgerPath, ledger.Options{ReadOnly: readOnly, TLS: tlsCfg})
		if err != nil {
			return nil, fault.New(fault.ClassOf(err), fmt.Errorf("--%w", err), fault.HintOf(err))
		}
		return led, nil
	}
	path := spec.Path
	if err := checkLedgerTrusted(path); err != nil {
		return nil, err
	}
	if readOnly {
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			return ledger.Empty(), nil
		}
	}
	led, err := ledger.OpenFile(path, ledger.Options{ReadOnly: readOnly})
	if readOnly && errors.Is(err, fs.ErrNotExist) {
		return ledger.Empty(), nil // created but never written: nothing to read
	}
	if err != nil {
		return nil, usageError(fmt.Errorf("--ledger: %w", err), "pick a writable path; a damaged ledger can be moved aside and restored from a backup")
	}
	return led, nil
}

// checkLedgerTrusted refuses a ledger another user could have written: its
// locks and rate windows steer key changes.
func checkLedgerTrusted(path string) error {
	err := durable.TrustFile(path, false)
	if errors.Is(err, fs.ErrNotExist) {
		err = durable.TrustDir(filepath.Dir(path))
		if errors.Is(err, fs.ErrNotExist) {
			return nil // OpenFile creates it 0700
		}
	}
	if err != nil {
		return usageError(fmt.Errorf("--ledger %w", err), "keep the ledger and its directory private to the user who rotates (owned by that user, not group/world writable)")
	}
	return nil
}

func rotateAbortRun(ctx context.Context, o *RotateOptions) error {
	r, closeFn, err := o.rotation(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	j, err := rotate.LoadJournal(o.JournalDir, r.Principal)
	if errors.Is(err, rotate.ErrNoJournal) {
		return fault.New(fault.CheckFailed, fmt.Errorf("no rotation of %s in progress in %s", r.Principal, o.JournalDir),
			"krbops rotate status lists the open rotations and locks; a lock without a journal is broken with rotate unlock")
	}
	if err != nil {
		return usageError(err, "inspect the journal in --journal-dir")
	}
	r.Role, r.Backend, r.Cluster, r.Tier, r.Keytab, r.Secret = j.Role, j.Backend, j.Cluster, j.Tier, j.Keytab, j.Secret
	return o.runReport(ctx, r.Abort(j, o.Reason))
}

func rotateUnlockRun(ctx context.Context, o *RotateOptions) error {
	led, err := o.openLedger(ctx, false)
	if err != nil {
		return err
	}
	defer led.Close()
	principal := o.Principal
	if _, realm := kdcops.SplitPrincipal(principal); realm == "" {
		cfg, err := o.krb5Config()
		if err != nil {
			return err
		}
		if principal, err = qualify(cfg, o.Realm, principal); err != nil {
			return err
		}
	}
	return o.runReport(ctx, rotate.Unlock(led, principal, operatorName(), o.Reason, time.Now))
}

// qualify adds the realm to a principal without one.
func qualify(cfg *kdcops.Config, realmFlag, principal string) (string, error) {
	realm, err := realmFor(cfg, realmFlag, principal)
	if err != nil {
		return "", err
	}
	if _, r := kdcops.SplitPrincipal(principal); r == "" {
		principal += "@" + realm
	}
	return principal, nil
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
	led, err := o.openLedger(ctx, true)
	if err != nil {
		return err
	}
	defer led.Close()
	life := o.TicketLifetime
	if life == 0 {
		cfg, _ := o.krb5Config() // status works without a krb5.conf
		life = rotate.DefaultTicketLifetime(cfg)
	}
	rb, err := rotate.Status(ctx, led, o.JournalDir, life, time.Now())
	if err != nil {
		return usageError(err, "check --ledger and --journal-dir")
	}
	return o.runReport(ctx, rb)
}
