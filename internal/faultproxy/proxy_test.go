package faultproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/spawn"
)

// No test here depends on how long anything takes: the proxy's state is
// awaited with Proxy.Wait, and deadlines only bound a test that would
// otherwise hang, or stand for a client's own timeout where the proxy is
// known to write nothing.

// safety bounds every wait of a test; it is never what a test asserts on.
const safety = 30 * time.Second

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), safety)
	t.Cleanup(cancel)
	return c
}

// echo is a tiny server on one loopback port, TCP and UDP, framed like
// the proxy's protocol, that answers each request msg with "re:"+msg. It
// writes RPC replies as two fragments to exercise record reassembly.
type echo struct {
	addr  string
	proto Protocol
	got   chan []byte // each request message (framing removed) it read

	mu    sync.Mutex
	conns int // TCP connections accepted
	wire  [][]byte
}

func startEcho(t *testing.T, proto Protocol) *echo {
	t.Helper()
	port, err := spawn.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	e := &echo{addr: "127.0.0.1:" + strconv.Itoa(port), proto: proto, got: make(chan []byte, 1000)}
	tl, err := net.Listen("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	ul, err := net.ListenPacket("udp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var cmu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		tl.Close()
		ul.Close()
		cmu.Lock()
		for _, c := range open {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns++
			e.mu.Unlock()
			cmu.Lock()
			open = append(open, c)
			cmu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					wire, msg, err := serverRead(br, proto)
					if err != nil {
						return
					}
					e.mu.Lock()
					e.wire = append(e.wire, wire)
					e.mu.Unlock()
					e.got <- msg
					if _, err := c.Write(frameMsg(proto, append([]byte("re:"), msg...), proto == RPC)); err != nil {
						return
					}
				}
			}()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			msg := append([]byte(nil), buf[:n]...)
			e.got <- msg
			ul.WriteTo(append([]byte("re:"), msg...), from)
		}
	}()
	return e
}

func (e *echo) received() int { return len(e.got) }

func (e *echo) accepted() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.conns
}

// serverRead reads one framed message independently of the proxy's own
// framer, so the proxy is checked against a second implementation.
func serverRead(r *bufio.Reader, proto Protocol) (wire, msg []byte, err error) {
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, nil, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		last := true
		if proto == RPC {
			last, n = n>>31 == 1, n&^(1<<31)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, nil, err
		}
		wire = append(append(wire, hdr[:]...), body...)
		msg = append(msg, body...)
		if last {
			return wire, msg, nil
		}
	}
}

// frameMsg frames msg; split writes an RPC record as two fragments.
func frameMsg(proto Protocol, msg []byte, split bool) []byte {
	var out []byte
	if proto == Kerberos {
		out = binary.BigEndian.AppendUint32(out, uint32(len(msg)))
		return append(out, msg...)
	}
	parts := [][]byte{msg}
	if split && len(msg) > 1 {
		parts = [][]byte{msg[:len(msg)/2], msg[len(msg)/2:]}
	}
	for i, p := range parts {
		mark := uint32(len(p))
		if i == len(parts)-1 {
			mark |= 1 << 31
		}
		out = binary.BigEndian.AppendUint32(out, mark)
		out = append(out, p...)
	}
	return out
}

func dial(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(safety))
	return c
}

// call sends msg over a TCP connection and reads one reply.
func call(c net.Conn, proto Protocol, msg []byte) ([]byte, error) {
	if _, err := c.Write(frameMsg(proto, msg, true)); err != nil {
		return nil, err
	}
	_, reply, err := serverRead(bufio.NewReader(c), proto)
	return reply, err
}

func udpCall(c net.Conn, msg []byte) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func wait(t *testing.T, p *Proxy, what string, cond func(Stats) bool) Stats {
	t.Helper()
	s, err := p.Wait(ctx(t), cond)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return s
}

func done(n int) func(Stats) bool { return func(s Stats) bool { return s.Done >= n } }

