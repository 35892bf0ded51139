package kdcops_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
)

func dateServer(t *testing.T, date func() []string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A nil value suppresses net/http's own Date header.
		w.Header()["Date"] = date()
		w.WriteHeader(http.StatusForbidden) // AWS answers unsigned requests with 403; any status will do
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPDateOffset(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offset time.Duration
	}{
		{"ten minutes ahead", 10 * time.Minute},
		{"in step", 0},
		{"an hour behind", -time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := dateServer(t, func() []string {
				return []string{time.Now().Add(tc.offset).UTC().Format(http.TimeFormat)}
			})
			s, err := kdcops.HTTPDateOffset(context.Background(), srv.URL, 2*time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The Date header has one-second resolution: the estimate is
			// the middle of that second, so it is never more than 0.5 s
			// off plus half the round trip, however slow the round trip.
			if d := (s.Offset - tc.offset).Abs(); d > s.Uncertainty+time.Millisecond {
				t.Errorf("Offset %v ± %v does not cover %v", s.Offset, s.Uncertainty, tc.offset)
			}
			if s.RTT <= 0 || s.RTT > 2*time.Second { // the call's timeout
				t.Errorf("RTT %v", s.RTT)
			}
			if s.Uncertainty != s.RTT/2+500*time.Millisecond {
				t.Errorf("Uncertainty %v != RTT/2 + 0.5s (RTT %v)", s.Uncertainty, s.RTT)
			}
			if s.Source != srv.URL || s.Stratum != 0 {
				t.Errorf("Source %q Stratum %d", s.Source, s.Stratum)
			}
		})
	}
}

func TestHTTPDateOffsetErrors(t *testing.T) {
	t.Parallel()
	t.Run("no Date header", func(t *testing.T) {
		srv := dateServer(t, func() []string { return nil })
		_, err := kdcops.HTTPDateOffset(context.Background(), srv.URL, 2*time.Second, nil)
		if err == nil || !strings.Contains(err.Error(), "no Date header") || !strings.Contains(err.Error(), srv.URL) {
			t.Errorf("error %v", err)
		}
	})
	t.Run("unparsable Date", func(t *testing.T) {
		srv := dateServer(t, func() []string { return []string{"yesterday-ish"} })
		_, err := kdcops.HTTPDateOffset(context.Background(), srv.URL, 2*time.Second, nil)
		if err == nil || !strings.Contains(err.Error(), `unparsable Date header "yesterday-ish"`) {
			t.Errorf("error %v", err)
		}
	})
	t.Run("scheme defaults to https", func(t *testing.T) {
		srv := dateServer(t, func() []string { return []string{time.Now().UTC().Format(http.TimeFormat)} })
		hostport := strings.TrimPrefix(srv.URL, "http://")
		// A TLS handshake with a plain-HTTP server fails: proof that the
		// bare host:port was taken as https.
		_, err := kdcops.HTTPDateOffset(context.Background(), hostport, 2*time.Second, nil)
		if err == nil || !strings.Contains(err.Error(), "https://"+hostport) {
			t.Errorf("error %v", err)
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		url := "http://127.0.0.1:" + strconv.Itoa(unusedPort(t))
		_, err := kdcops.HTTPDateOffset(context.Background(), url, time.Second, nil)
		if err == nil || !strings.Contains(err.Error(), "endpoint "+url) {
			t.Errorf("error %v", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
		t.Cleanup(srv.Close)
		t.Cleanup(func() { close(release) })
		begin := time.Now()
		_, err := kdcops.HTTPDateOffset(context.Background(), srv.URL, 150*time.Millisecond, nil)
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v, want a deadline", err)
		}
		// The deadline cannot pass sooner; 5s is the default timeout, which
		// a call that dropped its argument would wait out.
		if took := time.Since(begin); took < 150*time.Millisecond || took >= 5*time.Second {
			t.Errorf("took %v for a 150ms timeout", took)
		}
	})
}

// ntpTime converts t to an NTP timestamp (seconds since 1900, 32.32 fixed
// point).
func ntpTime(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800 // 1900-01-01 to 1970-01-01
	secs := uint64(t.Unix() + ntpEpochOffset)
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return secs<<32 | frac
}

// fakeNTP is a minimal SNTP server on 127.0.0.1 whose clock is offset from
// ours. mutate may alter each 48-byte reply before it is sent.
func fakeNTP(t *testing.T, offset time.Duration, mutate func(reply []byte)) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 512)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 48 {
				continue
			}
			recv := time.Now().Add(offset)
			reply := make([]byte, 48)
			reply[0] = 0<<6 | 4<<3 | 4                        // leap 0, version 4, mode 4 (server)
			reply[1] = 2                                      // stratum
			reply[2] = 6                                      // poll
			reply[3] = 0xec                                   // precision -20
			binary.BigEndian.PutUint32(reply[4:], 0x00000100) // root delay ~4ms
			binary.BigEndian.PutUint32(reply[8:], 0x00000100) // root dispersion ~4ms
			copy(reply[12:16], []byte{127, 0, 0, 1})          // reference id
			binary.BigEndian.PutUint64(reply[16:], ntpTime(recv.Add(-10*time.Second)))
			copy(reply[24:32], buf[40:48]) // originate = client's transmit
			binary.BigEndian.PutUint64(reply[32:], ntpTime(recv))
			binary.BigEndian.PutUint64(reply[40:], ntpTime(time.Now().Add(offset)))
			if mutate != nil {
				mutate(reply)
			}
			pc.WriteTo(reply, addr)
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return pc.LocalAddr().String()
}

