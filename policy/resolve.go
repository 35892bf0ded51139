package policy

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/rotate"
)

// Value is one effective value and where it came from: "flag --x",
// "policy FILE:LINE (KEY)" or "built-in default".
type Value[T any] struct {
	V      T
	Source string
}

// BuiltIn is the source of a value nobody set.
const BuiltIn = "built-in default"

func flagSource(name string) string { return "flag --" + name }

func (p *Policy) source(line int, key string) string {
	return fmt.Sprintf("policy %s:%d (%s)", p.File, line, key)
}

// Flags are the values given on the command line; a nil pointer (or nil
// slice) was not given.
type Flags struct {
	Tier            *string
	MaxPerWindow    *int
	Window          *time.Duration
	MinGap          *time.Duration
	Deny            []string
	KDCLogs         []string
	NoLoginRecordOK *bool
	MinTGTRemaining *time.Duration
	TicketLifetime  *time.Duration
	Backend         *string
	Ledger          *string
	SecretStore     *string
	Allowlist       *string
}

// Defaults are what applies when neither flag nor policy says: the
// caller's built-in defaults, each with its source (a ticket lifetime may
// come from krb5.conf).
type Defaults struct {
	NoLoginRecordOK Value[bool]
	MinTGTRemaining Value[time.Duration]
	TicketLifetime  Value[time.Duration]
	Backend         Value[string]
	Ledger          Value[string]
	SecretStore     Value[string]
}

// Effective is the policy of one rotation: every value with its source.
type Effective struct {
	Principal string
	Cluster   string

	Tier   Value[string]
	Limit  Value[int]
	Window Value[time.Duration]
	// MinGap is the least time between two rotations of the tier in the
	// (cluster, role); the ledger's admission enforces it.
	MinGap Value[time.Duration]

	// Allowlisted is decided when the policy lists clusters; otherwise
	// AllowlistFile is the --allowlist file preflight.allowlist reads.
	Allowlisted   *Value[bool]
	AllowlistFile Value[string]

	Deny            Value[[]string] // the policy's and --deny's, on top of rotate.BuiltinDeny
	KDCLogs         Value[[]string]
	NoLoginRecordOK Value[bool]
	MinTGTRemaining Value[time.Duration]
	TicketLifetime  Value[time.Duration]
	Backend         Value[string]
	Ledger          Value[string]
	SecretStore     Value[string]
}

// Row is one line of the effective policy, for a report.
type Row struct{ Key, Value, Source string }

// Rows lists the effective policy in a fixed order.
func (e *Effective) Rows() []Row {
	dur := func(d time.Duration) string {
		if d == 0 {
			return "0s"
		}
		return d.String()
	}
	list := func(l []string) string {
		if len(l) == 0 {
			return "(none)"
		}
		return strings.Join(l, ", ")
	}
	rows := []Row{
		{"tier", e.Tier.V, e.Tier.Source},
		{"limit", strconv.Itoa(e.Limit.V), e.Limit.Source},
		{"window", dur(e.Window.V), e.Window.Source},
		{"min-gap", dur(e.MinGap.V), e.MinGap.Source},
	}
	if e.Allowlisted != nil {
		rows = append(rows, Row{"allowlisted", strconv.FormatBool(e.Allowlisted.V), e.Allowlisted.Source})
	} else {
		rows = append(rows, Row{"allowlist", e.AllowlistFile.V, e.AllowlistFile.Source})
	}
	return append(rows,
		Row{"deny", list(e.Deny.V), e.Deny.Source},
		Row{"kdc-logs", list(e.KDCLogs.V), e.KDCLogs.Source},
		Row{"no-login-record-ok", strconv.FormatBool(e.NoLoginRecordOK.V), e.NoLoginRecordOK.Source},
		Row{"min-tgt-remaining", dur(e.MinTGTRemaining.V), e.MinTGTRemaining.Source},
		Row{"ticket-lifetime", dur(e.TicketLifetime.V), e.TicketLifetime.Source},
		Row{"backend", e.Backend.V, e.Backend.Source},
		Row{"ledger", e.Ledger.V, e.Ledger.Source},
		Row{"secret-store", e.SecretStore.V, e.SecretStore.Source},
	)
}

// ConflictError is a flag that contradicts the policy file: a --tier other
// than the principal's, or a rate flag looser than the policy's value.
type ConflictError struct {
	Flag   string // e.g. --tier standard
	Policy string // the value and its source
	Hint   string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s contradicts the policy: %s", e.Flag, e.Policy)
}

