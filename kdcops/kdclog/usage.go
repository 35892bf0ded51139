package kdclog

import (
	"bytes"
	"hash/maphash"
	"runtime"
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
//
// The work is split over shards by principal, each with its own map and
// goroutine, so a busy log of 100,000 principals keeps both CPUs of a
// small host busy: per principal the order of events is kept, which is
// all the aggregates need. Add copies what it keeps of an event; call
// [Usage.Sorted] (or Wait) before reading Principals.
type Usage struct {
	// Keep, when set, selects the principals to aggregate (--principal);
	// the others cost one call each and no memory. It is called from
	// several goroutines.
	Keep func(principal string) bool
	// Principals holds every aggregated principal once Wait returned.
	Principals map[string]*Principal

	seed   maphash.Seed
	shards []*shard
	waited bool
}

// op is what one item does to one principal.
type op uint8

const (
	opKeyChange  op = iota + 1
	opFailure       // a refused request (AS: the client's, TGS: the service's)
	opClientAS      // a TGT issued to it
	opClientTGS     // a service ticket it asked for
	opServiceTGS    // a service ticket issued for it
)

// item is one op on one principal; its bytes are in the batch's arena.
type item struct {
	op                 op
	kind               Kind
	t                  int64
	name, addr, status [2]int32 // start, end in arena
}

type batch struct {
	items []item
	arena []byte
}

type shard struct {
	in   chan *batch
	free chan *batch
	cur  *batch
	m    map[string]*Principal
	keep func(string) bool
	done chan struct{}
}

var krbtgt = []byte("krbtgt/")

// batchItems is how many items a shard takes at once.
const batchItems = 4096

// NewUsage returns an empty Usage whose shards run until Wait.
func NewUsage(keep func(string) bool) *Usage {
	n := min(runtime.GOMAXPROCS(0), 4)
	u := &Usage{Keep: keep, seed: maphash.MakeSeed()}
	for range n {
		sh := &shard{in: make(chan *batch, 2), free: make(chan *batch, 3), m: map[string]*Principal{}, keep: keep, done: make(chan struct{})}
		sh.cur = &batch{}
		go sh.run()
		u.shards = append(u.shards, sh)
	}
	return u
}

func (sh *shard) run() {
	defer close(sh.done)
	for b := range sh.in {
		for i := range b.items {
			sh.apply(&b.items[i], b.arena)
		}
		b.items, b.arena = b.items[:0], b.arena[:0]
		select {
		case sh.free <- b:
		default:
		}
	}
}

func (u *Usage) push(o op, k Kind, t int64, name, addr, status []byte) {
	if len(name) == 0 || bytes.HasPrefix(name, krbtgt) {
		return
	}
	sh := u.shards[0]
	if len(u.shards) > 1 {
		sh = u.shards[maphash.Bytes(u.seed, name)%uint64(len(u.shards))]
	}
	b := sh.cur
	put := func(p []byte) [2]int32 {
		start := int32(len(b.arena))
		b.arena = append(b.arena, p...)
		return [2]int32{start, int32(len(b.arena))}
	}
	b.items = append(b.items, item{op: o, kind: k, t: t, name: put(name), addr: put(addr), status: put(status)})
	if len(b.items) >= batchItems {
		sh.in <- b
		select {
		case sh.cur = <-sh.free:
		default:
			sh.cur = &batch{}
		}
	}
}

// Add counts one event; the event may be reused once Add returns.
func (u *Usage) Add(ev *Event) {
	t := ev.Time
	switch ev.Kind {
	case KeyChange:
		u.push(opKeyChange, ev.Kind, t, ev.Client, ev.Addr, nil)
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
		u.push(opFailure, ev.Kind, t, who, ev.Addr, ev.Status)
		return
	}
	if ev.Kind == AS {
		u.push(opClientAS, AS, t, ev.Client, ev.Addr, nil)
		return
	}
	u.push(opClientTGS, TGS, t, ev.Client, ev.Addr, nil)
	u.push(opServiceTGS, TGS, t, ev.Service, nil, nil)
}

// Wait hands the last batches to the shards, waits for them and fills
// Principals. Add must not be called after it.
func (u *Usage) Wait() {
	if u.waited {
		return
	}
	u.waited = true
	for _, sh := range u.shards {
		if len(sh.cur.items) > 0 {
			sh.in <- sh.cur
		}
		close(sh.in)
	}
	u.Principals = map[string]*Principal{}
	for _, sh := range u.shards {
		<-sh.done
		for k, p := range sh.m {
			if p != nil {
				u.Principals[k] = p
			}
		}
	}
}

// get returns name's aggregate, creating it; nil when keep refuses it.
func (sh *shard) get(name []byte) *Principal {
	if p, ok := sh.m[string(name)]; ok {
		return p
	}
	s := string(name)
	if sh.keep != nil && !sh.keep(s) {
		// Remember the refusal so the filter runs once per principal.
		sh.m[s] = nil
		return nil
	}
	p := &Principal{Name: s}
	sh.m[s] = p
	return p
}

func (sh *shard) apply(it *item, arena []byte) {
	span := func(s [2]int32) []byte { return arena[s[0]:s[1]] }
	p := sh.get(span(it.name))
	if p == nil {
		return
	}
	t, addr := it.t, span(it.addr)
	switch it.op {
	case opKeyChange:
		p.KeyChanges++
		p.LastKeyChange = max(p.LastKeyChange, t)
		p.FailedSince, p.FailedSinceFirst, p.FailedSinceLast, p.FailedSinceAddrs = 0, 0, 0, p.FailedSinceAddrs[:0]
	case opFailure:
		status := span(it.status)
		if p.Failures == nil {
			p.Failures = map[string]int64{}
		}
		p.Failures[string(status)]++
		p.LastFailure = max(p.LastFailure, t)
		if it.kind == AS && p.LastKeyChange > 0 && t >= p.LastKeyChange && !bytes.Equal(status, stClientNotFound) {
			p.FailedSince++
			if p.FailedSinceFirst == 0 {
				p.FailedSinceFirst = t
			}
			p.FailedSinceLast = t
			p.FailedSinceAddrs, _ = addAddr(p.FailedSinceAddrs, addr)
		}
	case opClientAS, opClientTGS:
		if it.op == opClientAS {
			p.AS++
			if p.FirstAS == 0 || t < p.FirstAS {
				p.FirstAS = t
			}
			p.LastAS = max(p.LastAS, t)
		} else {
			p.TGSAsked++
			p.LastTGSAsked = max(p.LastTGSAsked, t)
		}
		var over bool
		p.Addrs, over = addAddr(p.Addrs, addr)
		p.AddrsTruncated = p.AddrsTruncated || over
	case opServiceTGS:
		p.TGS++
		if p.FirstTGS == 0 || t < p.FirstTGS {
			p.FirstTGS = t
		}
		p.LastTGS = max(p.LastTGS, t)
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

// Sorted waits for the shards (Wait) and returns the aggregated
// principals by name.
func (u *Usage) Sorted() []*Principal {
	u.Wait()
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
