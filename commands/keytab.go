package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/keytabpull"
	"github.com/krbops/krbops/secretstore"
)

// NewCmdKeytab builds "krbops keytab", the host side of a rotation.
func NewCmdKeytab(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keytab",
		Short: "Install rotated keytabs on a host and prune old kvnos",
		Long: `Keep a host's keytabs in step with rotations: "keytab pull" installs the
secret store's keytab once the KDC has proved it, "keytab prune" removes
kvnos the services no longer need.

See docs/keytab.md.` + exitStatusHelp,
		Example: `  krbops keytab pull --secret-store file:///var/lib/krbops/keytabs --secret svc@EXAMPLE.COM --keytab /etc/svc.keytab
  krbops keytab prune --keytab /etc/svc.keytab --keep 1 --dry-run`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdKeytabPull(g, nil), NewCmdKeytabPrune(g, nil))
	for _, c := range cmd.Commands() {
		wrapArgsErrors(c)
	}
	return cmd
}

// KeytabPullOptions are keytab pull's flags.
type KeytabPullOptions struct {
	*Globals
	SecretStore string
	Secret      string
	Keytab      string
	Owner       string
	Mode        string
	Principal   string
	Pending     bool

	uid, gid int
	mode     os.FileMode
}

// NewCmdKeytabPull builds "krbops keytab pull".
func NewCmdKeytabPull(g *Globals, runF func(context.Context, *KeytabPullOptions) error) *cobra.Command {
	opts := &KeytabPullOptions{Globals: g}
	cmd := &cobra.Command{
		Use:   "pull",
		Short: "Install the secret store's keytab after the KDC proves it",
		Long: `Install the secret store's current keytab of --secret at --keytab, the way a
host picks up a rotation: fit for a systemd timer or cron every 30 seconds.

Nothing is installed that the KDC does not accept: the version's newest
kvno must log in (AS exchange), and a service ticket the KDC issues for the
principal now must decrypt with it. The file is replaced atomically
(temp file, fsync, rename, fsync of the directory), keeps its owner, group,
mode and extended attributes unless --owner or --mode say otherwise, and
the old file is kept next to it as KEYTAB.kvnoN.bak (N its newest kvno).
Other principals' keys in the file are kept. When the file already holds
the version's keys (same fingerprint) nothing is written: exit 0, "already
current". A pending version (phase 1 of a server rotation: old and new
kvno, the new one not yet at the KDC) is installed only with --pending; it
must hold the kvno the KDC issues tickets under now.

--keytab must be in a directory owned by this user and writable by no one
else; a link at --keytab is refused, never followed.

The run holds KEYTAB.lock (next to the keytab) from its read to its rename,
as keytab prune and rotate do, so concurrent writers never drop each
other's keys; a writer still holding it after a minute ends the run with
exit 3, naming the holder. A file changed meanwhile by a writer without
the lock (ktutil) is not overwritten: exit 3, run again.

Quiet by default: nothing on success, one error line and a hint on
failure. -v or -o table|plain|json|junit|markdown show the report;
-o prometheus writes node_exporter textfile metrics
(krbops_keytab_pull_changed, krbops_keytab_newest_kvno, krbops_run_*).

Steps, in order:
  pull.keytab   the directory is trusted; the keytab's lock is held; the
                existing file (if any) is a regular, replaceable keytab
  pull.fetch    the store's version parses; compared by fingerprint with
                the file ("already current" ends the run here)
  pull.as       the KDC accepts the version's newest kvno (--pending: the
                kvno the KDC has now)
  pull.ap       a service ticket for the principal decrypts with the
                version (skipped for a client the KDC issues no tickets to)
  pull.install  only when pull.as and pull.ap passed for every principal:
                old file backed up, new one renamed into place

See docs/keytab.md.` + exitStatusHelp,
		Example: `  krbops keytab pull --secret-store file:///var/lib/krbops/keytabs \
    --secret HTTP/web1.example.com@EXAMPLE.COM --keytab /etc/httpd/http.keytab
  krbops keytab pull --secret-store awssm://krbops/prod?region=eu-west-1 --secret svc-batch@EXAMPLE.COM \
    --keytab /etc/batch/batch.keytab --owner batch:batch --mode 0600 -o prometheus \
    > /var/lib/node_exporter/batch-keytab.prom.tmp && mv /var/lib/node_exporter/batch-keytab.prom.tmp /var/lib/node_exporter/batch-keytab.prom
  krbops keytab pull --pending --secret-store file:///var/lib/krbops/keytabs \
    --secret HTTP/web1.example.com@EXAMPLE.COM --keytab /etc/httpd/http.keytab -v`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.validate(); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return keytabPullRun(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.SecretStore, "secret-store", "", "secret store holding the keytab: file://DIR or awssm://PREFIX?region=R (required)")
	f.StringVar(&opts.Secret, "secret", "", "name of the keytab's secret, e.g. the principal name@REALM (required)")
	f.StringVar(&opts.Keytab, "keytab", "", "keytab file to install (required)")
	f.StringVar(&opts.Owner, "owner", "", "set the file's owner and group, USER:GROUP, USER or :GROUP, by name (from /etc/passwd, /etc/group) or number; directory (SSSD/LDAP) accounts by number (default: keep; a new file is this user's)")
	f.StringVar(&opts.Mode, "mode", "", "set the file's mode, octal, at most 0640 (default: keep; a new file gets 0600)")
	f.StringVar(&opts.Principal, "principal", "", "install only this principal's keys from the secret (default: all of them)")
	f.BoolVar(&opts.Pending, "pending", false, "install the pending version (phase 1 of a server rotation) instead of the current one")
	return cmd
}

func (o *KeytabPullOptions) validate() error {
	switch {
	case o.SecretStore == "" || o.Secret == "" || o.Keytab == "":
		return usageError(errors.New("--secret-store, --secret and --keytab are required"), "for example --secret-store file:///var/lib/krbops/keytabs --secret svc@EXAMPLE.COM --keytab /etc/svc.keytab")
	}
	if err := secretstore.ValidName(o.Secret); err != nil {
		return usageError(fmt.Errorf("--secret: %w", err), "pass the secret's name as rotate stored it (default: the principal name@REALM)")
	}
	o.uid, o.gid = -1, -1
	if o.Owner != "" {
		uid, gid, err := parseOwner(o.Owner)
		if err != nil {
			return usageError(fmt.Errorf("--owner %q: %w", o.Owner, err), ownerHint)
		}
		o.uid, o.gid = uid, gid
	}
	if o.Mode != "" {
		m, err := parseKeytabMode(o.Mode)
		if err != nil {
			return usageError(fmt.Errorf("--mode %q: %w", o.Mode, err), "for example --mode 0600, or 0640 for a group of readers")
		}
		o.mode = m
	}
	return nil
}

// ownerHint explains a name --owner could not resolve. Release builds are
// CGO_ENABLED=0, so os/user reads /etc/passwd and /etc/group only and
// never asks NSS: a directory (SSSD, LDAP, winbind) account is unknown to
// it by name, but its numbers work.
const ownerHint = "for example --owner apache:apache or --owner 48:48; names are looked up in /etc/passwd and /etc/group only, so for a directory (SSSD/LDAP) account pass the numeric uid:gid (id -u NAME, id -g NAME print them)"

// parseOwner reads USER:GROUP, USER or :GROUP, by name or number.
func parseOwner(s string) (uid, gid int, err error) {
	uid, gid = -1, -1
	u, g, _ := strings.Cut(s, ":")
	if u != "" {
		if uid, err = lookupID(u, func(n string) (string, error) {
			x, err := user.Lookup(n)
			if err != nil {
				return "", err
			}
			return x.Uid, nil
		}); err != nil {
			return 0, 0, fmt.Errorf("no user %s", u)
		}
	}
	if g != "" {
		if gid, err = lookupID(g, func(n string) (string, error) {
			x, err := user.LookupGroup(n)
			if err != nil {
				return "", err
			}
			return x.Gid, nil
		}); err != nil {
			return 0, 0, fmt.Errorf("no group %s", g)
		}
	}
	if uid < 0 && gid < 0 {
		return 0, 0, errors.New("empty")
	}
	return uid, gid, nil
}

func lookupID(s string, byName func(string) (string, error)) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, nil
	}
	id, err := byName(s)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(id)
}

