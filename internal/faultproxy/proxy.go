package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/spawn"
)

// Protocol is how requests and replies are framed over TCP.
type Protocol int

const (
	// Kerberos: a 4-byte big-endian length, then the message (RFC 4120
	// section 7.2.2, RFC 3244). KDC and kpasswd; TCP and UDP.
	Kerberos Protocol = iota
	// RPC: ONC RPC record marking (RFC 5531 section 11). kadmind; TCP only.
	RPC
)

func (p Protocol) String() string {
	switch p {
	case Kerberos:
		return "kerberos"
	case RPC:
		return "rpc"
	}
	return "protocol(" + strconv.Itoa(int(p)) + ")"
}

// Kind is what the proxy does to one exchange; see the package
// documentation for each at the byte level.
type Kind int

const (
	Forward        Kind = iota // forward both ways, faithfully
	DropReplyClose             // forward the request, swallow the reply, close (FIN)
	DropReplyHang              // forward the request, swallow the reply, hold the connection silent
	ResetMidReply              // forward the request, deliver Fault.N bytes of the reply, reset (RST)
	Delay                      // hold the request (or with Fault.OnReply the reply) for Fault.D
	Refuse                     // forward nothing, reset at once
	Blackhole                  // forward nothing, hold the connection silent
)

var kindNames = [...]string{
	Forward:        "forward",
	DropReplyClose: "drop-reply-close",
	DropReplyHang:  "drop-reply-hang",
	ResetMidReply:  "reset-mid-reply",
	Delay:          "delay",
	Refuse:         "refuse",
	Blackhole:      "blackhole",
}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Fault is a Kind with its parameters. The zero value forwards.
type Fault struct {
	Kind Kind
	// N is, for ResetMidReply, how many bytes of the reply as on the wire
	// (framing included) reach the client before the reset.
	N int
	// D is, for Delay, how long the hold lasts; zero or negative holds
	// until Release or Close, so a test need not guess a duration.
	D time.Duration
	// OnReply makes a Delay hold the server's reply instead of the
	// client's request.
	OnReply bool
}

func (f Fault) String() string {
	switch f.Kind {
	case ResetMidReply:
		return fmt.Sprintf("%s(%d bytes)", f.Kind, f.N)
	case Delay:
		what := "request"
		if f.OnReply {
			what = "reply"
		}
		if f.D <= 0 {
			return fmt.Sprintf("%s(%s until released)", f.Kind, what)
		}
		return fmt.Sprintf("%s(%s %v)", f.Kind, what, f.D)
	}
	return f.Kind.String()
}

// Rule chooses the fault of each exchange as it begins.
type Rule struct {
	Fault Fault
	// Times, when positive, applies Fault to the next Times matching
	// exchanges only; the rule then reverts to forwarding. Zero applies
	// it until the rule is changed.
	Times int
	// Match, when set, limits the rule to exchanges whose request it
	// accepts; others are forwarded and do not count towards Times. It
	// gets the request without framing (the Kerberos message, the RPC
	// record without its marks, the UDP datagram) and must not keep it.
	// It runs with the proxy's lock held: it must not call the Proxy.
	Match func(req []byte) bool
}

// Outcome is how an exchange ended.
type Outcome int

const (
	Pending           Outcome = iota // not finished
	Delivered                        // the reply was written to the client in full
	ReplyDropped                     // DropReplyClose, DropReplyHang
	ReplyReset                       // ResetMidReply (UDP: a truncated datagram)
	Refused                          // Refuse (UDP: dropped)
	Blackholed                       // Blackhole
	ClientGone                       // the client left before its reply could be written
	ServerClosed                     // the server closed or failed before a full reply
	ServerUnreachable                // the server could not be reached
	ProxyClosed                      // Close ended the exchange
)

var outcomeNames = [...]string{
	Pending:           "pending",
	Delivered:         "delivered",
	ReplyDropped:      "reply-dropped",
	ReplyReset:        "reply-reset",
	Refused:           "refused",
	Blackholed:        "blackholed",
	ClientGone:        "client-gone",
	ServerClosed:      "server-closed",
	ServerUnreachable: "server-unreachable",
	ProxyClosed:       "proxy-closed",
}

