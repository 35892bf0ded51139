package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/time/rate"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook/verify"
	"github.com/krbops/krbops/secretstore"
)

// VerifyOptions are verify's flags.
type VerifyOptions struct {
	*Globals
	Realm        string
	Principal    string
	Keytab       string
	Service      string
	ServerKeytab string
	Targets      string
	Dir          string
	Concurrency  int
	KDCRate      float64
	MinLifetime  time.Duration
	WarnSkew     time.Duration
	CCache       string
	SPNEGOURL    string
	SecretStore  string
	Secret       string
}

// NewCmdVerify builds "krbops verify".
func NewCmdVerify(g *Globals, runF func(context.Context, *VerifyOptions) error) *cobra.Command {
	opts := &VerifyOptions{Globals: g}
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Prove a principal works end to end: keytab, AS, TGS, AP",
		Long: `Prove that a principal works end to end, the way its service will use it:
keytab -> AS exchange -> TGT -> service ticket -> the server decrypts it.
Run it first when "Kerberos is broken", and in CI before a deploy.

Steps, in order (config and clock once per run, the rest per target):
  config   krb5.conf loads; the realm and its KDCs resolve
  clock    one clock probe of the realm's KDC (see clock-check)
  keytab   readable, permissions, holds the principal: its kvnos and
           enctypes (klist-lint's keytab rules, as findings)
  as       an AS exchange with the keytab, one kvno at a time, newest first
           (never a multi-kvno keytab handed to a library that picks keys by
           timestamp); reports the kvno the KDC accepted. When every kvno is
           rejected, the KDC's current kvno is asked with the TGT of --ccache
  tgt      lifetime >= --min-lifetime; renewable when krb5.conf asks
  tgs      a service ticket for --service (default: the principal itself);
           reports the kvno it was issued under
  ap       the ticket decrypts with --server-keytab (default: the same
           keytab); lists every kvno the server keytab holds, so a server
           in phase 1 of a rotation shows old and new
  secret-store  with --secret-store and --secret: the store's current keytab
           holds the same kvnos and keys (compared by fingerprint, never shown)
  spnego   with --spnego-url: an HTTP GET through SPNEGO gets a 2xx

Many targets: --targets FILE (CSV principal,keytab[,service] or JSON lines)
or --dir DIR (every keytab under DIR, one target per principal), checked
--concurrency at a time with at most --kdc-rate KDC requests per second
across all workers. Each target's steps are one group in the report.
A targets file is a regular file of at most 64 MiB with lines of at most
64 KiB; a malformed one exits 2 naming its line. --principal, --keytab,
--service, --server-keytab, --secret and --spnego-url check one target
and are refused with --targets or --dir.

See docs/verify.md for each failure and its remedy.` + exitStatusHelp,
		Example: `  krbops verify --keytab /etc/krb5.keytab
  krbops verify --principal HTTP/web1.example.com --keytab /etc/httpd.keytab --spnego-url https://web1.example.com/
  krbops verify --targets fleet.csv --concurrency 32 --kdc-rate 200 -o junit`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case opts.Targets != "" && opts.Dir != "":
				return usageError(errors.New("--targets and --dir exclude each other"), "pick one source of targets")
			case (opts.Targets != "" || opts.Dir != "") && (opts.Principal != "" || opts.Keytab != "" || opts.Service != "" || opts.ServerKeytab != ""):
				return usageError(errors.New("--principal, --keytab, --service and --server-keytab check one target; --targets/--dir list many"), "put the per-target values in the targets file")
			case opts.Concurrency < 1:
				return usageError(errors.New("--concurrency must be at least 1"), "for example --concurrency 16")
			case opts.KDCRate < 0:
				return usageError(errors.New("--kdc-rate must not be negative"), "0 means unlimited")
			case (opts.SecretStore == "") != (opts.Secret == ""):
				return usageError(errors.New("--secret-store and --secret go together"), "for example --secret-store file:///var/lib/krbops/secrets --secret web1-http")
			case opts.Secret != "" && (opts.Targets != "" || opts.Dir != ""):
				return usageError(errors.New("--secret compares one target's keytab"), "run verify per secret, or drop --secret for a fleet check")
			case opts.SPNEGOURL != "" && (opts.Targets != "" || opts.Dir != ""):
				// Every principal of the fleet would GET the one URL as itself.
				return usageError(errors.New("--spnego-url checks one service; --targets/--dir list many principals"), "run verify --spnego-url per service, or drop it for a fleet check")
			case opts.MinLifetime < 0 || opts.WarnSkew <= 0:
				return usageError(errors.New("--min-lifetime and --warn-skew must be positive"), "for example --min-lifetime 1h --warn-skew 60s")
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return verifyRun(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Realm, "realm", "", "realm (default: the principal's realm, then default_realm)")
	f.StringVar(&opts.Principal, "principal", "", "principal to verify (default: the keytab's first principal)")
	f.StringVar(&opts.Keytab, "keytab", "", "keytab of the principal (default $KRB5_KTNAME, then /etc/krb5.keytab)")
	f.StringVar(&opts.Service, "service", "", "SPN for the tgs and ap steps (default: the principal itself)")
	f.StringVar(&opts.ServerKeytab, "server-keytab", "", "keytab the service decrypts tickets with (default: --keytab)")
	f.StringVar(&opts.Targets, "targets", "", "file of targets: CSV principal,keytab[,service] or JSON lines")
	f.StringVar(&opts.Dir, "dir", "", "verify every keytab under this directory (one target per principal)")
	f.IntVar(&opts.Concurrency, "concurrency", 16, "targets checked at once")
	f.Float64Var(&opts.KDCRate, "kdc-rate", 0, "KDC requests per second across all workers (0: unlimited)")
	f.DurationVar(&opts.MinLifetime, "min-lifetime", time.Hour, "fail when the TGT is issued for less")
	f.DurationVar(&opts.WarnSkew, "warn-skew", 60*time.Second, "clock step: warn beyond this offset (fail beyond clockskew)")
	f.StringVar(&opts.CCache, "ccache", "", "credential cache whose TGT asks the KDC's kvno of a stale principal (default $KRB5CCNAME when it holds a TGT)")
	f.StringVar(&opts.SPNEGOURL, "spnego-url", "", "also GET this URL with SPNEGO and expect a 2xx")
	f.StringVar(&opts.SecretStore, "secret-store", "", "secret store holding the keytab: file://DIR or awssm://PREFIX?region=R")
	f.StringVar(&opts.Secret, "secret", "", "name of the keytab's secret: its current version must hold the same keys")
	return cmd
}