func wantStats(t *testing.T, got, want Stats) {
	t.Helper()
	if got != want {
		t.Errorf("stats %+v\n          want %+v", got, want)
	}
}

func wantOutcomes(t *testing.T, p *Proxy, want ...Outcome) {
	t.Helper()
	ex := p.Exchanges()
	var got []Outcome
	for _, e := range ex {
		got = append(got, e.Outcome)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("outcomes %v, want %v (%+v)", got, want, ex)
	}
}

// isTimeout is a read that gave up at its own deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// clientGivesUp is a client's own timeout: a short deadline on a read the
// proxy is known never to answer. It cannot fail by being slow.
func clientGivesUp(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if !isTimeout(err) {
		t.Fatalf("client read %q, %v; want its own timeout", buf[:n], err)
	}
}

func TestForwardFaithfully(t *testing.T) {
	for _, proto := range []Protocol{Kerberos, RPC} {
		t.Run(proto.String(), func(t *testing.T) {
			srv := startEcho(t, proto)
			p := ForTest(t, Options{Upstream: srv.addr, Protocol: proto, Network: "tcp"})
			c := dial(t, "tcp", p.Addr())
			for i := range 3 {
				msg := []byte("request " + strconv.Itoa(i))
				reply, err := call(c, proto, msg)
				if err != nil || string(reply) != "re:"+string(msg) {
					t.Fatalf("exchange %d: %q %v", i, reply, err)
				}
			}
			wantStats(t, wait(t, p, "3 exchanges", done(3)),
				Stats{Conns: 1, Requests: 3, Forwarded: 3, Replies: 3, Delivered: 3, Done: 3})
			wantOutcomes(t, p, Delivered, Delivered, Delivered)
			if srv.accepted() != 1 {
				t.Errorf("server accepted %d connections, want 1 (one per client connection)", srv.accepted())
			}
			// The bytes reach the server exactly as the client framed them.
			srv.mu.Lock()
			defer srv.mu.Unlock()
			for i, w := range srv.wire {
				if want := frameMsg(proto, []byte("request "+strconv.Itoa(i)), true); !bytes.Equal(w, want) {
					t.Errorf("server got % x, want % x", w, want)
				}
			}
			e := p.Exchanges()[0]
			if e.Request != len(frameMsg(proto, []byte("request 0"), true)) || e.Reply != len(frameMsg(proto, []byte("re:request 0"), true)) || e.Sent != e.Reply {
				t.Errorf("exchange sizes %+v", e)
			}
		})
	}
}

func TestForwardUDP(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	c := dial(t, "udp", p.Addr())
	c2 := dial(t, "udp", p.Addr())
	for i, cl := range []net.Conn{c, c2, c} {
		msg := "datagram " + strconv.Itoa(i)
		if reply, err := udpCall(cl, []byte(msg)); err != nil || string(reply) != "re:"+msg {
			t.Fatalf("%d: %q %v", i, reply, err)
		}
	}
	wantStats(t, wait(t, p, "3 exchanges", done(3)),
		Stats{Conns: 2, Requests: 3, Forwarded: 3, Replies: 3, Delivered: 3, Done: 3})
	if ex := p.Exchanges(); ex[0].Network != "udp" || ex[0].Conn != 1 || ex[1].Conn != 2 || ex[2].Conn != 1 {
		t.Errorf("exchanges %+v", ex)
	}
}

func TestDropReplyClose(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	p.Set(Fault{Kind: DropReplyClose})
	c := dial(t, "tcp", p.Addr())
	reply, err := call(c, Kerberos, []byte("change my key"))
	if !errors.Is(err, io.EOF) {
		t.Fatalf("client got %q, %v; want EOF", reply, err)
	}
	// The server did the work; the proxy read its reply and kept it.
	if got := string(<-srv.got); got != "change my key" {
		t.Errorf("server got %q", got)
	}
	// No Wait: the exchange was done before the client saw EOF.
	wantStats(t, p.Stats(), Stats{Conns: 1, Requests: 1, Forwarded: 1, Replies: 1, Faulted: 1, Done: 1})
	wantOutcomes(t, p, ReplyDropped)
	if e := p.Exchanges()[0]; !e.Forwarded || !e.Replied || e.Sent != 0 || e.Fault.Kind != DropReplyClose {
		t.Errorf("exchange %+v", e)
	}
}