// parseKeytabMode accepts an octal mode a keytab may have: readable by its
// owner, writable by no one else, nothing for other users.
func parseKeytabMode(s string) (os.FileMode, error) {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		return 0, errors.New("not an octal permission mode")
	}
	m := os.FileMode(n)
	switch {
	case m&0o400 == 0:
		return 0, errors.New("the owner could not read the keytab")
	case m&0o137 != 0:
		return 0, errors.New("at most 0640: a keytab is not executable, not writable by its group, nothing for other users")
	}
	return m, nil
}

func keytabPullRun(ctx context.Context, o *KeytabPullOptions) error {
	cfg, err := o.krb5Config()
	if err != nil {
		return err
	}
	tlsCfg, err := o.TLS()
	if err != nil {
		return err
	}
	st, err := secretstore.Open(ctx, o.SecretStore, secretstore.Options{Holder: operatorName(), TLS: tlsCfg})
	if err != nil {
		return usageError(fmt.Errorf("--secret-store: %w", err), "file://DIR or awssm://PREFIX?region=R")
	}
	keytab, err := filepath.Abs(o.Keytab)
	if err != nil {
		return usageError(fmt.Errorf("--keytab %s: %w", o.Keytab, err), "pass an absolute path")
	}
	stage := secretstore.StageCurrent
	if o.Pending {
		stage = secretstore.StagePending
	}
	log := o.Log.With("command", "keytab pull")
	p := &keytabpull.Pull{
		Store: st, Secret: o.Secret, Stage: stage, Keytab: keytab, Principal: o.Principal,
		UID: o.uid, GID: o.gid, Mode: o.mode, Log: log,
		NewKDC: func() keytabpull.KDC { return &kdcops.OnlineClient{Config: cfg, Timeout: o.Timeout, Log: log} },
	}
	o.Log.Info("run start", slog.String("command", "keytab pull"), slog.String("keytab", keytab), slog.String("secret", o.Secret))
	rep := p.Run(ctx, o.runOptions())
	rep.Metrics = append(rep.Metrics, p.Metrics()...)
	if o.Output == "" && !o.Verbose {
		return quietReport(o.Globals, rep)
	}
	return o.renderReport(rep)
}

