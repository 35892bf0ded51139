package kdcops

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// maxTCPReply bounds a KDC reply read over TCP; a real reply is a few KiB,
// so anything larger is a wrong service on that port.
const maxTCPReply = 1 << 20

// Limiter paces requests to the KDCs so a fleet run cannot flood them
// (verify --kdc-rate); *rate.Limiter from golang.org/x/time satisfies it.
// Every AS-REQ and TGS-REQ krbops sends waits on it, retries and transport
// fallbacks included.
type Limiter interface {
	Wait(ctx context.Context) error
}

// UnreachableError means no reply came from a KDC: refused, timed out, no
// route, or the name did not resolve. It is the "could not complete" class.
type UnreachableError struct {
	KDC       string
	Transport Transport
	// Tried lists every transport attempted when a client falls back from
	// one to the other; the last one's error is Err.
	Tried []Transport
	Err   error
	// Service names the server in the message ("kpasswd server"); empty
	// is "kdc".
	Service string
	// TriedErrs, when set, holds the error of each transport in Tried, so
	// the message gives every reason and not just the last.
	TriedErrs []error
	// Sent is true when the connection was made, so the request may have
	// reached the server (UDP: always, unless the port refused it).
	Sent bool
}

func (e *UnreachableError) Error() string {
	service := e.Service
	if service == "" {
		service = "kdc"
	}
	if len(e.TriedErrs) == len(e.Tried) && len(e.Tried) > 1 {
		var why []string
		for i, t := range e.Tried {
			why = append(why, fmt.Sprintf("%s: %s", t, describeNetError(e.TriedErrs[i])))
		}
		return fmt.Sprintf("%s %s unreachable over %s", service, e.KDC, strings.Join(why, "; "))
	}
	tried := []string{string(e.Transport)}
	if len(e.Tried) > 0 {
		tried = tried[:0]
		for _, t := range e.Tried {
			tried = append(tried, string(t))
		}
	}
	return fmt.Sprintf("%s %s unreachable over %s: %s", service, e.KDC, strings.Join(tried, " and "), describeNetError(e.Err))
}
func (e *UnreachableError) Unwrap() error { return e.Err }

func describeNetError(err error) string {
	var ue *UnreachableError
	if errors.As(err, &ue) && ue.Err != nil {
		err = ue.Err
	}
	var ne net.Error
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &dnsErr):
		return "cannot resolve " + dnsErr.Name
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "no reply before the timeout"
	case errors.Is(err, context.DeadlineExceeded):
		return "no reply before the timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before a full reply"
	}
	return err.Error()
}

// Exchange sends one Kerberos message to a KDC and returns the raw reply,
// with the wall-clock send and receive times and the round trip measured on
// the monotonic clock (a wall-clock step during the exchange must not
// distort the probe).
type Exchange struct {
	Reply []byte
	Sent  time.Time
	RTT   time.Duration
	// Stray counts UDP datagrams SendRecvMatch read and refused.
	Stray int
}

// SendRecv performs one request/reply over the given transport. timeout
// bounds this call; ctx cancels it (SIGINT).
func SendRecv(ctx context.Context, k KDC, t Transport, req []byte, timeout time.Duration) (*Exchange, error) {
	return SendRecvMatch(ctx, k, t, req, timeout, nil)
}

// SendRecvMatch is SendRecv for a client that can tell its own reply from
// any other datagram: over UDP, a datagram that match refuses (a late
// reply to an earlier request, a stray packet) is counted in
// Exchange.Stray and the read goes on until the timeout. Over TCP the one
// reply on the connection is returned as is. A nil match takes the first
// datagram.
func SendRecvMatch(ctx context.Context, k KDC, t Transport, req []byte, timeout time.Duration, match func([]byte) bool) (*Exchange, error) {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, string(t), k.Addr())
	if err != nil {
		return nil, &UnreachableError{KDC: k.Entry, Transport: t, Err: err}
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// End the socket's deadline now when ctx ends so a blocked read returns
	// at once on SIGINT instead of waiting for the deadline. Registered
	// after the deadline above, which would otherwise undo a cancel that
	// came in between.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	var ex Exchange
	ex.Sent = time.Now()
	if t == TCP {
		ex.Reply, err = tcpRoundTrip(conn, req)
	} else {
		ex.Reply, ex.Stray, err = udpRoundTrip(conn, req, match)
	}
	ex.RTT = time.Since(ex.Sent)
	if err != nil {
		if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
			return nil, context.Canceled
		}
		var bad *BadReplyError
		if errors.As(err, &bad) {
			bad.KDC = k.Entry
			return nil, bad
		}
		return nil, &UnreachableError{KDC: k.Entry, Transport: t, Err: err, Sent: true}
	}
	return &ex, nil
}

func udpRoundTrip(conn net.Conn, req []byte, match func([]byte) bool) ([]byte, int, error) {
	if _, err := conn.Write(req); err != nil {
		return nil, 0, err
	}
	buf := make([]byte, 65535)
	stray := 0
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, stray, err
		}
		if match == nil || match(buf[:n]) {
			return buf[:n], stray, nil
		}
		stray++
	}
}

func tcpRoundTrip(conn net.Conn, req []byte) ([]byte, error) {
	msg := make([]byte, 4+len(req))
	binary.BigEndian.PutUint32(msg, uint32(len(req)))
	copy(msg[4:], req)
	if _, err := conn.Write(msg); err != nil {
		return nil, err
	}
	var hdr [4]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxTCPReply {
		// Something answered, just not a KDC: not an unreachable class.
		return nil, &BadReplyError{Msg: fmt.Sprintf("tcp reply length %d out of range (is this port a KDC?)", n)}
	}
	reply := make([]byte, n)
	if _, err := io.ReadFull(conn, reply); err != nil {
		return nil, err
	}
	return reply, nil
}