func TestDropReplyHang(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	p.Set(Fault{Kind: DropReplyHang})
	c := dial(t, "tcp", p.Addr())
	if _, err := c.Write(frameMsg(Kerberos, []byte("change my key"), false)); err != nil {
		t.Fatal(err)
	}
	// Once the proxy has the server's reply it writes nothing more.
	wait(t, p, "server reply read", func(s Stats) bool { return s.Replies == 1 })
	clientGivesUp(t, c)
	if s := p.Stats(); s.Done != 0 {
		t.Fatalf("exchange ended while the client still waits: %+v", s)
	}
	c.Close()
	wantStats(t, wait(t, p, "exchange done", done(1)),
		Stats{Conns: 1, Requests: 1, Forwarded: 1, Replies: 1, Faulted: 1, Done: 1})
	wantOutcomes(t, p, ReplyDropped)
	if srv.received() != 1 {
		t.Errorf("server got %d requests", srv.received())
	}
}

func TestDropReplyHangRelease(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	p.Set(Fault{Kind: DropReplyHang})
	c := dial(t, "tcp", p.Addr())
	if _, err := c.Write(frameMsg(Kerberos, []byte("x"), false)); err != nil {
		t.Fatal(err)
	}
	wait(t, p, "server reply read", func(s Stats) bool { return s.Replies == 1 })
	p.Release()
	if n, err := c.Read(make([]byte, 16)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after Release the client read %d bytes, %v; want EOF", n, err)
	}
	wantOutcomes(t, p, ReplyDropped)
}

func TestResetMidReply(t *testing.T) {
	srv := startEcho(t, Kerberos)
	for _, n := range []int{0, 2, 6} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			p := ForTest(t, Options{Upstream: srv.addr})
			p.Set(Fault{Kind: ResetMidReply, N: n})
			c := dial(t, "tcp", p.Addr())
			if _, err := c.Write(frameMsg(Kerberos, []byte("change my key"), false)); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			t.Logf("client read %d bytes before the reset", len(got))
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client read %q, %v; want a reset", got, err)
			}
			full := frameMsg(Kerberos, []byte("re:change my key"), false)
			// Bytes written before the RST may or may not be read before
			// it (the kernel may discard them), but never more than N,
			// and only the reply's first bytes.
			if len(got) > n || !bytes.Equal(got, full[:len(got)]) {
				t.Errorf("client read % x, want at most the first %d bytes of % x", got, n, full)
			}
			wantStats(t, p.Stats(), Stats{Conns: 1, Requests: 1, Forwarded: 1, Replies: 1, Faulted: 1, Done: 1})
			if e := p.Exchanges()[0]; e.Outcome != ReplyReset || e.Sent != n || e.Reply != len(full) {
				t.Errorf("exchange %+v", e)
			}
		})
	}
}

func TestDelayRequestUntilRelease(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	p.Set(Fault{Kind: Delay}) // until Release
	c := dial(t, "tcp", p.Addr())
	if _, err := c.Write(frameMsg(Kerberos, []byte("late"), false)); err != nil {
		t.Fatal(err)
	}
	wait(t, p, "request read", func(s Stats) bool { return s.Requests == 1 })
	if s := p.Stats(); s.Forwarded != 0 || srv.accepted() != 0 {
		t.Fatalf("a held request reached the server: %+v, %d connections", s, srv.accepted())
	}
	p.Release()
	_, reply, err := serverRead(bufio.NewReader(c), Kerberos)
	if err != nil || string(reply) != "re:late" {
		t.Fatalf("%q %v", reply, err)
	}
	wantStats(t, wait(t, p, "exchange done", done(1)),
		Stats{Conns: 1, Requests: 1, Forwarded: 1, Replies: 1, Delivered: 1, Faulted: 1, Done: 1})
}

