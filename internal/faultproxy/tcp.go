package faultproxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// maxMessage bounds one request or reply (all fragments of an RPC record
// together); Kerberos and kadmin messages are a few KiB.
const maxMessage = 16 << 20

// frame is one message as on the wire (wire) and without framing (msg).
type frame struct {
	wire, msg []byte
}

// readFrame reads one message framed by proto from r.
func readFrame(r *bufio.Reader, proto Protocol) (frame, error) {
	var f frame
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if len(f.wire) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return frame{}, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		last := true
		if proto == RPC {
			last = n&0x80000000 != 0
			n &= 0x7fffffff
		}
		if uint64(len(f.wire))+4+uint64(n) > maxMessage {
			return frame{}, fmt.Errorf("faultproxy: message over %d bytes", maxMessage)
		}
		start := len(f.wire)
		f.wire = append(f.wire, hdr[:]...)
		f.wire = append(f.wire, make([]byte, n)...)
		if _, err := io.ReadFull(r, f.wire[start+4:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return frame{}, err
		}
		f.msg = append(f.msg, f.wire[start+4:]...)
		if last {
			return f, nil
		}
	}
}

func (p *Proxy) acceptTCP() {
	defer p.wg.Done()
	for {
		c, err := p.tcp.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go p.serveTCP(c.(*net.TCPConn))
	}
}

// tcpConn is one client connection and its server connection.
type tcpConn struct {
	id     int
	client *net.TCPConn
	reqs   chan frame
	gone   chan struct{} // closed when the client's side reads EOF or fails
	up     net.Conn
	upr    *bufio.Reader
}

func (p *Proxy) serveTCP(client *net.TCPConn) {
	defer p.wg.Done()
	c := &tcpConn{id: p.newConn(), client: client, reqs: make(chan frame, 16), gone: make(chan struct{})}
	done := make(chan struct{})
	defer func() {
		close(done)
		client.Close()
		p.untrack(client)
		if c.up != nil {
			c.up.Close()
			p.untrack(c.up)
		}
	}()

	// The reader runs on its own so a hold notices the client leaving.
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(c.gone)
		br := bufio.NewReader(client)
		for {
			f, err := readFrame(br, p.opts.Protocol)
			if err != nil {
				return
			}
			select {
			case c.reqs <- f:
			case <-done:
				return
			}
		}
	}()

	for {
		var f frame
		select {
		case f = <-c.reqs:
		case <-c.gone:
			// A request the client sent just before it closed its side
			// is still served.
			select {
			case f = <-c.reqs:
			default:
				return
			}
		case <-p.ctx.Done():
			return
		}
		if !p.exchangeTCP(c, f) {
			return
		}
	}
}

// reset closes the client connection with an RST.
func reset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

// exchangeTCP runs one exchange; false ends the connection.
func (p *Proxy) exchangeTCP(c *tcpConn, f frame) bool {
	e := p.begin("tcp", c.id, f.wire, f.msg)
	fault := e.Fault
	switch fault.Kind {
	case Refuse:
		p.finish(e, Refused) // before the client can see it: see the package doc
		reset(c.client)
		return false
	case Blackhole:
		if p.hold(e, 0, c.gone) == holdClosed {
			p.finish(e, ProxyClosed)
		} else {
			p.finish(e, Blackholed)
		}
		return false
	case Delay:
		if !fault.OnReply && p.hold(e, fault.D, nil) == holdClosed {
			p.finish(e, ProxyClosed)
			return false
		}
	}

	if c.up == nil {
		var d net.Dialer
		d.Timeout = p.opts.DialTimeout
		up, err := d.DialContext(p.ctx, "tcp", p.opts.Upstream)
		if err != nil {
			p.finish(e, p.serverFailure(ServerUnreachable))
			return false
		}
		if !p.track(up) {
			p.finish(e, ProxyClosed)
			return false
		}
		c.up, c.upr = up, bufio.NewReader(up)
	}
	if _, err := c.up.Write(f.wire); err != nil {
		p.finish(e, p.serverFailure(ServerClosed))
		return false
	}
	p.forwarded(e)
	reply, err := readFrame(c.upr, p.opts.Protocol)
	if err != nil {
		p.finish(e, p.serverFailure(ServerClosed))
		return false
	}
	p.replied(e, len(reply.wire))

	switch fault.Kind {
	case DropReplyClose:
		p.finish(e, ReplyDropped)
		return false
	case DropReplyHang:
		if p.hold(e, 0, c.gone) == holdClosed {
			p.finish(e, ProxyClosed)
		} else {
			p.finish(e, ReplyDropped)
		}
		return false
	case ResetMidReply:
		n := min(max(fault.N, 0), len(reply.wire))
		if n > 0 {
			w, _ := c.client.Write(reply.wire[:n])
			p.sent(e, w, false)
		}
		p.finish(e, ReplyReset)
		reset(c.client)
		return false
	case Delay:
		if fault.OnReply {
			switch p.hold(e, fault.D, c.gone) {
			case holdClosed:
				p.finish(e, ProxyClosed)
				return false
			case holdGone:
				p.finish(e, ClientGone)
				return false
			}
		}
	}

	if fault.Kind == Delay {
		// After a hold, do not count a reply to a client known to have
		// left as delivered.
		select {
		case <-c.gone:
			p.finish(e, ClientGone)
			return false
		default:
		}
	}
	w, err := c.client.Write(reply.wire)
	full := err == nil && w == len(reply.wire)
	p.sent(e, w, full)
	if !full {
		p.finish(e, ClientGone)
		return false
	}
	p.finish(e, Delivered)
	return true
}

// serverFailure is o, or ProxyClosed when the failure came from Close.
func (p *Proxy) serverFailure(o Outcome) Outcome {
	if p.ctx.Err() != nil {
		return ProxyClosed
	}
	return o
}