// MatchTier returns the tier of principal: the first tier in file order
// with a pattern the principal matches (rotate.Denied's matching: path.Match,
// case-insensitive, on the name without realm, or on the whole principal
// when the pattern names a realm), and the pattern.
func (p *Policy) MatchTier(principal string) (*Tier, *Pattern) {
	if p == nil {
		return nil, nil
	}
	name, _ := kdcops.SplitPrincipal(principal)
	for i := range p.Tiers {
		for j := range p.Tiers[i].Principals {
			pat := &p.Tiers[i].Principals[j]
			subject := name
			if strings.Contains(pat.Text, "@") {
				subject = principal
			}
			if ok, _ := path.Match(strings.ToLower(pat.Text), strings.ToLower(subject)); ok {
				return &p.Tiers[i], pat
			}
		}
	}
	return nil, nil
}

// Resolve gives the effective policy of rotating principal (name@REALM)
// in cluster. Precedence, highest first: a flag; the cluster's override
// of the tier's limits; the tier; the rest of the file; the built-in
// defaults (d, and rotate.TierLimit for a tier's limit and window). With
// a policy file the tier comes from its patterns: --tier may only name a
// tier at least as strict in limit, window and min-gap, and --max-per-window,
// --window and --min-gap may only tighten; anything else is a
// *ConflictError. A nil p is no policy file: flags and defaults only.
func (p *Policy) Resolve(principal, cluster string, f Flags, d Defaults) (*Effective, error) {
	e := &Effective{Principal: principal, Cluster: cluster}
	e.Tier = Value[string]{string(rotate.TierStandard), BuiltIn}
	var tier *Tier
	if t, pat := p.MatchTier(principal); t != nil {
		tier = t
		e.Tier = Value[string]{t.Name, fmt.Sprintf("policy %s:%d (%s %q)", p.File, pat.Line, pat.Key, pat.Text)}
	} else if p != nil {
		if len(p.Tiers) > 0 {
			e.Tier.Source = fmt.Sprintf("%s (no tier pattern of policy %s matches)", BuiltIn, p.File)
		}
		tier = p.tier(e.Tier.V)
	}
	if f.Tier != nil && p == nil {
		e.Tier = Value[string]{*f.Tier, flagSource("tier")}
	}
	if _, known := rotate.TierLimit(rotate.Tier(e.Tier.V)); !known && tier == nil {
		return nil, &ConflictError{Flag: "--tier " + *f.Tier, Policy: "no such tier", Hint: "standard or control-plane"}
	}
	e.Limit, e.Window, e.MinGap = p.limitsOf(e.Tier.V, cluster)

	if f.Tier != nil && p != nil && *f.Tier != e.Tier.V {
		if err := p.tighterTier(*f.Tier, e, cluster); err != nil {
			return nil, err
		}
		e.Tier = Value[string]{*f.Tier, flagSource("tier") + " (tighter than " + e.Tier.V + ", " + e.Tier.Source + ")"}
		e.Limit, e.Window, e.MinGap = p.limitsOf(*f.Tier, cluster)
	}
	if err := p.rateFlags(f, e); err != nil {
		return nil, err
	}

	if p.HasClusters() {
		if f.Allowlist != nil {
			return nil, &ConflictError{Flag: "--allowlist " + *f.Allowlist, Policy: fmt.Sprintf("policy %s lists the clusters", p.File),
				Hint: "drop --allowlist: the policy's clusters section is the allowlist"}
		}
		a := &Value[bool]{false, fmt.Sprintf("policy %s (cluster %s is not listed)", p.File, cluster)}
		if c := p.cluster(cluster); c != nil {
			a = &Value[bool]{c.Allowlisted.V, p.source(c.Allowlisted.Line, c.Allowlisted.Key)}
		}
		e.Allowlisted = a
	} else if f.Allowlist != nil {
		e.AllowlistFile = Value[string]{*f.Allowlist, flagSource("allowlist")}
	}

	e.Deny = Value[[]string]{nil, BuiltIn + " (" + strings.Join(rotate.BuiltinDeny, ", ") + " only)"}
	var srcs []string
	if p != nil && len(p.Deny) > 0 {
		for _, pat := range p.Deny {
			e.Deny.V = append(e.Deny.V, pat.Text)
		}
		srcs = append(srcs, p.source(p.Deny[0].Line, "deny"))
	}
	if len(f.Deny) > 0 {
		e.Deny.V = append(e.Deny.V, f.Deny...)
		srcs = append(srcs, flagSource("deny"))
	}
	if len(srcs) > 0 {
		e.Deny.Source = strings.Join(srcs, " + ")
	}

	e.KDCLogs = pick(p, f.KDCLogs != nil, f.KDCLogs, "kdc-log", p.get().KDCLogs, Value[[]string]{nil, BuiltIn})
	e.NoLoginRecordOK = pickPtr(p, f.NoLoginRecordOK, "no-login-record-ok", p.get().NoLoginRecordOK, d.NoLoginRecordOK)
	e.MinTGTRemaining = pickPtr(p, f.MinTGTRemaining, "min-tgt-remaining", p.get().MinTGTRemaining, d.MinTGTRemaining)
	e.TicketLifetime = pickPtr(p, f.TicketLifetime, "ticket-lifetime", p.get().TicketLifetime, d.TicketLifetime)
	e.Backend = pickPtr(p, f.Backend, "backend", p.get().Backend, d.Backend)
	e.Ledger = pickPtr(p, f.Ledger, "ledger", p.get().Ledger, d.Ledger)
	e.SecretStore = pickPtr(p, f.SecretStore, "secret-store", p.get().SecretStore, d.SecretStore)
	return e, nil
}

