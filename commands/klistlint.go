package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/krbops/krbops/internal/safetext"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/klistlint"
)

// defaultKeytab is where MIT looks when KRB5_KTNAME is unset.
const defaultKeytab = "/etc/krb5.keytab"

// KlistLintOptions are klist-lint's flags.
type KlistLintOptions struct {
	*Globals
	CCache       string
	CCacheSet    bool // --ccache was given (an empty value then means "none")
	Keytabs      []string
	Dirs         []string
	Principal    string
	MinRemaining time.Duration
	MaxAge       time.Duration
	Disable      []string
	Only         []string
	Online       bool
	Workers      int

	rules kdcops.RuleSet
}

// NewCmdKlistLint builds "krbops klist-lint". runF replaces the run
// function in tests that only check flag parsing.
func NewCmdKlistLint(g *Globals, runF func(context.Context, *KlistLintOptions) error) *cobra.Command {
	opts := &KlistLintOptions{Globals: g}
	cmd := &cobra.Command{
		Use:   "klist-lint",
		Short: "Lint credential caches and keytabs (stable rule ids, optional KDC check)",
		Long: `Lint the credential cache and keytabs of this host: everything that will
break authentication before it does. Each problem is a finding with a
stable rule id, a severity (info, warn, fail), a message and a hint.

Without --ccache, --keytab or --dir, klist-lint checks the default cache
($KRB5CCNAME, else /tmp/krb5cc_<uid>) and the default keytab ($KRB5_KTNAME,
else /etc/krb5.keytab), skipping a default that does not exist. With any
of them, it checks exactly what was given. --dir walks a tree and lints
every file that starts with a keytab header (0x05 0x01/0x02), whatever its
name; symlinks are not followed.

--online also asks the realm's KDCs (from krb5.conf) about each principal
of each --keytab: its enctypes and salts, its current kvno and whether the
keytab's keys work. The kvno is read from a service ticket for the
principal, requested with your own TGT (--ccache, else the default cache)
or, without one, with a TGT the keytab itself obtains. Every request shows
in the KDC log; a rejected key counts as a failed pre-authentication.

Steps, in order (each grouped by its file):
  ccache.read    read the cache                       CC001-CC003
  ccache.tgt     the TGT's lifetime, flags, enctypes  CC004-CC011
  keytab.read    read a keytab                        KT001-KT003
  keytab.rules   its entries                          KT004-KT013
  online.kvno    --online: the KDC's kvno             ON001 ON002 ON004 ON006 ON007
  online.keys    --online: keys against the KDC       ON003 ON005
  keytab.dir     every keytab under --dir             KT001-KT013
  lint.summary   findings by rule

Rules (docs/lint-rules.md explains each and what to do):
` + ruleTable() + `
Findings are in every output format; -o json lists them under "findings",
-o prometheus writes a node_exporter textfile.

Flags that cannot all be honoured exit 2 instead of linting less than
asked: the same rule in --only and --disable, --online with every ON rule
off, --only with nothing but ON rules and no --online, --ccache "" with no
--keytab or --dir. A device or FIFO named as a keytab or cache is KT001 or
CC001 (what it is), never chmod advice.` + exitStatusHelp + `
  A fail finding exits 1; a warn finding exits 1 with --strict.`,
		Example: `  krbops klist-lint
  krbops klist-lint --keytab /etc/krb5.keytab --principal host/web1.example.com --online
  krbops klist-lint --ccache FILE:/tmp/krb5cc_job --min-remaining 4h
  krbops klist-lint --dir /srv/keytabs --disable KT009 -o json
  krbops klist-lint -o prometheus > /var/lib/node_exporter/krb5.prom.$$; mv /var/lib/node_exporter/krb5.prom.$$ /var/lib/node_exporter/krb5.prom`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.CCacheSet = cmd.Flags().Changed("ccache")
			if opts.MinRemaining < 0 {
				return usageError(errors.New("--min-remaining must not be negative"), "for example --min-remaining 1h")
			}
			if opts.MaxAge < 0 {
				return usageError(errors.New("--max-age must not be negative"), "for example --max-age 90d is --max-age 2160h; 0 disables KT010")
			}
			if opts.Workers < 0 {
				return usageError(errors.New("--workers must not be negative"), "0 picks a pool size from the CPU count")
			}
			rules, err := kdcops.NewRuleSet(opts.Only, opts.Disable)
			if err != nil {
				return usageError(err, "valid rule ids: "+strings.Join(kdcops.RuleIDs(), ", "))
			}
			opts.rules = rules
			if err := opts.contradictions(); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return klistLintRun(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.CCache, "ccache", "", "credential cache to lint, FILE:path or path (default $KRB5CCNAME, else /tmp/krb5cc_<uid>)")
	f.StringArrayVar(&opts.Keytabs, "keytab", nil, "keytab to lint; repeatable (default $KRB5_KTNAME, else /etc/krb5.keytab)")
	f.StringArrayVar(&opts.Dirs, "dir", nil, "lint every keytab under this directory (recognised by header, not name); repeatable")
	f.StringVar(&opts.Principal, "principal", "", "principal that must be in the keytabs and the cache's default principal (name or name@REALM)")
	f.DurationVar(&opts.MinRemaining, "min-remaining", time.Hour, "TGT lifetime the job about to run needs (CC006, CC008)")
	f.DurationVar(&opts.MaxAge, "max-age", 90*24*time.Hour, "rotation policy: newest key older than this is due (KT010); 0 disables")
	f.StringSliceVar(&opts.Disable, "disable", nil, "rule ids not to run, e.g. --disable KT009,CC007; repeatable")
	f.StringSliceVar(&opts.Only, "only", nil, "run only these rule ids, e.g. --only KT002; repeatable; an id in both --only and --disable is an error")
	f.BoolVar(&opts.Online, "online", false, "also check each --keytab against the KDC (kvno, enctypes, salts, keys)")
	f.IntVar(&opts.Workers, "workers", 0, "files read in parallel by --dir (default: from the CPU count)")
	return cmd
}

// contradictions refuses flag combinations that cannot all be honoured:
// run as given, they would lint less than asked (often nothing) and pass.
func (o *KlistLintOptions) contradictions() error {
	if both := overlap(o.Only, o.Disable); len(both) > 0 {
		ids := strings.Join(both, ",")
		return usageError(fmt.Errorf("--only %s and --disable %s contradict: a rule cannot both run and be off", ids, ids),
			"drop "+ids+" from --only or from --disable")
	}
	switch {
	case o.Online && len(o.Keytabs) == 0 && len(o.Dirs) > 0:
		return usageError(errors.New("--online checks --keytab files; --dir is linted offline"),
			"pass the keytabs to check against the KDC with --keytab (asking the KDC about a whole tree would flood it)")
	case o.Online && !o.rules.AnyEnabled("ON"):
		return usageError(errors.New("--online asks the KDC only for the ON rules, and --only/--disable turn all of them off"),
			"drop --online, or enable an ON rule (docs/lint-rules.md)")
	case !o.Online && len(o.Only) > 0 && !o.rules.AnyEnabled("CC") && !o.rules.AnyEnabled("KT"):
		return usageError(fmt.Errorf("--only %s runs only ON rules, which need --online", strings.Join(o.Only, ",")),
			"add --online (and --keytab), or pick CC/KT rules")
	case o.CCacheSet && o.CCache == "" && len(o.Keytabs) == 0 && len(o.Dirs) == 0:
		return usageError(errors.New(`nothing to lint: --ccache "" turns the credential cache off and no --keytab or --dir was given`),
			"pass --keytab or --dir, or drop --ccache \"\" to lint the defaults")
	}
	return nil
}

// overlap lists the rule ids (canonical, in catalogue order) named in both
// lists; ids are case-insensitive, unknown ones were refused before.
func overlap(a, b []string) []string {
	in := func(list []string, id string) bool {
		for _, x := range list {
			if r, ok := kdcops.RuleByID(strings.TrimSpace(x)); ok && r.ID == id {
				return true
			}
		}
		return false
	}
	var both []string
	for _, id := range kdcops.RuleIDs() {
		if in(a, id) && in(b, id) {
			both = append(both, id)
		}
	}
	return both
}

func ruleTable() string {
	return ruleRows(kdcops.Rules, func(r kdcops.Rule) (string, string, string) { return r.ID, string(r.Severity), r.Title })
}

// ruleRows lays out a rule catalogue for --help: id, severity, title.
func ruleRows[R any](rules []R, row func(R) (id, severity, title string)) string {
	var b strings.Builder
	for _, r := range rules {
		id, sev, title := row(r)
		fmt.Fprintf(&b, "  %s  %-4s  %s\n", id, sev, title)
	}
	return b.String()
}

// checkDirs refuses a --dir that is missing or not a directory, before
// anything is read; notDir is the hint for a file given as --dir.
func checkDirs(dirs []string, notDir string) error {
	for _, d := range dirs {
		fi, err := os.Stat(d)
		switch {
		case err != nil:
			return usageError(fmt.Errorf("--dir %s: %s", d, describeFileError(err)), "pass an existing directory")
		case !fi.IsDir():
			return usageError(fmt.Errorf("--dir %s: not a directory", d), notDir)
		}
	}
	return nil
}

func klistLintRun(ctx context.Context, opts *KlistLintOptions) error {
	getenv := opts.IO.Getenv
	explicit := opts.CCacheSet || len(opts.Keytabs) > 0 || len(opts.Dirs) > 0

	var ccache string
	var keytabs []string
	if explicit {
		if opts.CCacheSet && opts.CCache != "" {
			p, err := kdcops.CCachePath(opts.CCache, getenv)
			if err != nil {
				return usageError(err, "krbops reads FILE: caches only: kinit -c FILE:/path and pass --ccache FILE:/path")
			}
			ccache = p
		}
		keytabs = dedupe(opts.Keytabs)
		for i, k := range keytabs {
			p, err := keytabPath(k)
			if err != nil {
				return usageError(err, "pass a FILE: keytab path")
			}
			keytabs[i] = p
		}
	} else {
		p, err := kdcops.CCachePath("", getenv)
		if err != nil {
			return usageError(err, "krbops reads FILE: caches only: kinit -c FILE:/path and pass --ccache FILE:/path, or lint keytabs only with --keytab")
		}
		kt := defaultKeytab
		if env := getenv("KRB5_KTNAME"); env != "" {
			if kt, err = keytabPath(env); err != nil {
				return usageError(fmt.Errorf("KRB5_KTNAME: %w", err), "pass --keytab PATH")
			}
		}
		var missing []string
		if exists(p) {
			ccache = p
		} else {
			missing = append(missing, "no credential cache at "+p)
		}
		if exists(kt) {
			keytabs = []string{kt}
		} else {
			missing = append(missing, "no keytab at "+kt)
		}
		if ccache == "" && len(keytabs) == 0 {
			return usageError(errors.New("nothing to lint: "+strings.Join(missing, " and ")),
				"pass --ccache, --keytab or --dir")
		}
		if !opts.Quiet {
			for _, m := range missing {
				fmt.Fprintf(opts.IO.ErrOut, "note: %s (default), not linted\n", safetext.Line(m))
			}
		}
	}
	dirs := dedupe(opts.Dirs)
	if err := checkDirs(dirs, "pass a single keytab with --keytab"); err != nil {
		return err
	}

	lint := klistlint.Check{
		CCache:  ccache,
		Keytabs: keytabs,
		Dirs:    dirs,
		Workers: opts.Workers,
		Lint: kdcops.LintOptions{
			Rules:        opts.rules,
			Principal:    opts.Principal,
			MinRemaining: opts.MinRemaining,
			MaxAge:       opts.MaxAge,
			UID:          kdcops.RunningUID(),
		},
		Online:  opts.Online && len(keytabs) > 0,
		Timeout: opts.Timeout,
		Log:     opts.Log.With("command", "klist-lint"),
	}
	if lint.Online {
		cfg, err := opts.krb5Config()
		if err != nil {
			return err
		}
		lint.Config = cfg
		// The operator's own TGT lets krbops read a principal's kvno even
		// when the keytab is too stale to log in.
		lint.OnlineCCache = ccache
		if lint.OnlineCCache == "" {
			if p, err := kdcops.CCachePath("", getenv); err == nil && exists(p) {
				lint.OnlineCCache = p
			}
		}
	}
	return opts.runReport(ctx, runbook.Runbook{Command: "klist-lint", Steps: lint.Steps()})
}

// keytabPath accepts a bare path or FILE:/WRFILE: as MIT does; other
// keytab types (MEMORY:, KDB:) have no file to lint.
func keytabPath(name string) (string, error) {
	for _, prefix := range []string{"FILE:", "WRFILE:"} {
		if rest, ok := strings.CutPrefix(name, prefix); ok {
			return rest, nil
		}
	}
	if typ, _, ok := strings.Cut(name, ":"); ok && !strings.Contains(typ, "/") && len(typ) > 1 {
		return "", fmt.Errorf("keytab %s: %s keytabs are not supported", name, typ)
	}
	return name, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func dedupe(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
