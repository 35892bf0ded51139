package rotate

import (
	"context"
	"errors"
	"path"
	"strings"
	"time"

	"github.com/krbops/krbops/internal/shquote"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
)

// Tier is a principal's blast-radius class: it sets how many of its kind
// may rotate per window.
type Tier string

// Tiers.
const (
	TierStandard     Tier = "standard"
	TierControlPlane Tier = "control-plane"
)

// Limit is a tier's rate-limit default: at most Max rotations per
// (cluster, role) in any Window.
type Limit struct {
	Max    int
	Window time.Duration
}

// tierLimits: control-plane principals (KDC, IdP, orchestration) take a
// whole cluster down when they break, so fewer of them may change per
// window.
var tierLimits = map[Tier]Limit{
	TierStandard:     {20, time.Hour},
	TierControlPlane: {2, 6 * time.Hour},
}

// TierLimit returns the rate-limit default of tier, and false for a tier
// krbops does not know.
func TierLimit(tier Tier) (Limit, bool) {
	l, ok := tierLimits[tier]
	return l, ok
}

// DefaultTicketLifetime is the realm's max ticket lifetime as far as this
// host knows: krb5.conf's ticket_lifetime, else MIT's default of a day.
// Phase 2 of a server rotation waits this long for tickets under the old
// kvno to expire.
func DefaultTicketLifetime(cfg *kdcops.Config) time.Duration {
	if cfg != nil && cfg.LibDefaults.TicketLifetime > 0 {
		return cfg.LibDefaults.TicketLifetime
	}
	return 24 * time.Hour
}

// shellQuote quotes s for a POSIX shell when it needs it (internal/shquote),
// so a hint's command can be pasted as it is: a principal read from a
// keytab can carry $(…) or ;.
func shellQuote(s string) string { return shquote.Quote(s) }

// BuiltinDeny are principals no rotation may touch, whatever the flags:
// the realm's own keys. Changing krbtgt's key invalidates every ticket of
// the realm; kadmin/*, changepw/* and kiprop/* are the admin and
// propagation services, K/M the master key. There is no override.
var BuiltinDeny = []string{"krbtgt/*", "kadmin/*", "K/M", "kiprop/*", "changepw/*"}

// Denied returns the deny pattern principal matches, if any: a built-in
// one or one of extra. A pattern is matched (path.Match syntax, case
// insensitive, as AD's names are) against the principal's name without
// its realm, and against the whole principal when it names a realm.
func Denied(principal string, extra []string) (pattern string, denied bool) {
	name, _ := kdcops.SplitPrincipal(principal)
	for _, list := range [][]string{BuiltinDeny, extra} {
		for _, p := range list {
			subject := name
			if strings.Contains(p, "@") {
				subject = principal
			}
			if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(subject)); ok {
				return p, true
			}
		}
	}
	return "", false
}

// ValidDenyPattern reports whether p is a pattern Denied can match with.
func ValidDenyPattern(p string) error {
	if strings.TrimSpace(p) == "" {
		return errors.New("empty deny pattern")
	}
	_, err := path.Match(p, "")
	return err
}

// StepPolicy is the dry-run plan's last step: the effective policy.
const StepPolicy = "plan.policy"

// PolicySetting is one value of the effective policy and its source
// ("flag --x", "policy FILE:LINE (KEY)", "built-in default").
type PolicySetting struct{ Key, Value, Source string }

// AllowlistDecision is a policy file's verdict on the rotation's cluster.
type AllowlistDecision struct {
	Allowed bool
	Source  string
}

func (d *AllowlistDecision) result(cluster string) runbook.Result {
	ev := runbook.Evidence{"source": d.Source}
	if d.Allowed {
		return runbook.Passf("cluster %s is allowlisted by %s", cluster, d.Source).With(ev)
	}
	return runbook.Failf("cluster %s is not cleared for rotation: %s", cluster, d.Source).With(ev).
		WithHint("roll out cluster by cluster: set clusters.%s.allowlisted: true in the policy when its turn comes", cluster)
}

// policyStep reports the effective policy: one info finding per value
// (rule policy.KEY), so every output format shows the section, and the
// step's evidence maps each key to its value and source.
func (r *Rotation) policyStep() runbook.Step {
	return runbook.Step{ID: StepPolicy, Title: "effective policy", Run: func(context.Context, *runbook.State) runbook.Result {
		ev := runbook.Evidence{}
		var fs []runbook.Finding
		tier, src := "", ""
		for _, s := range r.Policy {
			ev[s.Key] = map[string]any{"value": s.Value, "source": s.Source}
			fs = append(fs, runbook.Finding{Rule: "policy." + s.Key, Severity: runbook.SeverityInfo,
				Message: s.Key + " " + s.Value + ", from " + s.Source, Evidence: runbook.Evidence{"value": s.Value, "source": s.Source}})
			if s.Key == "tier" {
				tier, src = s.Value, s.Source
			}
		}
		res := runbook.Passf("%s is in tier %s (%s)", r.Principal, tier, src).With(ev)
		res.Findings = fs
		return res
	}}
}
