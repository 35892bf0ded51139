package commands

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/audit"
)

// AuditOptions are audit's flags.
type AuditOptions struct {
	*Globals
	KDCLogs   []string
	Dirs      []string
	Since     days
	MaxAge    days
	MaxHosts  int
	Principal string
}

// NewCmdAudit builds "krbops audit". runF replaces the run function in
// tests that only check flag parsing.
func NewCmdAudit(g *Globals, runF func(context.Context, *AuditOptions) error) *cobra.Command {
	opts := &AuditOptions{Globals: g, Since: days(90 * 24 * time.Hour), MaxAge: days(90 * 24 * time.Hour)}
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Who really uses each principal: deletion candidates, roles, shared principals, rotations due",
		Long: `Read KDC logs and keytab inventories and say, per principal, who really
uses it: its logins (AS exchanges, as a client), the tickets asked for it
(TGS exchanges, as a service), the addresses it is used from, the logins
the KDC refused, and its key changes.

--kdc-log takes MIT krb5kdc and kadmind logs, Heimdal kdc and kpasswdd
logs, and exported AD Security events 4768/4769 (JSON lines or CSV with a
header; docs/audit.md shows how to export them). Plain, rotated and
gzipped files (recognised by content, not name) of several KDCs are merged
by time. Lines not understood are counted and sampled (AU010), never
fatal. Syslog timestamps carry no year: the year of a file's first line
is the latest one that does not put it more than a day after the file's
modification time, and it rises by one each time the month goes back
(December to January).

--dir walks keytab trees (files recognised by their header, symlinks not
followed) and checks each keytab's principal against the logs.

Steps, in order:
  audit.logs       read and merge the logs                AU010
  audit.usage      per principal                          AU001-AU006
  audit.keytabs    --dir: the keytabs on disk
  audit.inventory  --dir: keytabs against the logs        AU001 AU007-AU009
  audit.summary    findings by rule

Rules (docs/audit-rules.md explains each and what to do):
` + auditRuleTable() + `
-o json lists every finding with its evidence; docs/audit.md shows how to
turn the AU009 findings into a rotate --targets file. -o prometheus writes
per-principal gauges (krbops_audit_as_total, krbops_audit_tgs_total,
krbops_audit_client_addresses, krbops_audit_last_used_timestamp_seconds,
krbops_audit_failures_total, krbops_audit_keytab_written_timestamp_seconds,
krbops_audit_findings).` + exitStatusHelp + `
  A fail finding (AU006, AU008) exits 1; a warn finding exits 1 with
  --strict; an unreadable --kdc-log or --dir exits 2.`,
		Example: `  krbops audit --kdc-log /var/log/krb5kdc.log --kdc-log /var/log/krb5kdc.log.1.gz
  krbops audit --kdc-log kdc1.log --kdc-log kdc2.log --kdc-log kadmind.log --dir /srv/keytabs --since 90d --max-hosts 3
  krbops audit --kdc-log security-4768-4769.jsonl --principal 'svc-*' -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(opts.KDCLogs) == 0 {
				return usageError(errors.New("--kdc-log is required"), "pass every KDC's log: --kdc-log /var/log/krb5kdc.log --kdc-log /var/log/krb5kdc.log.1.gz")
			}
			if opts.Since <= 0 {
				return usageError(errors.New("--since must be positive"), "for example --since 90d")
			}
			if opts.MaxHosts < 0 {
				return usageError(errors.New("--max-hosts must not be negative"), "for example --max-hosts 3; 0 disables AU005")
			}
			if _, err := path.Match(opts.Principal, ""); err != nil {
				return usageError(fmt.Errorf("--principal %s: bad pattern", opts.Principal), "a shell pattern: * ? [a-z], e.g. --principal 'host/*'")
			}
			if err := checkDirs(opts.Dirs, "pass the directory that holds the keytabs"); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return auditRun(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&opts.KDCLogs, "kdc-log", nil, "KDC log (MIT, Heimdal; plain, rotated or .gz) or AD 4768/4769 export; repeatable, merged by time")
	f.StringArrayVar(&opts.Dirs, "dir", nil, "keytab tree to check against the logs; repeatable")
	f.Var(&opts.Since, "since", "unused for longer than this is a deletion candidate (AU001), e.g. 90d or 36h")
	f.Var(&opts.MaxAge, "max-age", "rotation policy: newest key older than this is due (AU009), e.g. 90d; 0 disables")
	f.IntVar(&opts.MaxHosts, "max-hosts", 1, "more client addresses than this is a shared principal (AU005); 0 disables")
	f.StringVar(&opts.Principal, "principal", "", "audit only principals matching this shell pattern, e.g. 'host/*' or 'svc-*@AD.TEST'")
	return cmd
}

func auditRuleTable() string {
	return ruleRows(audit.Rules, func(r audit.Rule) (string, string, string) { return r.ID, string(r.Severity), r.Title })
}

func auditRun(ctx context.Context, opts *AuditOptions) error {
	c := audit.Check{
		Logs:      dedupe(opts.KDCLogs),
		Dirs:      dedupe(opts.Dirs),
		Since:     time.Duration(opts.Since),
		MaxAge:    time.Duration(opts.MaxAge),
		MaxHosts:  opts.MaxHosts,
		Principal: opts.Principal,
		Metrics:   opts.format() == "prometheus",
	}
	return opts.runReport(ctx, runbook.Runbook{Command: "audit", Steps: c.Steps()})
}

// days is a duration flag that also takes whole days ("90d"), the unit
// rotation and retention policies are written in.
type days time.Duration

func (d *days) String() string {
	v := time.Duration(*d)
	if v != 0 && v%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(v/(24*time.Hour)), 10) + "d"
	}
	return v.String()
}

func (d *days) Set(s string) error {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return fmt.Errorf("want whole days (90d) or a Go duration (36h)")
		}
		*d = days(time.Duration(v) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("want whole days (90d) or a Go duration (36h)")
	}
	*d = days(v)
	return nil
}

func (d *days) Type() string { return "duration" }