// get lets Resolve read settings of a nil policy (all unset).
func (p *Policy) get() *Policy {
	if p == nil {
		return &Policy{}
	}
	return p
}

func pick[T any](p *Policy, given bool, flag T, name string, s Setting[T], def Value[T]) Value[T] {
	switch {
	case given:
		return Value[T]{flag, flagSource(name)}
	case s.Set:
		return Value[T]{s.V, p.source(s.Line, s.Key)}
	}
	return def
}

func pickPtr[T any](p *Policy, flag *T, name string, s Setting[T], def Value[T]) Value[T] {
	var v T
	if flag != nil {
		v = *flag
	}
	return pick(p, flag != nil, v, name, s, def)
}

// limitsOf gives tier's limit, window and min-gap in cluster: the
// cluster's override, else the tier's, else the built-in tier default.
func (p *Policy) limitsOf(tier, cluster string) (Value[int], Value[time.Duration], Value[time.Duration]) {
	def, _ := rotate.TierLimit(rotate.Tier(tier))
	limit := Value[int]{def.Max, BuiltIn}
	window := Value[time.Duration]{def.Window, BuiltIn}
	gap := Value[time.Duration]{0, BuiltIn}
	var layers []Limits
	if t := p.get().tier(tier); t != nil {
		layers = append(layers, t.Limits)
	}
	if c := p.get().cluster(cluster); c != nil {
		if l, ok := c.Tiers[tier]; ok {
			layers = append(layers, l)
		}
	}
	for _, l := range layers {
		if l.Limit.Set {
			limit = Value[int]{l.Limit.V, p.source(l.Limit.Line, l.Limit.Key)}
		}
		if l.Window.Set {
			window = Value[time.Duration]{l.Window.V, p.source(l.Window.Line, l.Window.Key)}
		}
		if l.MinGap.Set {
			gap = Value[time.Duration]{l.MinGap.V, p.source(l.MinGap.Line, l.MinGap.Key)}
		}
	}
	return limit, window, gap
}

// tighterTier accepts --tier name in place of the policy's tier only when
// name is at least as strict in every rate value: an operator may be
// more careful than the policy, never less.
func (p *Policy) tighterTier(name string, e *Effective, cluster string) error {
	conflict := &ConflictError{Flag: "--tier " + name, Policy: fmt.Sprintf("%s is in tier %s, %s", e.Principal, e.Tier.V, e.Tier.Source),
		Hint: "drop --tier: the policy decides the tier; --tier may only name a tier at least as strict (lower limit, longer window and min-gap)"}
	if _, known := rotate.TierLimit(rotate.Tier(name)); !known && p.tier(name) == nil {
		conflict.Hint = "no tier " + name + " in the policy or built in; " + conflict.Hint
		return conflict
	}
	l, w, g := p.limitsOf(name, cluster)
	if l.V > e.Limit.V || w.V < e.Window.V || g.V < e.MinGap.V {
		return conflict
	}
	return nil
}

// rateFlags applies --max-per-window, --window and --min-gap; under a
// policy file each may only tighten.
func (p *Policy) rateFlags(f Flags, e *Effective) error {
	refuse := func(flag string, given, policy any, src, tighter string) error {
		return &ConflictError{Flag: fmt.Sprintf("%s %v", flag, given), Policy: fmt.Sprintf("%v for tier %s, %s", policy, e.Tier.V, src),
			Hint: "under a policy a rate flag may only tighten: a " + tighter + " " + flag + " is accepted, nothing looser"}
	}
	if f.MaxPerWindow != nil {
		if p != nil && *f.MaxPerWindow > e.Limit.V {
			return refuse("--max-per-window", *f.MaxPerWindow, e.Limit.V, e.Limit.Source, "lower")
		}
		e.Limit = Value[int]{*f.MaxPerWindow, flagSource("max-per-window")}
	}
	if f.Window != nil {
		if p != nil && *f.Window < e.Window.V {
			return refuse("--window", *f.Window, e.Window.V, e.Window.Source, "longer")
		}
		e.Window = Value[time.Duration]{*f.Window, flagSource("window")}
	}
	if f.MinGap != nil {
		if p != nil && *f.MinGap < e.MinGap.V {
			return refuse("--min-gap", *f.MinGap, e.MinGap.V, e.MinGap.Source, "longer")
		}
		e.MinGap = Value[time.Duration]{*f.MinGap, flagSource("min-gap")}
	}
	return nil
}