// quietReport ends a run that prints nothing unless it failed: the first
// step that did not pass becomes the one error line and its hint, with
// the report's exit code.
func quietReport(g *Globals, rep *runbook.Report) error {
	rep.ExitCode = fault.ExitCode(rep.Class)
	g.Log.Info("run end", slog.String("command", rep.Command), slog.String("status", rep.Status), slog.Int("exit_code", rep.ExitCode))
	if rep.Class == fault.OK {
		return nil
	}
	for _, s := range rep.Steps {
		if s.Status == runbook.Fail || s.Status == runbook.Error {
			return fault.New(rep.Class, fmt.Errorf("%s: %s", s.ID, s.Message), s.Hint)
		}
	}
	return fault.New(rep.Class, errors.New(rep.Status), "re-run with -v to see the report")
}

// KeytabPruneOptions are keytab prune's flags.
type KeytabPruneOptions struct {
	*Globals
	Keytab    string
	Keep      int
	OlderThan time.Duration
	KVNO      int64
	Principal string
	Offline   bool
	DryRun    bool
}

// NewCmdKeytabPrune builds "krbops keytab prune".
func NewCmdKeytabPrune(g *Globals, runF func(context.Context, *KeytabPruneOptions) error) *cobra.Command {
	opts := &KeytabPruneOptions{Globals: g, KVNO: -1}
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove old kvnos from a keytab, never the KDC's current one",
		Long: `Remove kvnos a keytab no longer needs, per principal, rewriting the file
atomically with its owner, group, mode and extended attributes kept.

Which kvnos go:
  --keep N            all but each principal's N newest kvnos
                      (--keep 1 is k5srvutil delold)
  --older-than D      the kvnos below each principal's newest, once the newest
                      has been in the keytab (its entry timestamp) longer than
                      D: Heimdal's ktutil purge --age. With --keep, a kvno goes
                      only when both select it
  --kvno K            exactly kvno K (ktutil/kadmin ktremove PRINCIPAL K)
--principal limits the prune to one principal.

Refused (exit 1, nothing written): removing the kvno the KDC issues tickets
under — learned with an AS exchange from the file's own keys, one kvno at a
time — or with --offline the file's newest kvno; and removing every kvno
of a principal. Prune a server's old kvno only after the longest ticket
lifetime has passed since its rotation: tickets under it are still in use
until then. --dry-run lists what would go and changes nothing.

Like keytab pull, a prune holds KEYTAB.lock from its read to its rename
(not with --dry-run) and does not overwrite a file changed meanwhile.

Steps, in order:
  prune.keytab  the directory is trusted; the keytab's lock is held; the
                file is a regular keytab; the kvnos selected
  prune.guard   the KDC's current kvno (--offline: the newest) is not among
                them, and each principal keeps a kvno
  prune.write   the file rewritten atomically (skipped with --dry-run)

See docs/keytab.md.` + exitStatusHelp,
		Example: `  krbops keytab prune --keytab /etc/httpd/http.keytab --keep 1
  krbops keytab prune --keytab /etc/krb5.keytab --older-than 168h --dry-run
  krbops keytab prune --keytab /etc/httpd/http.keytab --kvno 4 --principal HTTP/web1.example.com --offline`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			hasKVNO := opts.KVNO >= 0
			switch {
			case opts.Keytab == "":
				return usageError(errors.New("--keytab is required"), "for example --keytab /etc/krb5.keytab --keep 1")
			case !hasKVNO && opts.Keep == 0 && opts.OlderThan == 0:
				return usageError(errors.New("nothing selects kvnos to remove"), "pass --keep N, --older-than DURATION or --kvno K")
			case hasKVNO && (opts.Keep != 0 || opts.OlderThan != 0):
				return usageError(errors.New("--kvno removes one kvno; it excludes --keep and --older-than"), "run one prune per selection")
			case opts.Keep < 0 || opts.OlderThan < 0:
				return usageError(errors.New("--keep and --older-than must be positive"), "for example --keep 1 or --older-than 168h")
			case opts.KVNO > 1<<32-1:
				return usageError(fmt.Errorf("--kvno %d is beyond a 32-bit kvno", opts.KVNO), "pass a kvno the keytab holds")
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return keytabPruneRun(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Keytab, "keytab", "", "keytab file to prune (required)")
	f.IntVar(&opts.Keep, "keep", 0, "keep each principal's N newest kvnos, remove the rest")
	f.DurationVar(&opts.OlderThan, "older-than", 0, "remove kvnos superseded for longer than this (e.g. 168h)")
	f.Int64Var(&opts.KVNO, "kvno", -1, "remove exactly this kvno")
	f.StringVar(&opts.Principal, "principal", "", "prune only this principal's kvnos (default: every principal in the keytab)")
	f.BoolVar(&opts.Offline, "offline", false, "do not ask the KDC; protect each principal's newest kvno in the file instead")
	f.BoolVar(&opts.DryRun, "dry-run", false, "list what would be removed; change nothing")
	return cmd
}

func keytabPruneRun(ctx context.Context, o *KeytabPruneOptions) error {
	keytab, err := filepath.Abs(o.Keytab)
	if err != nil {
		return usageError(fmt.Errorf("--keytab %s: %w", o.Keytab, err), "pass an absolute path")
	}
	log := o.Log.With("command", "keytab prune")
	p := &keytabpull.Prune{
		Keytab:    keytab,
		Selection: keytabpull.Selection{Keep: o.Keep, OlderThan: o.OlderThan, Principal: o.Principal},
		Offline:   o.Offline, DryRun: o.DryRun, Log: log,
	}
	if o.KVNO >= 0 {
		p.Selection.KVNO, p.Selection.HasKVNO = uint32(o.KVNO), true
	}
	if !o.Offline {
		cfg, err := o.krb5Config()
		if err != nil {
			return err
		}
		p.NewKDC = func() keytabpull.KDC { return &kdcops.OnlineClient{Config: cfg, Timeout: o.Timeout, Log: log} }
	}
	o.Log.Info("run start", slog.String("command", "keytab prune"), slog.String("keytab", keytab))
	return o.renderReport(p.Run(ctx, o.runOptions()))
}
