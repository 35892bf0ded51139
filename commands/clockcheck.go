package commands

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/readcap"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/clock"
)

// ClockCheckOptions are clock-check's flags.
type ClockCheckOptions struct {
	*Globals
	Realm       string
	Principal   string
	KDCs        []string
	NTPServer   string
	AWSEndpoint string
	WarnSkew    time.Duration
}

// NewCmdClockCheck builds "krbops clock-check". runF replaces the run
// function in tests that only check flag parsing.
func NewCmdClockCheck(g *Globals, runF func(context.Context, *ClockCheckOptions) error) *cobra.Command {
	opts := &ClockCheckOptions{Globals: g}
	cmd := &cobra.Command{
		Use:   "clock-check",
		Short: "Measure each KDC's clock offset against this host",
		Long: `Measure the clock offset between this host and every KDC of the realm,
without credentials.

krbops sends each KDC AS-REQs without pre-authentication for --principal
and reads the server time (stime, susec) from the KRB-ERROR it answers with.
Because MIT KDCs return susec as a per-second counter, not a clock, one
reply can be up to a second off: krbops sends a few probes around one of
the KDC's second boundaries and intersects what each reply proves, so the
offset comes with an honest uncertainty (typically ±0.1s) after about one
second. All KDCs are probed at once. Each probe appears in the KDC log as an
AS_REQ for the principal (answered NEEDED_PREAUTH or CLIENT_NOT_FOUND).

Steps, in order:
  clock.kdc-offset:<kdc>  one per KDC: fail beyond krb5.conf clockskew
                          (default 300s), warn beyond --warn-skew; error if the
                          KDC did not answer (the others are still measured)
  clock.kdc-spread        the largest difference between two KDCs
  clock.ntp-offset        with --ntp: this host against an NTP server
  clock.aws-offset        with --aws-endpoint: this host against the endpoint's
                          HTTP Date (SigV4 rejects requests > 5 minutes off)
  clock.verdict           the worst KDC offset; error (exit 3) only if no KDC
                          answered

See docs/clock-check.md for what each failure means and what to do.` + exitStatusHelp,
		Example: `  krbops clock-check
  krbops clock-check --realm EXAMPLE.COM --ntp pool.ntp.org -o json
  krbops clock-check --kdc kdc1.example.com:88 --kdc kdc2.example.com:88`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.WarnSkew <= 0 {
				return usageError(errors.New("--warn-skew must be positive"), "for example --warn-skew 60s")
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return clockCheckRun(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Realm, "realm", "", "realm to check (default: the principal's realm, then default_realm)")
	f.StringVar(&opts.Principal, "principal", "", "principal named in the probe AS-REQ (default: the ccache's principal, else host/<hostname>)")
	f.StringArrayVar(&opts.KDCs, "kdc", nil, "KDC to probe as host[:port], optionally tcp/ or udp/ prefixed; repeatable; replaces the realm's list")
	f.StringVar(&opts.NTPServer, "ntp", "", "also compare this host's clock with an NTP server (SNTP)")
	f.StringVar(&opts.AWSEndpoint, "aws-endpoint", "", "also compare with an AWS endpoint's HTTP Date header, e.g. https://sts.us-east-1.amazonaws.com")
	f.DurationVar(&opts.WarnSkew, "warn-skew", 60*time.Second, "warn when an offset exceeds this (fail beyond krb5.conf clockskew)")
	return cmd
}

func clockCheckRun(ctx context.Context, opts *ClockCheckOptions) error {
	cfg, err := opts.krb5Config()
	if err != nil {
		return err
	}
	path := cfg.Path

	principal := opts.Principal
	if principal == "" {
		principal = defaultPrincipal(opts.Globals)
	}
	realm, err := realmFor(cfg, opts.Realm, principal)
	if err != nil {
		return err
	}
	if name, _ := kdcops.SplitPrincipal(principal); name == "" {
		return usageError(fmt.Errorf("--principal %q has no name", principal), "for example --principal host/web1.example.com")
	}

	kdcs, err := cfg.ResolveKDCs(ctx, realm, opts.KDCs)
	if err != nil {
		var ce *kdcops.ConfigError
		if errors.As(err, &ce) || len(opts.KDCs) > 0 {
			return usageError(err, "list the realm's KDCs under [realms] in krb5.conf, or pass --kdc host:port")
		}
		return fault.New(fault.Unreachable, err, "set kdc entries in krb5.conf or pass --kdc host:port")
	}
	maxSkew := cfg.ClockSkew()
	if opts.WarnSkew >= maxSkew {
		return usageError(fmt.Errorf("--warn-skew %s must be below clockskew %s from %s", opts.WarnSkew, maxSkew, path), "pick a smaller --warn-skew")
	}

	tlsCfg, err := opts.TLS()
	if err != nil {
		return err
	}
	check := clock.Check{
		TLS:         tlsCfg,
		Config:      cfg,
		Realm:       realm,
		Principal:   principal,
		KDCs:        kdcs,
		NTPServer:   opts.NTPServer,
		AWSEndpoint: opts.AWSEndpoint,
		WarnSkew:    opts.WarnSkew,
		MaxSkew:     maxSkew,
		Timeout:     opts.Timeout,
		Log:         opts.Log.With("command", "clock-check"),
	}
	return opts.runReport(ctx, runbook.Runbook{Command: "clock-check", Steps: check.Steps()})
}

// defaultPrincipal is the ccache's principal, else host/<hostname>: the
// identity this host would use anyway, so the probe's log line is easy to
// attribute.
func defaultPrincipal(g *Globals) string {
	if path, err := kdcops.CCachePath("", g.IO.Getenv); err == nil {
		if p, err := kdcops.CCachePrincipal(path); err == nil {
			return p
		}
	}
	if p, err := kdcops.HostPrincipal(); err == nil {
		return p
	}
	return "host/localhost"
}

// configError is a krb5.conf problem: exit 2, naming the file.
func configError(err error) error {
	hint := "fix the file, or point --krb5-config (or KRB5_CONFIG) at the right one"
	var ce *kdcops.ConfigError
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.As(err, &ce) && strings.Contains(ce.Msg, "no such file"):
		hint = "pass --krb5-config PATH or set KRB5_CONFIG"
	case errors.Is(err, readcap.ErrNotRegular):
		hint = "point --krb5-config (or KRB5_CONFIG) at a regular file: krbops does not read krb5.conf from a pipe or device"
	case errors.Is(err, readcap.ErrTooLarge):
		hint = "a krb5.conf is a few KiB: check that --krb5-config (or KRB5_CONFIG, or an include) names the right file"
	}
	return usageError(err, hint)
}
