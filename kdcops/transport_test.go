package kdcops_test

import (
	"bytes"
	"context"
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
			begin := time.Now()
			_, err := kdcops.SendRecv(context.Background(), f.KDC(t, ""), kdcops.TCP, []byte("req"), 2*time.Second)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			// Something answered: a wrong service, not an unreachable KDC.
			var bad *kdcops.BadReplyError
			if !errors.As(err, &bad) {
				t.Errorf("error %T, want *kdcops.BadReplyError", err)
			}
			if time.Since(begin) > time.Second {
				t.Errorf("took %v: a bad length must fail at once, not wait for the body", time.Since(begin))
			}
		})
	}
}

func TestSendRecvTCPShortReply(t *testing.T) {
	// The length says 100 bytes; 3 come, then the KDC side closes.
	f := startFakeKDCRaw(t, false, true, true, func(int, kdcops.Transport, []byte) []byte {
		return []byte{0, 0, 0, 100, 1, 2, 3}
	})
	// Close the server's connections once it has answered.
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() {
		_, err := kdcops.SendRecv(ctx, f.KDC(t, ""), kdcops.TCP, []byte("req"), 3*time.Second)
		errc <- err
	}()
	deadline := time.Now().Add(2 * time.Second)
	for f.Count(kdcops.TCP) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	err := <-errc
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
	if took < 100*time.Millisecond || took > 2*time.Second {
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
			f := startFakeKDC(t, true, true, func(int, kdcops.Transport, []byte) []byte { return nil })
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			begin := time.Now()
			_, err := kdcops.SendRecv(ctx, f.KDC(t, ""), tr, []byte("req"), 5*time.Second)
			if took := time.Since(begin); took > time.Second {
				t.Errorf("returned after %v; cancel must end the read at once", took)
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error %v, want context.Canceled", err)
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