func verifyRun(ctx context.Context, opts *VerifyOptions) error {
	cfg, err := opts.krb5Config()
	if err != nil {
		return err
	}
	targets, err := verifyTargets(opts)
	if err != nil {
		return err
	}
	realm, err := realmFor(cfg, opts.Realm, targets[0].Principal)
	if err != nil {
		return err
	}
	kdcs, err := cfg.ResolveKDCs(ctx, realm, nil)
	if err != nil {
		return usageError(err, "list the realm's KDCs under [realms] in krb5.conf")
	}
	log := opts.Log.With("command", "verify")
	v := &verify.Check{
		Config: cfg, Realm: realm, KDCs: kdcs, Timeout: opts.Timeout, Log: log, ProbePrincipal: targets[0].Principal,
		MinLifetime: opts.MinLifetime, WarnSkew: opts.WarnSkew,
		Lint:   kdcops.LintOptions{MaxAge: 0, UID: kdcops.RunningUID()},
		CCache: operatorCCache(opts),
	}
	if v.Lint.Rules, err = kdcops.NewRuleSet(nil, nil); err != nil {
		return usageError(err, "")
	}
	tlsCfg, err := opts.TLS()
	if err != nil {
		return err
	}
	if opts.SecretStore != "" {
		st, err := secretstore.Open(ctx, opts.SecretStore, secretstore.Options{TLS: tlsCfg})
		if err != nil {
			return usageError(fmt.Errorf("--secret-store: %w", err), "file://DIR or awssm://PREFIX?region=R")
		}
		v.Store, v.Secret = st, opts.Secret
	}
	if opts.KDCRate > 0 {
		// Burst 1: --kdc-rate is a ceiling the KDC's operators agreed to,
		// not an average to catch up on.
		v.Limiter = rate.NewLimiter(rate.Limit(opts.KDCRate), 1)
	}
	if opts.SPNEGOURL != "" {
		v.SPNEGOURL = opts.SPNEGOURL
		v.SPNEGO = func(ctx context.Context, t verify.Target, entries []kdcops.KeytabEntry) (int, error) {
			p := t.Principal
			if _, r := kdcops.SplitPrincipal(p); r == "" {
				p += "@" + realm
			}
			return kdcops.SPNEGOGet(ctx, cfg, p, opts.SPNEGOURL, entries, opts.Timeout, tlsCfg, log)
		}
	}

	ts := make([]verify.Target, len(targets))
	for i, t := range targets {
		ts[i] = verify.Target{Principal: t.Principal, Keytab: t.Keytab, Service: t.Service, ServerKeytab: opts.ServerKeytab}
	}
	var progress func(done, total int)
	if opts.IO.ErrTTY && !opts.Quiet && !opts.machineReadable() && len(targets) > 1 {
		var mu sync.Mutex
		progress = func(done, total int) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(opts.IO.ErrOut, "\rverify: %d/%d targets", done, total)
			if done == total {
				fmt.Fprintln(opts.IO.ErrOut)
			}
		}
	}
	ropts := opts.runOptions()
	ropts.OnStep = nil // a fleet's progress is the counter above
	return opts.renderReport(verify.Fleet(ctx, v, ts, opts.Concurrency, ropts, progress))
}