func (o Outcome) String() string {
	if o >= 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Exchange is the record of one exchange.
type Exchange struct {
	ID        int    // from 1, in the order exchanges began
	Network   string // "tcp" or "udp"
	Conn      int    // the client connection (TCP) or client address (UDP), from 1
	Fault     Fault  // what the rule chose; Forward for none
	Request   int    // request bytes on the wire, framing included
	Forwarded bool   // the request was written in full to the server
	Reply     int    // reply bytes on the wire, framing included; 0 until read
	Replied   bool   // a full reply came from the server
	Sent      int    // reply bytes written to the client
	Outcome   Outcome
}

// exchange is an Exchange with the proxy's own state of it.
type exchange struct {
	Exchange
	// release ends the exchange's hold: Release's channel as of when
	// the request (a request-side hold) or the reply (a reply-side hold)
	// was counted, so a Release after Wait has seen that count always
	// reaches it. Guarded by Proxy.mu.
	release chan struct{}
}

// Stats are the proxy's counters; see the package documentation for what
// each guarantees.
type Stats struct {
	Conns     int // TCP connections accepted plus UDP client addresses seen
	Requests  int // exchanges begun
	Forwarded int // requests written in full to the server
	Replies   int // complete replies read from the server
	Delivered int // replies written in full to the client
	Faulted   int // exchanges whose fault was not Forward
	Done      int // exchanges finished
}

// Options configure Start.
type Options struct {
	// Upstream is the real server, host:port. Required.
	Upstream string
	// Protocol is the TCP framing; Kerberos by default.
	Protocol Protocol
	// Network is "tcp", "udp", or "" for both on the same port (Kerberos;
	// with RPC, "" means TCP only).
	Network string
	// Listen is the address to listen on; a free loopback port from
	// spawn.FreePort when empty.
	Listen string
	// DialTimeout bounds a TCP dial of Upstream (default 10s).
	DialTimeout time.Duration
	// Logf, when set, gets one line per finished exchange.
	Logf func(format string, a ...any)
}

// Proxy is a running fault-injecting proxy. All methods are safe for
// concurrent use.
type Proxy struct {
	opts Options
	addr string
	tcp  net.Listener
	udp  net.PacketConn

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	rule      Rule
	stats     Stats
	exchanges []*exchange
	changed   chan struct{} // closed and replaced on every change of stats
	release   chan struct{} // closed and replaced by Release
	conns     map[net.Conn]struct{}
	sessions  map[string]*udpSession
	closed    bool
	closeOnce sync.Once
}

// Start listens on a loopback port (TCP, UDP or both) and forwards to
// opts.Upstream until Close.
func Start(opts Options) (*Proxy, error) {
	if opts.Upstream == "" {
		return nil, errors.New("faultproxy: Options.Upstream is empty")
	}
	if _, _, err := net.SplitHostPort(opts.Upstream); err != nil {
		return nil, fmt.Errorf("faultproxy: upstream %q: %w", opts.Upstream, err)
	}
	var wantTCP, wantUDP bool
	switch opts.Network {
	case "":
		wantTCP, wantUDP = true, opts.Protocol == Kerberos
	case "tcp":
		wantTCP = true
	case "udp":
		if opts.Protocol != Kerberos {
			return nil, fmt.Errorf("faultproxy: protocol %s has no UDP framing", opts.Protocol)
		}
		wantUDP = true
	default:
		return nil, fmt.Errorf("faultproxy: network %q (want tcp, udp or empty for both)", opts.Network)
	}
	if opts.Protocol != Kerberos && opts.Protocol != RPC {
		return nil, fmt.Errorf("faultproxy: unknown %s", opts.Protocol)
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	p := &Proxy{
		opts:     opts,
		changed:  make(chan struct{}),
		release:  make(chan struct{}),
		conns:    map[net.Conn]struct{}{},
		sessions: map[string]*udpSession{},
	}
	if err := p.listen(wantTCP, wantUDP); err != nil {
		return nil, err
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if p.tcp != nil {
		p.wg.Add(1)
		go p.acceptTCP()
	}
	if p.udp != nil {
		p.wg.Add(1)
		go p.serveUDP()
	}
	return p, nil
}

func (p *Proxy) listen(wantTCP, wantUDP bool) error {
	var last error
	for range 5 {
		addr := p.opts.Listen
		if addr == "" {
			port, err := spawn.FreePort()
			if err != nil {
				return fmt.Errorf("faultproxy: %w", err)
			}
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		}
		var tl net.Listener
		var ul net.PacketConn
		var err error
		if wantTCP {
			tl, err = net.Listen("tcp", addr)
		}
		if err == nil && wantUDP {
			if tl != nil {
				addr = tl.Addr().String() // a port of 0 is now chosen
			}
			ul, err = net.ListenPacket("udp", addr)
		}
		if err == nil {
			p.tcp, p.udp = tl, ul
			if tl != nil {
				p.addr = tl.Addr().String()
			} else {
				p.addr = ul.LocalAddr().String()
			}
			return nil
		}
		if tl != nil {
			tl.Close()
		}
		last = err
		if p.opts.Listen != "" {
			break // the caller's address: no other to try
		}
	}
	return fmt.Errorf("faultproxy: listen: %w", last)
}

// ForTest starts a proxy for t and closes it in t.Cleanup.
func ForTest(t testing.TB, opts Options) *Proxy {
	t.Helper()
	p, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("faultproxy: close: %v", err)
		}
	})
	return p
}