// A request held past the client's timeout still reaches the server when
// the hold ends, as late packets do.
func TestDelayRequestClientGaveUp(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	p.Set(Fault{Kind: Delay, D: time.Hour})
	c := dial(t, "tcp", p.Addr())
	if _, err := c.Write(frameMsg(Kerberos, []byte("late"), false)); err != nil {
		t.Fatal(err)
	}
	wait(t, p, "request read", func(s Stats) bool { return s.Requests == 1 })
	clientGivesUp(t, c)
	c.Close()
	p.Release()
	s := wait(t, p, "exchange done", done(1))
	if s.Forwarded != 1 || s.Replies != 1 || string(<-srv.got) != "late" {
		t.Errorf("the late request did not reach the server: %+v", s)
	}
	// Whether the proxy noticed the client leave before writing the reply
	// is a race it does not hide.
	if o := p.Exchanges()[0].Outcome; o != ClientGone && o != Delivered {
		t.Errorf("outcome %v", o)
	}
}

func TestDelayReply(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	p.Set(Fault{Kind: Delay, OnReply: true})
	c := dial(t, "tcp", p.Addr())
	if _, err := c.Write(frameMsg(Kerberos, []byte("slow answer"), false)); err != nil {
		t.Fatal(err)
	}
	// The server has answered; the client has not heard.
	wait(t, p, "server reply read", func(s Stats) bool { return s.Replies == 1 })
	clientGivesUp(t, c)
	p.Release()
	c.SetReadDeadline(time.Now().Add(safety))
	_, reply, err := serverRead(bufio.NewReader(c), Kerberos)
	if err != nil || string(reply) != "re:slow answer" {
		t.Fatalf("%q %v", reply, err)
	}
	wantStats(t, wait(t, p, "exchange done", done(1)),
		Stats{Conns: 1, Requests: 1, Forwarded: 1, Replies: 1, Delivered: 1, Faulted: 1, Done: 1})
}

func TestDelayReplyClientGone(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	p.Set(Fault{Kind: Delay, D: time.Hour, OnReply: true})
	c := dial(t, "tcp", p.Addr())
	if _, err := c.Write(frameMsg(Kerberos, []byte("slow answer"), false)); err != nil {
		t.Fatal(err)
	}
	wait(t, p, "server reply read", func(s Stats) bool { return s.Replies == 1 })
	c.Close() // the hold watches the client: no Release needed
	wantStats(t, wait(t, p, "exchange done", done(1)),
		Stats{Conns: 1, Requests: 1, Forwarded: 1, Replies: 1, Faulted: 1, Done: 1})
	wantOutcomes(t, p, ClientGone)
}

func TestDelayShort(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	p.Set(Fault{Kind: Delay, D: time.Millisecond})
	c := dial(t, "tcp", p.Addr())
	if reply, err := call(c, Kerberos, []byte("a")); err != nil || string(reply) != "re:a" {
		t.Fatalf("%q %v", reply, err)
	}
	p.Set(Fault{Kind: Delay, D: time.Millisecond, OnReply: true})
	if reply, err := call(c, Kerberos, []byte("b")); err != nil || string(reply) != "re:b" {
		t.Fatalf("%q %v", reply, err)
	}
	wantStats(t, wait(t, p, "2 exchanges", done(2)),
		Stats{Conns: 1, Requests: 2, Forwarded: 2, Replies: 2, Delivered: 2, Faulted: 2, Done: 2})
}

func TestRefuse(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	p.Set(Fault{Kind: Refuse})
	c := dial(t, "tcp", p.Addr())
	if _, err := c.Write(frameMsg(Kerberos, []byte("x"), false)); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(c); !errors.Is(err, syscall.ECONNRESET) || len(got) != 0 {
		t.Fatalf("client read %q, %v; want a reset", got, err)
	}
	wantStats(t, p.Stats(), Stats{Conns: 1, Requests: 1, Faulted: 1, Done: 1})
	wantOutcomes(t, p, Refused)
	if srv.accepted() != 0 || srv.received() != 0 {
		t.Errorf("server saw %d connections, %d requests", srv.accepted(), srv.received())
	}
}