func TestNTPOffset(t *testing.T) {
	for _, offset := range []time.Duration{30 * time.Second, 0, -90 * time.Second} {
		t.Run(offset.String(), func(t *testing.T) {
			addr := fakeNTP(t, offset, nil)
			s, err := kdcops.NTPOffset(context.Background(), addr, 2*time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The server stamps both its times during the exchange, so the
			// estimate is off by at most half the round trip (NTP's
			// fixed-point timestamps round below a nanosecond).
			if d := (s.Offset - offset).Abs(); d > s.Uncertainty+time.Microsecond {
				t.Errorf("Offset %v ± %v does not cover %v", s.Offset, s.Uncertainty, offset)
			}
			if s.Stratum != 2 || s.Source != addr {
				t.Errorf("Stratum %d Source %q", s.Stratum, s.Source)
			}
			if s.RTT < 0 || s.RTT > 2*time.Second || s.Uncertainty != s.RTT/2 { // 2s: the call's timeout
				t.Errorf("RTT %v Uncertainty %v", s.RTT, s.Uncertainty)
			}
		})
	}
}

func TestNTPOffsetErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func([]byte)
		want   string
	}{
		{"kiss of death", func(b []byte) { b[1] = 0; copy(b[12:16], "RATE") }, "kiss of death"},
		{"unsynchronised leap", func(b []byte) { b[0] = 3<<6 | 4<<3 | 4 }, "leap"},
		{"client mode reply", func(b []byte) { b[0] = 4<<3 | 3 }, "mode"},
		{"wrong originate", func(b []byte) { b[24] ^= 0xff }, "didn't match request"},
		{"stale reference", func(b []byte) {
			binary.BigEndian.PutUint64(b[16:], ntpTime(time.Now().Add(-72*time.Hour)))
		}, "fresh"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeNTP(t, 0, tc.mutate)
			_, err := kdcops.NTPOffset(context.Background(), addr, time.Second, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), "ntp server "+addr+": ") || !strings.Contains(strings.ToLower(err.Error()), tc.want) {
				t.Errorf("error %q, want %q", err, tc.want)
			}
		})
	}
}

func TestNTPOffsetNoReply(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() }) // bound but silent
	addr := pc.LocalAddr().String()

	begin := time.Now()
	_, err = kdcops.NTPOffset(context.Background(), addr, 150*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), "ntp server "+addr) {
		t.Errorf("timeout: %v", err)
	}
	// The deadline cannot pass sooner; 5s is the default timeout, which a
	// call that dropped its argument would wait out.
	if took := time.Since(begin); took < 150*time.Millisecond || took >= 5*time.Second {
		t.Errorf("timeout took %v for 150ms", took)
	}

	// Cancelled once the request reached another silent server: only the
	// cancel can end the read before the minute's timeout.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		buf := make([]byte, 512)
		if _, _, err := silent.ReadFrom(buf); err == nil {
			cancel()
		}
	}()
	begin = time.Now()
	_, err = kdcops.NTPOffset(ctx, silent.LocalAddr().String(), time.Minute, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancel: %v, want context.Canceled", err)
	}
	if took := time.Since(begin); took >= time.Minute {
		t.Errorf("cancel took %v: the timeout, not the cancel, ended the read", took)
	}
}