// Addr is the proxy's address, 127.0.0.1:port, for TCP and UDP alike.
func (p *Proxy) Addr() string { return p.addr }

// Upstream is the real server's address.
func (p *Proxy) Upstream() string { return p.opts.Upstream }

// Set applies f to every exchange that begins from now on; Set(Fault{})
// restores faithful forwarding.
func (p *Proxy) Set(f Fault) { p.SetRule(Rule{Fault: f}) }

// Once applies f to the next n exchanges only (n < 1 counts as 1), then
// forwards faithfully, so a retry or resume goes through.
func (p *Proxy) Once(f Fault, n int) { p.SetRule(Rule{Fault: f, Times: max(n, 1)}) }

// SetRule replaces the current rule. Exchanges already begun keep the
// fault they were given.
func (p *Proxy) SetRule(r Rule) {
	p.mu.Lock()
	p.rule = r
	p.mu.Unlock()
}

// Rule returns the current rule (Times is what is left of it).
func (p *Proxy) Rule() Rule {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rule
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Exchanges returns a copy of every exchange's record, in the order they
// began.
func (p *Proxy) Exchanges() []Exchange {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Exchange, len(p.exchanges))
	for i, e := range p.exchanges {
		out[i] = e.Exchange
	}
	return out
}

// Wait blocks until cond holds for the counters, and returns them; it
// returns ctx's error (with the last counters) if ctx ends first. cond is
// called with the proxy's lock held: it must only look at its argument.
func (p *Proxy) Wait(ctx context.Context, cond func(Stats) bool) (Stats, error) {
	for {
		p.mu.Lock()
		s, ch := p.stats, p.changed
		ok := cond(s)
		p.mu.Unlock()
		if ok {
			return s, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s, fmt.Errorf("faultproxy: waiting for the counters (now %+v): %w", s, ctx.Err())
		}
	}
}

// Release ends every hold in progress now: a delayed request is forwarded,
// a delayed reply written, and a connection held by DropReplyHang or
// Blackhole closed. A hold counts as in progress from the moment its
// exchange's request (Delay of the request, Blackhole) or reply (Delay of
// the reply, DropReplyHang) is counted in Stats, even if the proxy's
// goroutine has not reached it yet: after Wait has seen that count,
// Release never misses it. Later holds are not affected.
func (p *Proxy) Release() {
	p.mu.Lock()
	close(p.release)
	p.release = make(chan struct{})
	p.mu.Unlock()
}