func TestBlackhole(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	p.Set(Fault{Kind: Blackhole})
	c := dial(t, "tcp", p.Addr())
	if _, err := c.Write(frameMsg(Kerberos, []byte("x"), false)); err != nil {
		t.Fatal(err)
	}
	wait(t, p, "request read", func(s Stats) bool { return s.Requests == 1 })
	clientGivesUp(t, c)
	c.Close()
	wantStats(t, wait(t, p, "exchange done", done(1)),
		Stats{Conns: 1, Requests: 1, Faulted: 1, Done: 1})
	wantOutcomes(t, p, Blackholed)
	if srv.accepted() != 0 || srv.received() != 0 {
		t.Errorf("server saw %d connections, %d requests", srv.accepted(), srv.received())
	}
}

// Once faults the next exchange only: the retry on a new connection goes
// through, and exactly one request of each reached the server.
func TestOnceThenForward(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	p.Once(Fault{Kind: DropReplyClose}, 1)
	c := dial(t, "tcp", p.Addr())
	if _, err := call(c, Kerberos, []byte("try 1")); !errors.Is(err, io.EOF) {
		t.Fatalf("first try: %v, want EOF", err)
	}
	if r := p.Rule(); r.Fault.Kind != Forward || r.Times != 0 {
		t.Errorf("rule after its one use: %+v", r)
	}
	c2 := dial(t, "tcp", p.Addr())
	if reply, err := call(c2, Kerberos, []byte("try 2")); err != nil || string(reply) != "re:try 2" {
		t.Fatalf("second try: %q %v", reply, err)
	}
	wantStats(t, wait(t, p, "2 exchanges", done(2)),
		Stats{Conns: 2, Requests: 2, Forwarded: 2, Replies: 2, Delivered: 1, Faulted: 1, Done: 2})
	wantOutcomes(t, p, ReplyDropped, Delivered)
}

func TestOnceN(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	p.Once(Fault{Kind: Refuse}, 2)
	for i := range 3 {
		c := dial(t, "tcp", p.Addr())
		_, err := call(c, Kerberos, []byte("x"))
		if (err == nil) != (i == 2) {
			t.Errorf("try %d: %v", i, err)
		}
	}
	wait(t, p, "3 exchanges", done(3))
	wantOutcomes(t, p, Refused, Refused, Delivered)
}

