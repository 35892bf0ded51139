package kdcops_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
)

func TestSendRecvUDP(t *testing.T) {
	f := startFakeKDC(t, true, false, func(_ int, _ kdcops.Transport, req []byte) []byte {
		out := slices.Clone(req)
		slices.Reverse(out)
		return out
	})
	k := f.KDC(t, "")
	before := time.Now()
	ex, err := kdcops.SendRecv(context.Background(), k, kdcops.UDP, []byte("hello kdc"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(ex.Reply) != "cdk olleh" {
		t.Errorf("reply %q", ex.Reply)
	}
	if ex.Sent.Before(before) || ex.Sent.After(time.Now()) {
		t.Errorf("Sent %v not during the call", ex.Sent)
	}
	if ex.RTT <= 0 || ex.RTT > time.Second {
		t.Errorf("RTT %v", ex.RTT)
	}
	if got := f.Requests(); len(got) != 1 || got[0].Transport != kdcops.UDP || string(got[0].Raw) != "hello kdc" {
		t.Errorf("server saw %+v", got)
	}
}

func TestSendRecvTCPFraming(t *testing.T) {
	body := bytes.Repeat([]byte("k"), 3000) // more than one small segment
	f := startFakeKDC(t, false, true, func(_ int, _ kdcops.Transport, req []byte) []byte {
		return append([]byte("reply:"), req[:4]...)
	})
	ex, err := kdcops.SendRecv(context.Background(), f.KDC(t, ""), kdcops.TCP, body, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(ex.Reply) != "reply:kkkk" {
		t.Errorf("reply %q", ex.Reply)
	}
	// The fake read exactly len(body) bytes after the length prefix.
	if got := f.Requests(); len(got) != 1 || !bytes.Equal(got[0].Raw, body) {
		t.Errorf("server saw %d requests, first %d bytes", len(got), len(got[0].Raw))
	}
}

func TestSendRecvTCPBadLength(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply []byte
		want  string
	}{
		{"over 1 MiB", []byte{0x00, 0x20, 0x00, 0x00, 'x'}, "reply length 2097152 out of range"},
		{"just over 1 MiB", []byte{0x00, 0x10, 0x00, 0x01}, "reply length 1048577 out of range"},
		{"huge", []byte{0xff, 0xff, 0xff, 0xff}, "out of range"},
		{"zero", []byte{0, 0, 0, 0}, "reply length 0 out of range"},
		{"HTTP server", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeKDCRaw(t, false, true, true, func(int, kdcops.Transport, []byte) []byte { return tc.reply })
			// The fake sends nothing after these bytes and keeps the
			// connection open: a client that waited for the body would
			// return only at this timeout, unreachable, not a bad reply.
			_, err := kdcops.SendRecv(context.Background(), f.KDC(t, ""), kdcops.TCP, []byte("req"), time.Minute)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			// Something answered: a wrong service, not an unreachable KDC.
			var bad *kdcops.BadReplyError
			if !errors.As(err, &bad) {
				t.Errorf("error %T, want *kdcops.BadReplyError", err)
			}
		})
	}
}

func TestSendRecvTCPShortReply(t *testing.T) {
	// The length says 100 bytes; 3 come, then the KDC side closes. The
	// server closes right after writing, in order on one connection, so
	// the client always reads the 7 bytes and then EOF.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			served <- err
			return
		}
		if _, err := io.ReadFull(c, make([]byte, binary.BigEndian.Uint32(hdr[:]))); err != nil {
			served <- err
			return
		}
		_, err = c.Write([]byte{0, 0, 0, 100, 1, 2, 3})
		served <- err
	}()
	k, err := kdcops.ParseKDC("tcp/"+ln.Addr().String(), kdcops.TCP)
	if err != nil {
		t.Fatal(err)
	}
	_, err = kdcops.SendRecv(context.Background(), k, kdcops.TCP, []byte("req"), time.Minute)
	if serr := <-served; serr != nil {
		t.Fatalf("fake server: %v", serr)
	}
	var ue *kdcops.UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("error %v (%T), want *UnreachableError", err, err)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "connection closed before a full reply") {
		t.Errorf("error %q", err)
	}
}