// Close stops listening, ends every connection and hold (held requests are
// not forwarded) and waits for the proxy's goroutines. It is idempotent.
func (p *Proxy) Close() error {
	var err error
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		conns := make([]net.Conn, 0, len(p.conns))
		for c := range p.conns {
			conns = append(conns, c)
		}
		var ups []net.Conn
		for _, s := range p.sessions {
			ups = append(ups, s.up)
		}
		p.mu.Unlock()
		p.cancel()
		var errs []error
		if p.tcp != nil {
			errs = append(errs, p.tcp.Close())
		}
		if p.udp != nil {
			errs = append(errs, p.udp.Close())
		}
		for _, c := range conns {
			c.Close()
		}
		for _, c := range ups {
			c.Close()
		}
		p.wg.Wait()
		err = errors.Join(errs...)
	})
	return err
}

// track registers c to be closed by Close; false (and c closed) when the
// proxy is already closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// bump records a change of the counters; p.mu must be held.
func (p *Proxy) bump() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Proxy) newConn() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Conns++
	p.bump()
	return p.stats.Conns
}

// begin starts an exchange for a request read in full and picks its fault.
func (p *Proxy) begin(network string, conn int, wire, msg []byte) *exchange {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rule
	var f Fault
	if r.Match == nil || r.Match(msg) {
		f = r.Fault
		if p.rule.Times > 0 {
			p.rule.Times--
			if p.rule.Times == 0 {
				p.rule = Rule{}
			}
		}
	}
	p.stats.Requests++
	if f.Kind != Forward {
		p.stats.Faulted++
	}
	e := &exchange{Exchange: Exchange{ID: p.stats.Requests, Network: network, Conn: conn, Fault: f, Request: len(wire)}, release: p.release}
	p.exchanges = append(p.exchanges, e)
	p.bump()
	return e
}

func (p *Proxy) forwarded(e *exchange) {
	p.mu.Lock()
	e.Forwarded = true
	p.stats.Forwarded++
	p.bump()
	p.mu.Unlock()
}

func (p *Proxy) replied(e *exchange, n int) {
	p.mu.Lock()
	p.stats.Replies++
	if e != nil {
		e.Replied, e.Reply, e.release = true, n, p.release
	}
	p.bump()
	p.mu.Unlock()
}

// sent records n reply bytes written to the client; full when that was
// the whole reply.
func (p *Proxy) sent(e *exchange, n int, full bool) {
	p.mu.Lock()
	if e != nil {
		e.Sent += n
	}
	if full {
		p.stats.Delivered++
	}
	p.bump()
	p.mu.Unlock()
}

func (p *Proxy) finish(e *exchange, o Outcome) {
	p.mu.Lock()
	if e.Outcome != Pending {
		p.mu.Unlock()
		return
	}
	e.Outcome = o
	p.stats.Done++
	p.bump()
	rec := e.Exchange
	p.mu.Unlock()
	if p.opts.Logf != nil {
		p.opts.Logf("faultproxy %s: %s#%d exchange %d (%s): request %d bytes, forwarded %v, reply %d bytes, sent %d: %s",
			p.addr, rec.Network, rec.Conn, rec.ID, rec.Fault, rec.Request, rec.Forwarded, rec.Reply, rec.Sent, rec.Outcome)
	}
}

// holdEnd is why a hold ended.
type holdEnd int

const (
	holdElapsed holdEnd = iota // its duration passed, or Release
	holdGone                   // the client left
	holdClosed                 // Close
)

// hold holds exchange e until d passes (d <= 0: no timer), Release, gone
// (nil: not watched) or Close. A client that left wins over an elapsed
// timer or Release that became ready at the same moment.
func (p *Proxy) hold(e *exchange, d time.Duration, gone <-chan struct{}) holdEnd {
	p.mu.Lock()
	rel := e.release
	p.mu.Unlock()
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-timer:
	case <-rel:
	case <-gone:
		return holdGone
	case <-p.ctx.Done():
		return holdClosed
	}
	if p.ctx.Err() != nil {
		return holdClosed
	}
	select {
	case <-gone:
		return holdGone
	default:
		return holdElapsed
	}
}
