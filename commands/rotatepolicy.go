package commands

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/policy"
	"github.com/krbops/krbops/rotate"
)

// defaultPolicyPaths are read when neither --policy nor --no-policy is
// given; tests point it elsewhere.
var defaultPolicyPaths = []string{"/etc/krbops/policy.yaml", "/etc/krbops/policy.yml"}

// loadPolicy loads --policy, else the default policy file when one is
// present; nil without a policy (--no-policy, or no default file).
func (o *RotateOptions) loadPolicy() (*policy.Policy, error) {
	path := o.PolicyPath
	switch {
	case o.NoPolicy && path != "":
		return nil, usageError(errors.New("--policy and --no-policy exclude each other"), "pass one of them")
	case o.NoPolicy:
		return nil, nil
	case path == "":
		var found []string
		for _, p := range defaultPolicyPaths {
			if _, err := os.Lstat(p); err == nil {
				found = append(found, p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				found = append(found, p) // unreadable: Load names the problem
			}
		}
		switch len(found) {
		case 0:
			return nil, nil
		case 1:
			path = found[0]
		default:
			return nil, usageError(fmt.Errorf("both %s exist: which is the policy is ambiguous", strings.Join(found, " and ")),
				"keep one of them, or pass --policy FILE")
		}
	}
	p, err := policy.Load(path)
	if err != nil {
		return nil, policyError(err)
	}
	return p, nil
}

// policyError gives a policy error its class and hint: every problem with
// the file is local input (exit 2).
func policyError(err error) error {
	var pe *policy.Error
	var ce *policy.ConflictError
	switch {
	case errors.As(err, &pe):
		return fault.New(fault.Usage, err, pe.Hint)
	case errors.As(err, &ce):
		return fault.New(fault.Usage, err, ce.Hint)
	}
	return usageError(err, "")
}

// policyFlags collects the flags the operator gave; cobra's defaults are
// not "given" and must not outrank the policy.
func (o *RotateOptions) policyFlags(fl *pflag.FlagSet) policy.Flags {
	var f policy.Flags
	given := func(name string) bool { return fl.Lookup(name) != nil && fl.Changed(name) }
	str := func(name string, v *string) *string {
		if given(name) {
			return v
		}
		return nil
	}
	dur := func(name string, v *time.Duration) *time.Duration {
		if given(name) {
			return v
		}
		return nil
	}
	f.Tier = str("tier", &o.Tier)
	f.Backend = str("backend", &o.Backend)
	if o.targetBackend != "" {
		f.Backend = &o.targetBackend
	}
	f.Ledger = str("ledger", &o.LedgerPath)
	f.SecretStore = str("secret-store", &o.SecretStore)
	f.Allowlist = str("allowlist", &o.Allowlist)
	// 0 has always meant "the tier's" for these two.
	if given("max-per-window") && o.MaxPerWindow != 0 {
		f.MaxPerWindow = &o.MaxPerWindow
	}
	if given("window") && o.Window != 0 {
		f.Window = &o.Window
	}
	if given("no-login-record-ok") {
		f.NoLoginRecordOK = &o.NoLoginRecordOK
	}
	f.MinGap = dur("min-gap", &o.MinGap)
	f.MinTGTRemaining = dur("min-tgt-remaining", &o.MinTGTRemaining)
	f.TicketLifetime = dur("ticket-lifetime", &o.TicketLifetime)
	f.Deny = o.Deny
	f.KDCLogs = o.KDCLogs
	return f
}

// resolvePolicy decides the rotation's effective policy and puts its
// values into the options, so that the rest of rotate reads one set of
// values whatever their source.
func (o *RotateOptions) resolvePolicy(fl *pflag.FlagSet) error {
	principal := o.Principal
	if _, realm := kdcops.SplitPrincipal(principal); realm == "" && o.policy != nil {
		// A tier pattern may name a realm: match the whole principal.
		if cfg, err := o.krb5Config(); err == nil {
			if q, err := qualify(cfg, o.Realm, principal); err == nil {
				principal = q
			}
		}
	}
	d := policy.Defaults{
		NoLoginRecordOK: policy.Value[bool]{V: false, Source: policy.BuiltIn},
		MinTGTRemaining: policy.Value[time.Duration]{V: defaultMinTGTRemaining, Source: policy.BuiltIn},
		TicketLifetime:  policy.Value[time.Duration]{V: 0, Source: policy.BuiltIn},
		Backend:         policy.Value[string]{V: rotate.BackendKpasswd, Source: policy.BuiltIn},
		Ledger:          policy.Value[string]{V: o.LedgerPath, Source: policy.BuiltIn},
		SecretStore:     policy.Value[string]{V: "", Source: policy.BuiltIn},
	}
	e, err := o.policy.Resolve(principal, o.Cluster, o.policyFlags(fl), d)
	if err != nil {
		return policyError(err)
	}
	o.effective = e
	o.Tier, o.MaxPerWindow, o.Window, o.MinGap = e.Tier.V, e.Limit.V, e.Window.V, e.MinGap.V
	o.Deny, o.KDCLogs, o.NoLoginRecordOK = e.Deny.V, e.KDCLogs.V, e.NoLoginRecordOK.V
	o.MinTGTRemaining, o.TicketLifetime = e.MinTGTRemaining.V, e.TicketLifetime.V
	o.Backend, o.LedgerPath, o.SecretStore = e.Backend.V, e.Ledger.V, e.SecretStore.V
	if e.Allowlisted == nil {
		o.Allowlist = e.AllowlistFile.V
	}
	return nil
}

// applyPolicy fills the rotation from the effective policy: the
// allowlist decision, the minimum gap, and the report's rows, with the
// ticket lifetime's real default named.
func (o *RotateOptions) applyPolicy(r *rotate.Rotation, cfg *kdcops.Config) {
	e := o.effective
	if e == nil {
		return
	}
	r.MinGap = o.MinGap
	if a := e.Allowlisted; a != nil {
		r.PolicyAllowlist = &rotate.AllowlistDecision{Allowed: a.V, Source: a.Source}
	}
	if e.TicketLifetime.V == 0 {
		e.TicketLifetime.V = r.TicketLifetime
		if cfg != nil && cfg.LibDefaults.TicketLifetime > 0 {
			e.TicketLifetime.Source = "krb5.conf ticket_lifetime (" + cfg.Path + ")"
		}
	}
	for _, row := range e.Rows() {
		r.Policy = append(r.Policy, rotate.PolicySetting{Key: row.Key, Value: row.Value, Source: row.Source})
	}
}

// subcommandPolicy applies the policy's defaults to rotate finish, status,
// abort and unlock: the same ledger, secret store and phase-2 wait as the
// rotation itself, unless a flag says otherwise.
func (o *RotateOptions) subcommandPolicy(fl *pflag.FlagSet) error {
	p, err := o.loadPolicy()
	if err != nil || p == nil {
		return err
	}
	o.policy = p
	o.policyDefaults(fl)
	for _, d := range p.Deny {
		o.Deny = append(o.Deny, d.Text)
	}
	return nil
}

// policyDefaults takes the ledger, secret store and phase-2 wait from the
// policy where no flag gives them: what a rotation that is resumed or
// finished used when it started.
func (o *RotateOptions) policyDefaults(fl *pflag.FlagSet) {
	p := o.policy
	if p == nil {
		return
	}
	if p.Ledger.Set && !fl.Changed("ledger") {
		o.LedgerPath = p.Ledger.V
	}
	if p.SecretStore.Set && !fl.Changed("secret-store") {
		o.SecretStore = p.SecretStore.V
	}
	if p.TicketLifetime.Set && !fl.Changed("ticket-lifetime") {
		o.TicketLifetime = p.TicketLifetime.V
	}
}
