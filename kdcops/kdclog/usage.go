package kdclog

import (
	"bytes"
	"hash/maphash"
	"math/bits"
	"runtime"
	"slices"
	"strings"
)

// MaxAddrs bounds the distinct addresses kept per principal (and per
// principal's failures since its last key change): enough to name the
// hosts, flat in memory however many there are.
const MaxAddrs = 64

// Principal is what the logs say about one principal. Times are Unix
// seconds, 0 when never.
//
// The field order is for the cache: on a fleet of principals each
// event's principal is a cache miss, and the fewer lines it touches the
// better. The struct is 256 bytes, a size class whose objects start on a
// 64-byte line, so the first 64 bytes (what a lookup and a client's
// ticket from a known address touch) are one line and a service's ticket
// touches one more.
type Principal struct {
	check   uint64 // the name's second hash (shard.get)
	addr0   uint64 // hash of Addrs[0]: most principals use one address
	hasAddr bool   // Addrs[0] and addr0 are set
	refused bool   // Usage.Keep refused it: not aggregated

	// As a client: tickets from AS exchanges (logins) and the TGS
	// exchanges it made for other services.
	AddrsTruncated bool // more addresses than MaxAddrs
	AS             int64
	FirstAS        int64
	LastAS         int64
	TGSAsked       int64
	LastTGSAsked   int64

	// As a service: tickets issued for it.
	TGS      int64
	FirstTGS int64
	LastTGS  int64

	LastFailure int64
	Name        string
	// Refused requests by the KDC's reason (PREAUTH_FAILED, ...).
	Failures map[string]int64

	Addrs []string // distinct addresses it was issued tickets from, at most MaxAddrs
	// Hashes of Addrs after the first: a repeat address, the usual case,
	// is found without touching the strings.
	addrHashes []uint64

	// Key changes seen (kadmind, kpasswd) and the refused logins after
	// the last one: the hosts still holding the old key.
	KeyChanges       int64
	LastKeyChange    int64
	FailedSince      int64 // refused logins after the last key change
	FailedSinceFirst int64
	FailedSinceLast  int64
	FailedSinceAddrs []string

	// Hashes of FailedSinceAddrs.
	failedHashes []uint64
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
	hash               uint64   // of the name: picks the shard, then the principal
	name, addr, status [2]int32 // start, end in arena
}

type batch struct {
	items []item
	arena []byte
	ps    []*Principal // each item's principal, nil when refused (shard.run)
}

type shard struct {
	in   chan *batch
	free chan *batch // every batch made, when not in use (as pipeline.block)
	made int         // batches made so far (push's own)
	cur  *batch
	// byHash finds a principal by its name's hash without reading a key
	// string (see get). Names whose first hash another name holds already
	// live in collided.
	byHash    hashTable
	collided  map[string]*Principal
	seed      maphash.Seed
	checkSeed maphash.Seed
	keep      func(string) bool
	done      chan struct{}
}

var krbtgt = []byte("krbtgt/")

// batchItems is how many items a shard takes at once.
const batchItems = 4096

// NewUsage returns an empty Usage whose shards run until Wait.
func NewUsage(keep func(string) bool) *Usage {
	n := min(runtime.GOMAXPROCS(0), 4)
	u := &Usage{Keep: keep, seed: maphash.MakeSeed()}
	for range n {
		sh := &shard{in: make(chan *batch, 2), free: make(chan *batch, 4), collided: map[string]*Principal{},
			seed: u.seed, checkSeed: maphash.MakeSeed(), keep: keep, done: make(chan struct{})}
		sh.cur, sh.made = &batch{}, 1
		go sh.run()
		u.shards = append(u.shards, sh)
	}
	return u
}