func rpcCall(xid, proc uint32) []byte {
	var b []byte
	for _, v := range []uint32{xid, 0, 2, KadmProg, 2, proc, 0, 0, 0, 0} {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return append(b, "args"...)
}

// An RPC session: only the matching procedure's exchange is faulted.
func TestRPCMatchProc(t *testing.T) {
	srv := startEcho(t, RPC)
	p := ForTest(t, Options{Upstream: srv.addr, Protocol: RPC})
	p.SetRule(Rule{Fault: Fault{Kind: DropReplyClose}, Times: 1, Match: MatchRPCProc(KadmProg, KadmChpass)})
	c := dial(t, "tcp", p.Addr())
	for xid, proc := range []uint32{KadmNullProc, KadmInit, KadmGetPrinc} {
		msg := rpcCall(uint32(xid), proc)
		if reply, err := call(c, RPC, msg); err != nil || !bytes.Equal(reply, append([]byte("re:"), msg...)) {
			t.Fatalf("proc %d: %q %v", proc, reply, err)
		}
	}
	if _, err := call(c, RPC, rpcCall(9, KadmChpass)); !errors.Is(err, io.EOF) {
		t.Fatalf("chpass: %v, want EOF", err)
	}
	wantStats(t, wait(t, p, "4 exchanges", done(4)),
		Stats{Conns: 1, Requests: 4, Forwarded: 4, Replies: 4, Delivered: 3, Faulted: 1, Done: 4})
	wantOutcomes(t, p, Delivered, Delivered, Delivered, ReplyDropped)
	// The record went to the server fragmented exactly as the client sent it.
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if want := frameMsg(RPC, rpcCall(9, KadmChpass), true); !bytes.Equal(srv.wire[3], want) {
		t.Errorf("server got % x, want % x", srv.wire[3], want)
	}
}

func TestParseRPCCall(t *testing.T) {
	c, ok := ParseRPCCall(rpcCall(7, KadmChpass))
	if !ok || c != (RPCCall{XID: 7, Prog: KadmProg, Vers: 2, Proc: KadmChpass}) {
		t.Errorf("%+v %v", c, ok)
	}
	reply := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 7), 1)
	reply = append(reply, make([]byte, 20)...)
	if _, ok := ParseRPCCall(reply); ok {
		t.Error("a REPLY parsed as a call")
	}
	if _, ok := ParseRPCCall([]byte{1, 2, 3}); ok {
		t.Error("3 bytes parsed as a call")
	}
	for proc, want := range map[uint32]bool{KadmNullProc: false, KadmInit: false, KadmGetPrinc: false,
		KadmChpass: true, KadmChrand: true, KadmChpass3: true, KadmChrand3: true, KadmSetkey4: true} {
		if got := MatchKadminKeyChange(rpcCall(1, proc)); got != want {
			t.Errorf("MatchKadminKeyChange(proc %d) = %v", proc, got)
		}
	}
	other := rpcCall(1, KadmChpass)
	binary.BigEndian.PutUint32(other[12:], 100003) // NFS
	if MatchKadminKeyChange(other) {
		t.Error("another program's procedure 6 matched")
	}
}

func TestUDPFaults(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr, Network: "udp"})
	c := dial(t, "udp", p.Addr())
	send := func(msg string) {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	// A dropped reply: the next datagram the client reads is the next
	// exchange's reply, so nothing of the first came through.
	for i, k := range []Kind{DropReplyClose, DropReplyHang} {
		p.Once(Fault{Kind: k}, 1)
		send("dropped")
		wait(t, p, "dropped reply", done(2*i+1))
		if reply, err := udpCall(c, []byte("next")); err != nil || string(reply) != "re:next" {
			t.Fatalf("%v: next exchange: %q %v", k, reply, err)
		}
	}
	// ResetMidReply truncates the datagram.
	p.Once(Fault{Kind: ResetMidReply, N: 4}, 1)
	if reply, err := udpCall(c, []byte("truncate me")); err != nil || string(reply) != "re:t" {
		t.Fatalf("truncated: %q %v", reply, err)
	}
	// Refuse and Blackhole drop the request.
	for i, k := range []Kind{Refuse, Blackhole} {
		p.Once(Fault{Kind: k}, 1)
		send("never forwarded")
		wait(t, p, "dropped request", done(6+i))
	}
	// A held request goes on at Release.
	p.Once(Fault{Kind: Delay}, 1)
	send("held")
	wait(t, p, "held request read", func(s Stats) bool { return s.Requests == 8 })
	if s := p.Stats(); s.Forwarded != 5 {
		t.Fatalf("held request forwarded: %+v", s)
	}
	p.Release()
	buf := make([]byte, 100)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "re:held" {
		t.Fatalf("held: %q %v", buf[:n], err)
	}
	// A held reply too.
	p.Once(Fault{Kind: Delay, OnReply: true}, 1)
	send("held reply")
	wait(t, p, "reply read", func(s Stats) bool { return s.Replies == 7 })
	p.Release()
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "re:held reply" {
		t.Fatalf("held reply: %q %v", buf[:n], err)
	}
	wantStats(t, wait(t, p, "all done", done(9)),
		Stats{Conns: 1, Requests: 9, Forwarded: 7, Replies: 7, Delivered: 4, Faulted: 7, Done: 9})
	wantOutcomes(t, p, ReplyDropped, Delivered, ReplyDropped, Delivered, ReplyReset, Refused, Blackholed, Delivered, Delivered)
	if srv.received() != 7 {
		t.Errorf("server got %d datagrams, want 7", srv.received())
	}
}

