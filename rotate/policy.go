package rotate

import (
	"time"

	"github.com/krbops/krbops/kdcops"
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
