package kdclog

import (
	"bytes"
	"slices"
)

// MaxAddrs bounds the distinct addresses kept per principal (and per
// principal's failures since its last key change): enough to name the
// hosts, flat in memory however many there are.
const MaxAddrs = 64

// Principal is what the logs say about one principal. Times are Unix
// seconds, 0 when never.
type Principal struct {
	Name string

	// As a client: tickets from AS exchanges (logins) and the TGS
	// exchanges it made for other services.
	AS             int64
	FirstAS        int64
	LastAS         int64
	TGSAsked       int64
	LastTGSAsked   int64
	Addrs          []string // distinct addresses it was issued tickets from, at most MaxAddrs
	AddrsTruncated bool     // more addresses than MaxAddrs

	// As a service: tickets issued for it.
	TGS      int64
	FirstTGS int64
	LastTGS  int64

	// Refused requests by the KDC's reason (PREAUTH_FAILED, ...).
	Failures    map[string]int64
	LastFailure int64

	// Key changes seen (kadmind, kpasswd) and the refused logins after
	// the last one: the hosts still holding the old key.
	KeyChanges       int64
	LastKeyChange    int64
	FailedSince      int64 // refused logins after the last key change
	FailedSinceFirst int64
	FailedSinceLast  int64
	FailedSinceAddrs []string
}

// Client reports whether the principal logged in (an AS ticket was issued).
func (p *Principal) Client() bool { return p.AS > 0 }

// Server reports whether tickets were issued for it as a service.
func (p *Principal) Server() bool { return p.TGS > 0 }

// LastUsed is its last successful use as client or server.
func (p *Principal) LastUsed() int64 { return max(p.LastAS, p.LastTGS, p.LastTGSAsked) }

// Usage aggregates events per principal. Feed it events in time order
// (a [Merged] read): the failures after a key change depend on it.
type Usage struct {
	// Keep, when set, selects the principals to aggregate (--principal);
	// the others cost one call per event and no memory.
	Keep       func(principal string) bool
	Principals map[string]*Principal
}

// NewUsage returns an empty Usage.
func NewUsage(keep func(string) bool) *Usage {
	return &Usage{Keep: keep, Principals: map[string]*Principal{}}
}

var krbtgt = []byte("krbtgt/")

// get returns name's aggregate, creating it; nil when Keep refuses it or
// it is the realm's own krbtgt.
func (u *Usage) get(name []byte) *Principal {
	if len(name) == 0 || bytes.HasPrefix(name, krbtgt) {
		return nil
	}
	if p, ok := u.Principals[string(name)]; ok {
		return p
	}
	s := string(name)
	if u.Keep != nil && !u.Keep(s) {
		// Remember the refusal so the filter runs once per principal.
		u.Principals[s] = nil
		return nil
	}
	p := &Principal{Name: s}
	u.Principals[s] = p
	return p
}

// Add counts one event.
func (u *Usage) Add(ev *Event) {
	t := ev.Time
	switch ev.Kind {
	case KeyChange:
		if p := u.get(ev.Client); p != nil {
			p.KeyChanges++
			p.LastKeyChange = max(p.LastKeyChange, t)
			p.FailedSince, p.FailedSinceFirst, p.FailedSinceLast, p.FailedSinceAddrs = 0, 0, 0, p.FailedSinceAddrs[:0]
		}
		return
	case AS, TGS:
	default:
		return
	}
	if !ev.OK() {
		// A refused TGS is the service's failure (it does not exist, or
		// its key is gone); a refused AS is the client's.
		who := ev.Client
		if ev.Kind == TGS {
			who = ev.Service
		}
		p := u.get(who)
		if p == nil {
			return
		}
		if p.Failures == nil {
			p.Failures = map[string]int64{}
		}
		p.Failures[string(ev.Status)]++
		p.LastFailure = max(p.LastFailure, t)
		if ev.Kind == AS && p.LastKeyChange > 0 && t >= p.LastKeyChange && !bytes.Equal(ev.Status, stClientNotFound) {
			p.FailedSince++
			if p.FailedSinceFirst == 0 {
				p.FailedSinceFirst = t
			}
			p.FailedSinceLast = t
			p.FailedSinceAddrs, _ = addAddr(p.FailedSinceAddrs, ev.Addr)
		}
		return
	}
	if c := u.get(ev.Client); c != nil {
		if ev.Kind == AS {
			c.AS++
			if c.FirstAS == 0 || t < c.FirstAS {
				c.FirstAS = t
			}
			c.LastAS = max(c.LastAS, t)
		} else {
			c.TGSAsked++
			c.LastTGSAsked = max(c.LastTGSAsked, t)
		}
		var over bool
		c.Addrs, over = addAddr(c.Addrs, ev.Addr)
		c.AddrsTruncated = c.AddrsTruncated || over
	}
	if ev.Kind == TGS {
		if s := u.get(ev.Service); s != nil {
			s.TGS++
			if s.FirstTGS == 0 || t < s.FirstTGS {
				s.FirstTGS = t
			}
			s.LastTGS = max(s.LastTGS, t)
		}
	}
}

// addAddr adds addr to the set unless it is there; over is true when the
// set is full and addr is new.
func addAddr(set []string, addr []byte) (_ []string, over bool) {
	if len(addr) == 0 {
		return set, false
	}
	for _, a := range set {
		if a == string(addr) {
			return set, false
		}
	}
	if len(set) >= MaxAddrs {
		return set, true
	}
	return append(set, string(addr)), false
}

// Sorted returns the aggregated principals by name.
func (u *Usage) Sorted() []*Principal {
	out := make([]*Principal, 0, len(u.Principals))
	for _, p := range u.Principals {
		if p != nil {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *Principal) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}