func (sh *shard) run() {
	defer close(sh.done)
	for b := range sh.in {
		// Two passes: first find every item's principal, then apply the
		// items. On a fleet of principals each lookup is a cache miss;
		// in a loop that does nothing else the CPU waits for many of them
		// at once, and the second pass finds the batch's principals in
		// the cache.
		b.ps = b.ps[:0]
		for i := range b.items {
			it := &b.items[i]
			b.ps = append(b.ps, sh.get(it.hash, b.arena[it.name[0]:it.name[1]]))
		}
		for i := range b.items {
			if p := b.ps[i]; p != nil {
				sh.apply(&b.items[i], p, b.arena)
			}
		}
		b.items, b.arena, b.ps = b.items[:0], b.arena[:0], b.ps[:0]
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
	h := maphash.Bytes(u.seed, name)
	sh := u.shards[h%uint64(len(u.shards))]
	b := sh.cur
	put := func(p []byte) [2]int32 {
		start := int32(len(b.arena))
		b.arena = append(b.arena, p...)
		return [2]int32{start, int32(len(b.arena))}
	}
	b.items = append(b.items, item{op: o, kind: k, t: t, hash: h, name: put(name), addr: put(addr), status: put(status)})
	if len(b.items) >= batchItems {
		sh.in <- b
		select {
		case sh.cur = <-sh.free:
		default:
			if sh.made < cap(sh.free) {
				sh.made++
				sh.cur = &batch{}
			} else {
				sh.cur = <-sh.free // the shard is working on the batches made
			}
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
		for _, sl := range sh.byHash.slots {
			if p := sl.p; p != nil && !p.refused {
				u.Principals[p.Name] = p
			}
		}
		for _, p := range sh.collided {
			if !p.refused {
				u.Principals[p.Name] = p
			}
		}
	}
}

// get returns name's aggregate, creating it; nil when keep refuses it.
// A principal is found by two 64-bit hashes of its name under different
// seeds, h (the map's key) and a check kept in the aggregate, so the name
// string, a cache miss of its own, is never read: two names alike in
// both hashes are a chance of about one in 2^128.
func (sh *shard) get(h uint64, name []byte) *Principal {
	check := maphash.Bytes(sh.checkSeed, name)
	p := sh.byHash.find(h)
	ok := p != nil
	if !ok || p.check != check {
		if ok {
			p, ok = sh.collided[string(name)]
		}
		if !ok {
			s := string(name)
			// A refusal is remembered too, so the filter runs once per principal.
			p = &Principal{Name: s, refused: sh.keep != nil && !sh.keep(s), check: check}
			if sh.byHash.find(h) != nil {
				sh.collided[s] = p
			} else {
				sh.byHash.insert(h, p)
			}
		}
	}
	if p.refused {
		return nil
	}
	return p
}

func (sh *shard) apply(it *item, p *Principal, arena []byte) {
	span := func(s [2]int32) []byte { return arena[s[0]:s[1]] }
	t, addr := it.t, span(it.addr)
	switch it.op {
	case opKeyChange:
		p.KeyChanges++
		p.LastKeyChange = max(p.LastKeyChange, t)
		p.FailedSince, p.FailedSinceFirst, p.FailedSinceLast, p.FailedSinceAddrs, p.failedHashes = 0, 0, 0, p.FailedSinceAddrs[:0], p.failedHashes[:0]
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
			if len(addr) > 0 {
				p.FailedSinceAddrs, p.failedHashes, _ = addAddr(p.FailedSinceAddrs, p.failedHashes, addr, maphash.Bytes(sh.seed, addr))
			}
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
		if len(addr) > 0 {
			switch h := maphash.Bytes(sh.seed, addr); {
			case !p.hasAddr:
				p.addr0, p.hasAddr, p.Addrs = h, true, append(p.Addrs, string(addr))
			case h != p.addr0:
				p.Addrs, p.addrHashes, over = addAddr(p.Addrs, p.addrHashes, addr, h)
			}
		}
		p.AddrsTruncated = p.AddrsTruncated || over
	case opServiceTGS:
		p.TGS++
		if p.FirstTGS == 0 || t < p.FirstTGS {
			p.FirstTGS = t
		}
		p.LastTGS = max(p.LastTGS, t)
	}
}

// addAddr adds addr, whose hash is h, to the set unless hashes hold h;
// over is true when the set is full and addr is new. Two addresses are
// the same when their 64-bit seeded hashes are: among the at most
// MaxAddrs of one principal a false match is about one in 10^15, and it
// would only undercount the hosts.
func addAddr(set []string, hashes []uint64, addr []byte, h uint64) (_ []string, _ []uint64, over bool) {
	if slices.Contains(hashes, h) {
		return set, hashes, false
	}
	if len(set) >= MaxAddrs {
		return set, hashes, true
	}
	return append(set, string(addr)), append(hashes, h), false
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
	slices.SortFunc(out, func(a, b *Principal) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// hashTable finds a principal by its name's hash: open addressing with
// linear probing in one array of (hash, principal) pairs, at most half
// full. A lookup is one cache line of the array where Go's map reads a
// group's control word and then its slot; on a fleet of principals each
// is a cache miss. The hash is already random, so the slot is its top
// bits (the low bits pick the shard and are the same in every entry).
type hashTable struct {
	slots []hashSlot // len a power of two; p nil: empty
	shift uint       // 64 - log2(len(slots))
	n     int
}

type hashSlot struct {
	h uint64
	p *Principal
}

// find returns the principal inserted with h, nil when none.
func (t *hashTable) find(h uint64) *Principal {
	if len(t.slots) == 0 {
		return nil
	}
	mask := uint64(len(t.slots) - 1)
	for i := h >> t.shift; ; i = (i + 1) & mask {
		if sl := &t.slots[i]; sl.p == nil || sl.h == h {
			return sl.p
		}
	}
}

// insert adds p under h, which find does not hold.
func (t *hashTable) insert(h uint64, p *Principal) {
	if 2*(t.n+1) > len(t.slots) {
		old := t.slots
		size := max(1024, 2*len(old))
		t.slots, t.shift = make([]hashSlot, size), uint(64-bits.TrailingZeros(uint(size)))
		for _, sl := range old {
			if sl.p != nil {
				t.place(sl.h, sl.p)
			}
		}
	}
	t.place(h, p)
	t.n++
}

func (t *hashTable) place(h uint64, p *Principal) {
	mask := uint64(len(t.slots) - 1)
	i := h >> t.shift
	for t.slots[i].p != nil {
		i = (i + 1) & mask
	}
	t.slots[i] = hashSlot{h, p}
}