// Close drops a held request: it never reaches the server.
func TestCloseDropsHeldRequest(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p, err := Start(Options{Upstream: srv.addr})
	if err != nil {
		t.Fatal(err)
	}
	p.Set(Fault{Kind: Delay})
	c := dial(t, "tcp", p.Addr())
	if _, err := c.Write(frameMsg(Kerberos, []byte("held"), false)); err != nil {
		t.Fatal(err)
	}
	wait(t, p, "request read", func(s Stats) bool { return s.Requests == 1 })
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, p.Stats(), Stats{Conns: 1, Requests: 1, Faulted: 1, Done: 1})
	wantOutcomes(t, p, ProxyClosed)
	if srv.accepted() != 0 {
		t.Errorf("server accepted %d connections", srv.accepted())
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestServerUnreachable(t *testing.T) {
	port, err := spawn.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := ForTest(t, Options{Upstream: "127.0.0.1:" + strconv.Itoa(port), Network: "tcp"})
	c := dial(t, "tcp", p.Addr())
	if _, err := call(c, Kerberos, []byte("x")); err == nil {
		t.Fatal("a reply from nowhere")
	}
	wantStats(t, wait(t, p, "exchange done", done(1)), Stats{Conns: 1, Requests: 1, Done: 1})
	wantOutcomes(t, p, ServerUnreachable)
}

// Many clients while the mode changes under them: every exchange is
// counted once, and the counters agree with the server (run with -race).
func TestConcurrentClientsAndModeChanges(t *testing.T) {
	srv := startEcho(t, Kerberos)
	p := ForTest(t, Options{Upstream: srv.addr})
	const clients, each = 8, 20
	stop := make(chan struct{})
	var flipper sync.WaitGroup
	flipper.Add(1)
	go func() {
		defer flipper.Done()
		modes := []Fault{{}, {Kind: DropReplyClose}, {Kind: ResetMidReply, N: 3}, {Kind: Refuse}, {Kind: Delay, D: time.Microsecond}}
		for i := 0; ; i++ {
			select {
			case <-stop:
				p.Set(Fault{})
				return
			default:
			}
			p.Set(modes[i%len(modes)])
			_ = p.Stats()
			_ = p.Exchanges()
		}
	}()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				c, err := net.Dial("tcp", p.Addr())
				if err != nil {
					t.Error(err)
					return
				}
				c.SetDeadline(time.Now().Add(safety))
				call(c, Kerberos, []byte(fmt.Sprintf("%d/%d", i, j)))
				c.Close()
			}
		}()
	}
	wg.Wait()
	close(stop)
	flipper.Wait()
	s := wait(t, p, "all done", done(clients*each))
	if s.Requests != clients*each || s.Conns != clients*each {
		t.Errorf("stats %+v, want %d requests", s, clients*each)
	}
	if s.Forwarded != srv.received() || s.Replies > s.Forwarded || s.Delivered > s.Replies {
		t.Errorf("stats %+v, server got %d", s, srv.received())
	}
	var fwd, faulted int
	for _, e := range p.Exchanges() {
		if e.Forwarded {
			fwd++
		}
		if e.Fault.Kind != Forward {
			faulted++
		}
	}
	if fwd != s.Forwarded || faulted != s.Faulted {
		t.Errorf("records say %d forwarded, %d faulted; stats %+v", fwd, faulted, s)
	}
}

func TestStartErrors(t *testing.T) {
	for _, o := range []Options{
		{},
		{Upstream: "nohostport"},
		{Upstream: "127.0.0.1:1", Protocol: RPC, Network: "udp"},
		{Upstream: "127.0.0.1:1", Network: "sctp"},
	} {
		if p, err := Start(o); err == nil {
			p.Close()
			t.Errorf("Start(%+v) succeeded", o)
		}
	}
}
