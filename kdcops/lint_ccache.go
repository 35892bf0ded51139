package kdcops

import (
	"github.com/krbops/krbops/internal/shquote"
	"os"
	"strings"
	"time"
)

// startSlack is how far a TGT's start time may lie ahead of this host's
// clock before CC009 fires: the KDC stamps whole seconds, so a second or
// two is rounding, not skew.
const startSlack = 5 * time.Second

// maxListed bounds the lists in evidence (servers, principals) so one odd
// file cannot produce a megabyte of JSON.
const maxListed = 20

// commandOr is cmd, or prose when shquote refused to build a command from
// a value a terminal would not show as it is.
func commandOr(cmd, prose string) string {
	if cmd == "" {
		return prose
	}
	return cmd
}

// CCacheAccessFindings checks the cache file's mode and owner (CC002,
// CC003).
func CCacheAccessFindings(path string, fi os.FileInfo, o LintOptions) []Finding {
	f := findings{rules: o.Rules, file: path}
	accessFindings(&f, "ccache", fi, o.UID)
	return f.list
}

// LintCCache applies the ticket rules CC004 to CC011 to a parsed cache.
func LintCCache(path string, cc *CCache, o LintOptions) []Finding {
	f := findings{rules: o.Rules, file: path}
	now := o.now()
	if o.Principal != "" && !matchPrincipal(cc.Principal, o.Principal) {
		f.add("CC011", cc.Principal, commandOr(shquote.Command("kinit", o.Principal), "kinit as the expected principal")+" (or point --ccache at the cache that holds it)",
			map[string]any{"expected": o.Principal, "default_principal": cc.Principal},
			"default principal is %s, expected %s", cc.Principal, o.Principal)
	}

	var weak []string
	var weakServers []string
	seen := map[string]bool{}
	for _, cr := range cc.Creds {
		if WeakEnctype(cr.SessionEnctype) {
			if n := EnctypeName(cr.SessionEnctype); !seen[n] {
				seen[n] = true
				weak = append(weak, n)
			}
			if len(weakServers) < maxListed {
				weakServers = append(weakServers, cr.Server)
			}
		}
	}
	if len(weak) > 0 {
		f.add("CC010", cc.Principal, "",
			map[string]any{"enctypes": weak, "servers": weakServers},
			"session keys use weak enctype %s (%s)", strings.Join(weak, ", "), strings.Join(weakServers, ", "))
	}

	tgt, ok := cc.TGT()
	if !ok {
		servers := make([]string, 0, min(len(cc.Creds), maxListed))
		for _, cr := range cc.Creds[:min(len(cc.Creds), maxListed)] {
			servers = append(servers, cr.Server)
		}
		f.add("CC004", cc.Principal, commandOr(shquote.Command("kinit", cc.Principal), "kinit as the cache's principal")+" to get a TGT for its realm",
			map[string]any{"tickets": len(cc.Creds), "servers": servers, "default_principal": cc.Principal},
			"no TGT krbtgt/%s@%s in the cache (%d other tickets)", cc.Realm, cc.Realm, len(cc.Creds))
		return f.list
	}

	remaining := tgt.EndTime.Sub(now)
	ev := map[string]any{
		"server":                tgt.Server,
		"expires_at":            tgt.EndTime,
		"remaining_seconds":     remaining.Round(time.Second).Seconds(),
		"min_remaining_seconds": o.MinRemaining.Seconds(),
	}
	if remaining <= 0 {
		f.add("CC005", cc.Principal, "", ev, "TGT expired %s ago (at %s)",
			HumanDuration(-remaining), tgt.EndTime.UTC().Format(time.RFC3339))
		return f.list
	}
	if remaining < o.MinRemaining {
		f.add("CC006", cc.Principal, "", ev, "TGT expires in %s (at %s), less than --min-remaining %s",
			HumanDuration(remaining), tgt.EndTime.UTC().Format(time.RFC3339), HumanDuration(o.MinRemaining))
	}

	if tgt.Flags&FlagRenewable == 0 || tgt.RenewTill.IsZero() {
		f.add("CC007", cc.Principal, "", map[string]any{"server": tgt.Server, "expires_at": tgt.EndTime},
			"TGT is not renewable; it ends at %s", tgt.EndTime.UTC().Format(time.RFC3339))
	} else if renewLeft := tgt.RenewTill.Sub(now); renewLeft < o.MinRemaining {
		f.add("CC008", cc.Principal, "", map[string]any{
			"server":                  tgt.Server,
			"renew_until":             tgt.RenewTill,
			"renew_remaining_seconds": renewLeft.Round(time.Second).Seconds(),
			"min_remaining_seconds":   o.MinRemaining.Seconds(),
		}, "TGT can be renewed only until %s (in %s), less than --min-remaining %s",
			tgt.RenewTill.UTC().Format(time.RFC3339), HumanDuration(renewLeft), HumanDuration(o.MinRemaining))
	}

	// A postdated ticket starts in the future on purpose.
	if start := tgt.Start(); tgt.Flags&(FlagPostdated|FlagInvalid) == 0 && start.Sub(now) > startSlack {
		ahead := start.Sub(now)
		ev := map[string]any{"server": tgt.Server, "starts_at": start, "ahead_seconds": ahead.Round(time.Second).Seconds()}
		if cc.HasKDCOffset {
			ev["kdc_offset_seconds"] = cc.KDCOffset.Seconds()
		}
		f.add("CC009", cc.Principal, "", ev,
			"TGT starts at %s, %s ahead of this host's clock", start.UTC().Format(time.RFC3339), HumanDuration(ahead))
	}
	return f.list
}
