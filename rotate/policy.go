package rotate

import (
	"errors"
	"github.com/krbops/krbops/internal/shquote"
	"path"
	"strings"
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
