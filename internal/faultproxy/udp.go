package faultproxy

import (
	"errors"
	"net"
	"sync"
)

// udpSession is one client address and the proxy's own connected socket to
// the server for it, so the server's replies come back to the right
// client.
type udpSession struct {
	id     int
	client net.Addr
	up     *net.UDPConn

	mu      sync.Mutex
	pending []*exchange // forwarded, waiting for a reply, oldest first
}

func (p *Proxy) serveUDP() {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := p.udp.ReadFrom(buf)
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		dgram := append([]byte(nil), buf[:n]...)
		s, err := p.session(from)
		if err != nil {
			continue // closed, or the server address does not resolve
		}
		e := p.begin("udp", s.id, dgram, dgram)
		switch e.Fault.Kind {
		case Refuse:
			p.finish(e, Refused)
		case Blackhole:
			p.finish(e, Blackholed)
		case Delay:
			if e.Fault.OnReply {
				p.forwardUDP(s, e, dgram)
				break
			}
			p.afterHold(e, func() { p.forwardUDP(s, e, dgram) })
		default:
			p.forwardUDP(s, e, dgram)
		}
	}
}

// session returns the session of client address from, creating it (and
// its reader of the server's replies) on first sight.
func (p *Proxy) session(from net.Addr) (*udpSession, error) {
	key := from.String()
	p.mu.Lock()
	s := p.sessions[key]
	p.mu.Unlock()
	if s != nil {
		return s, nil
	}
	raddr, err := net.ResolveUDPAddr("udp", p.opts.Upstream)
	if err != nil {
		return nil, err
	}
	up, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		up.Close()
		return nil, net.ErrClosed
	}
	p.stats.Conns++
	s = &udpSession{id: p.stats.Conns, client: from, up: up}
	p.sessions[key] = s
	p.bump()
	p.wg.Add(1)
	p.mu.Unlock()
	go p.readReplies(s)
	return s, nil
}

// forwardUDP sends the request to the server. The exchange is queued
// before the send and marked forwarded before the session lock is let go,
// so its reply cannot finish it before it counts as forwarded.
func (p *Proxy) forwardUDP(s *udpSession, e *exchange, dgram []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = append(s.pending, e)
	if _, err := s.up.Write(dgram); err != nil {
		s.pending = s.pending[:len(s.pending)-1]
		p.finish(e, p.serverFailure(ServerUnreachable))
		return
	}
	p.forwarded(e)
}

func (p *Proxy) readReplies(s *udpSession) {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := s.up.Read(buf)
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ECONNREFUSED from an ICMP error: nothing to deliver
		}
		reply := append([]byte(nil), buf[:n]...)
		s.mu.Lock()
		var e *exchange
		if len(s.pending) > 0 {
			e = s.pending[0]
			s.pending = s.pending[1:]
		}
		s.mu.Unlock()
		p.replied(e, n)
		if e == nil {
			// Not asked for (a second reply to one request): forward it.
			w, err := p.udp.WriteTo(reply, s.client)
			p.sent(nil, w, err == nil && w == n)
			continue
		}
		switch e.Fault.Kind {
		case DropReplyClose, DropReplyHang:
			p.finish(e, ReplyDropped)
		case ResetMidReply:
			if k := min(max(e.Fault.N, 0), n); k > 0 {
				w, _ := p.udp.WriteTo(reply[:k], s.client)
				p.sent(e, w, false)
			}
			p.finish(e, ReplyReset)
		case Delay:
			if !e.Fault.OnReply {
				p.deliverUDP(s, e, reply)
				break
			}
			p.afterHold(e, func() { p.deliverUDP(s, e, reply) })
		default:
			p.deliverUDP(s, e, reply)
		}
	}
}

func (p *Proxy) deliverUDP(s *udpSession, e *exchange, reply []byte) {
	w, err := p.udp.WriteTo(reply, s.client)
	full := err == nil && w == len(reply)
	p.sent(e, w, full)
	if !full {
		p.finish(e, p.serverFailure(ClientGone))
		return
	}
	p.finish(e, Delivered)
}

// afterHold runs then once the exchange's Delay fault lets it go, in a
// goroutine of its own so the session keeps serving other datagrams; a
// proxy closed during the hold drops the datagram.
func (p *Proxy) afterHold(e *exchange, then func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if p.hold(e, e.Fault.D, nil) == holdClosed {
			p.finish(e, ProxyClosed)
			return
		}
		then()
	}()
}