// verifyTargets resolves the targets from the flags: one from
// --principal/--keytab, or many from --targets or --dir.
func verifyTargets(opts *VerifyOptions) ([]Target, error) {
	switch {
	case opts.Targets != "":
		return ReadTargets(opts.Targets) // its errors are usage errors with a hint
	case opts.Dir != "":
		return dirTargets(opts.Dir)
	}
	kt := opts.Keytab
	if kt == "" {
		kt = strings.TrimPrefix(opts.IO.Getenv("KRB5_KTNAME"), "FILE:")
	}
	if kt == "" {
		kt = "/etc/krb5.keytab"
	}
	p := opts.Principal
	if p == "" {
		k, err := kdcops.ReadKeytabFile(kt, kdcops.KeytabOptions{})
		if err != nil {
			return nil, usageError(fmt.Errorf("--keytab: %w", err), "pass --principal and a readable --keytab")
		}
		if len(k.Entries) == 0 {
			return nil, usageError(fmt.Errorf("--keytab %s: no entries", kt), "pass --principal")
		}
		p = k.Entries[0].Principal
	}
	return []Target{{Principal: p, Keytab: kt, Service: opts.Service}}, nil
}

// dirTargets lists a target per principal of every keytab under dir.
func dirTargets(dir string) ([]Target, error) {
	ts, err := verify.DirTargets(dir)
	if err != nil {
		return nil, fault.New(fault.ClassOf(err), fmt.Errorf("--dir %w", err), fault.HintOf(err))
	}
	out := make([]Target, len(ts))
	for i, t := range ts {
		out[i] = Target{Principal: t.Principal, Keytab: t.Keytab}
	}
	return out, nil
}

// operatorCCache is the TGT verify may use to ask the KDC's kvno of a
// principal whose keytab the KDC rejects. A missing or unreadable cache is
// no error: the as step then says the kvno is unknown and how to learn it.
func operatorCCache(opts *VerifyOptions) *kdcops.CCache {
	path, err := kdcops.CCachePath(opts.CCache, opts.IO.Getenv)
	if err != nil {
		return nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	cc, err := kdcops.ReadCCacheFile(path, kdcops.CCacheOptions{KeepTGT: true})
	if err != nil {
		opts.Log.Warn("credential cache unusable for kvno lookups", "ccache", path, "error", err.Error())
		return nil
	}
	return cc
}