func TestSendRecvTimeout(t *testing.T) {
	t.Parallel()
	f := startFakeKDC(t, true, false, func(int, kdcops.Transport, []byte) []byte { return nil })
	begin := time.Now()
	_, err := kdcops.SendRecv(context.Background(), f.KDC(t, ""), kdcops.UDP, []byte("req"), 150*time.Millisecond)
	took := time.Since(begin)
	var ue *kdcops.UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("error %v (%T), want *UnreachableError", err, err)
	}
	if ue.Transport != kdcops.UDP || ue.KDC != f.KDC(t, "").Entry {
		t.Errorf("UnreachableError %+v", ue)
	}
	if !strings.Contains(err.Error(), "no reply before the timeout") || !strings.Contains(err.Error(), "over udp") {
		t.Errorf("error %q", err)
	}
	// The deadline cannot pass sooner; 5s is SendRecv's default timeout,
	// which a call that ignored its timeout argument would wait out.
	if took < 150*time.Millisecond || took >= 5*time.Second {
		t.Errorf("took %v for a 150ms timeout", took)
	}
}

func TestSendRecvRefused(t *testing.T) {
	port := unusedPort(t)
	k, err := kdcops.ParseKDC("127.0.0.1:"+strconv.Itoa(port), kdcops.UDP)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []kdcops.Transport{kdcops.UDP, kdcops.TCP} {
		_, err := kdcops.SendRecv(context.Background(), k, tr, []byte("req"), time.Second)
		var ue *kdcops.UnreachableError
		if !errors.As(err, &ue) || ue.Transport != tr {
			t.Fatalf("%s: error %v (%T)", tr, err, err)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s: error %q", tr, err)
		}
	}
}

func TestSendRecvCancelled(t *testing.T) {
	t.Parallel()
	for _, tr := range []kdcops.Transport{kdcops.UDP, kdcops.TCP} {
		t.Run(string(tr), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// The fake cancels when the request reaches it and never
			// answers: the client is then waiting in its read.
			f := startFakeKDC(t, true, true, func(int, kdcops.Transport, []byte) []byte { cancel(); return nil })
			begin := time.Now()
			_, err := kdcops.SendRecv(ctx, f.KDC(t, ""), tr, []byte("req"), time.Minute)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error %v, want context.Canceled", err)
			}
			// Only the cancel can end the read before the timeout.
			if took := time.Since(begin); took >= time.Minute {
				t.Errorf("returned after %v, at the timeout: the cancel did not end the read", took)
			}
		})
	}
}

func TestUnreachableErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  *kdcops.UnreachableError
		want string
	}{
		{"refused", &kdcops.UnreachableError{KDC: "kdc1", Transport: kdcops.UDP, Err: &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("recvfrom", syscall.ECONNREFUSED)}},
			"kdc kdc1 unreachable over udp: connection refused"},
		{"both transports", &kdcops.UnreachableError{KDC: "kdc1", Transport: kdcops.TCP, Tried: []kdcops.Transport{kdcops.UDP, kdcops.TCP}, Err: syscall.ECONNREFUSED},
			"kdc kdc1 unreachable over udp and tcp: connection refused"},
		{"dns", &kdcops.UnreachableError{KDC: "kdc.invalid", Transport: kdcops.UDP, Err: &net.OpError{Op: "dial", Err: &net.DNSError{Name: "kdc.invalid", Err: "no such host", IsNotFound: true}}},
			"kdc kdc.invalid unreachable over udp: cannot resolve kdc.invalid"},
		{"deadline", &kdcops.UnreachableError{KDC: "k", Transport: kdcops.TCP, Err: os.ErrDeadlineExceeded},
			"kdc k unreachable over tcp: no reply before the timeout"},
		{"context deadline", &kdcops.UnreachableError{KDC: "k", Transport: kdcops.TCP, Err: context.DeadlineExceeded},
			"kdc k unreachable over tcp: no reply before the timeout"},
		{"eof", &kdcops.UnreachableError{KDC: "k", Transport: kdcops.TCP, Err: io.EOF},
			"kdc k unreachable over tcp: connection closed before a full reply"},
		{"other", &kdcops.UnreachableError{KDC: "k", Transport: kdcops.TCP, Err: errors.New("network is unreachable")},
			"kdc k unreachable over tcp: network is unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
			if !errors.Is(tc.err, tc.err.Err) {
				t.Error("does not unwrap to Err")
			}
		})
	}
}
