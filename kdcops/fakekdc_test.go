package kdcops_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/kdcops"
)

// fakeRequest is one request a fake KDC received.
type fakeRequest struct {
	Transport kdcops.Transport
	Raw       []byte
	ASReq     *messages.ASReq // nil when Raw is not an AS-REQ
}

// fakeKDC answers on 127.0.0.1 over UDP and/or TCP on one port. handle gets
// the 1-based number of the request (over both transports) and returns the
// reply; nil sends nothing (the client waits). Over TCP the reply is framed
// with its 4-byte length unless rawTCP is set.
type fakeKDC struct {
	Port   int
	handle func(n int, tr kdcops.Transport, req []byte) []byte
	rawTCP bool

	mu    sync.Mutex
	reqs  []fakeRequest
	conns []net.Conn
	wg    sync.WaitGroup
}

// startFakeKDC listens on one free port for the transports asked for; the
// other transport's port is left closed, so a client gets "refused".
func startFakeKDC(t *testing.T, udp, tcp bool, handle func(n int, tr kdcops.Transport, req []byte) []byte) *fakeKDC {
	t.Helper()
	return startFakeKDCRaw(t, udp, tcp, false, handle)
}

// startFakeKDCRaw is startFakeKDC; with rawTCP the handler's TCP replies
// are written as they are, length prefix included.
func startFakeKDCRaw(t *testing.T, udp, tcp, rawTCP bool, handle func(n int, tr kdcops.Transport, req []byte) []byte) *fakeKDC {
	t.Helper()
	f := &fakeKDC{handle: handle, rawTCP: rawTCP}
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 50 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f.Port = pc.LocalAddr().(*net.UDPAddr).Port
		ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(f.Port)))
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("no port free for both udp and tcp: %v", err)
	}
	if udp {
		f.wg.Go(func() { f.serveUDP(pc) })
	} else {
		pc.Close()
	}
	if tcp {
		f.wg.Go(func() { f.serveTCP(ln) })
	} else {
		ln.Close()
	}
	t.Cleanup(func() {
		if udp {
			pc.Close()
		}
		if tcp {
			ln.Close()
		}
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeKDC) record(tr kdcops.Transport, raw []byte) int {
	r := fakeRequest{Transport: tr, Raw: append([]byte(nil), raw...)}
	var as messages.ASReq
	if err := as.Unmarshal(r.Raw); err == nil {
		r.ASReq = &as
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r)
	return len(f.reqs)
}

// Requests returns a copy of what the fake received so far.
func (f *fakeKDC) Requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.reqs...)
}

// Count returns how many requests came over tr.
func (f *fakeKDC) Count(tr kdcops.Transport) int {
	n := 0
	for _, r := range f.Requests() {
		if r.Transport == tr {
			n++
		}
	}
	return n
}

func (f *fakeKDC) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		num := f.record(kdcops.UDP, buf[:n])
		if reply := f.handle(num, kdcops.UDP, buf[:n]); reply != nil {
			pc.WriteTo(reply, addr)
		}
	}
}

func (f *fakeKDC) serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		f.wg.Go(func() {
			defer c.Close()
			for {
				var hdr [4]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				req := make([]byte, binary.BigEndian.Uint32(hdr[:]))
				if _, err := io.ReadFull(c, req); err != nil {
					return
				}
				num := f.record(kdcops.TCP, req)
				reply := f.handle(num, kdcops.TCP, req)
				if reply == nil {
					continue
				}
				if !f.rawTCP {
					reply = append(binary.BigEndian.AppendUint32(nil, uint32(len(reply))), reply...)
				}
				c.Write(reply)
			}
		})
	}
}

// KDC returns the fake as a kdcops.KDC with the given transport prefix
// ("", "tcp/" or "udp/").
func (f *fakeKDC) KDC(t *testing.T, prefix string) kdcops.KDC {
	t.Helper()
	k, err := kdcops.ParseKDC(fmt.Sprintf("%s127.0.0.1:%d", prefix, f.Port), kdcops.UDP)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// krbError is a marshalled KRB-ERROR with the KDC's clock offset from ours.
func krbError(t *testing.T, code int32, offset time.Duration) []byte {
	now := time.Now().Add(offset)
	return krbErrorAt(t, code, now.Truncate(time.Second), now.Nanosecond()/1000)
}

// krbErrorAt is a KRB-ERROR with stime sec and susec us.
func krbErrorAt(t *testing.T, code int32, sec time.Time, us int) []byte {
	e := messages.NewKRBError(types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "krbtgt/TEST.REALM"), "TEST.REALM", code, "")
	e.STime = sec.UTC()
	e.Susec = us
	b, err := e.Marshal()
	if err != nil {
		t.Errorf("marshal KRB-ERROR: %v", err)
		return []byte{0}
	}
	return b
}

// unusedPort returns a port on 127.0.0.1 with nothing listening on UDP or
// TCP (it was free a moment ago).
func unusedPort(t *testing.T) int {
	t.Helper()
	f := startFakeKDC(t, false, false, nil)
	return f.Port
}
