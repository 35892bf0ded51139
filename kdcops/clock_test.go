package kdcops_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/errorcode"

	"github.com/krbops/krbops/kdcops"
)

const testRealm = "TEST.REALM"

func testConfig(t *testing.T) *kdcops.Config {
	t.Helper()
	cfg, _, err := loadString(t, "[libdefaults]\n  default_realm = "+testRealm+"\n")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func probe(t *testing.T, ctx context.Context, k kdcops.KDC, opts kdcops.ProbeOptions) (*kdcops.ClockSample, error) {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	return kdcops.ProbeClock(ctx, testConfig(t), k, testRealm, "alice@"+testRealm, opts)
}

// answer replies to every request with a KRB-ERROR whose clock is offset.
func answer(t *testing.T, code int32, offset time.Duration) func(int, kdcops.Transport, []byte) []byte {
	return func(int, kdcops.Transport, []byte) []byte { return krbError(t, code, offset) }
}

// secondClock is a fake KDC's clock: base ahead of ours plus whatever puts
// it on a whole second when the first request comes, so the first reply
// comes at the very start of a KDC second however late it was sent, and
// refinement has a boundary about a second away.
type secondClock struct {
	base time.Duration
	once sync.Once
	off  time.Duration
}

func (c *secondClock) offset() time.Duration {
	c.once.Do(func() {
		now := time.Now()
		c.off = c.base + now.Truncate(time.Second).Add(time.Second).Sub(now)
	})
	return c.off
}

// answer replies to every request with a KRB-ERROR on this clock.
func (c *secondClock) answer(t *testing.T, code int32) func(int, kdcops.Transport, []byte) []byte {
	return func(int, kdcops.Transport, []byte) []byte { return krbError(t, code, c.offset()) }
}

// checkOffset checks a single-probe sample taken after before, against
// the fake's true offset want. A reply proves the KDC's clock was in
// [stime+susec, stime+1s) while the request was in flight, so one probe
// reports the middle of what that leaves: (1s - susec) + RTT wide, its
// middle up to half a second above the true offset. Every bound follows
// from the sample's own RTT: a slow round trip on a loaded machine widens
// the interval, it does not fail the test.
func checkOffset(t *testing.T, s *kdcops.ClockSample, want time.Duration, before time.Time) {
	t.Helper()
	const eps = time.Millisecond // the fake's clock has microsecond resolution
	if d := s.Offset - want; d < -s.RTT/2-eps || d > 500*time.Millisecond+s.RTT/2+eps {
		t.Errorf("Offset %v, want %v (up to +0.5s, ± RTT/2 = %v)", s.Offset, want, s.RTT/2)
	}
	if d := (s.Offset - want).Abs(); d > s.Uncertainty+eps {
		t.Errorf("true offset %v outside Offset %v ± Uncertainty %v", want, s.Offset, s.Uncertainty)
	}
	if s.Uncertainty < s.RTT/2 || s.Uncertainty > 500*time.Millisecond+s.RTT/2+eps {
		t.Errorf("Uncertainty %v, want between RTT/2 and 0.5s + RTT/2 (RTT %v)", s.Uncertainty, s.RTT)
	}
	if s.RTT <= 0 || s.RTT > 2*time.Second { // probe's per-call timeout
		t.Errorf("RTT %v", s.RTT)
	}
	// The fake stamped its reply during the call: after before, before now.
	if lo, hi := before.Add(want).Add(-eps), time.Now().Add(want); s.KDCTime.Before(lo) || s.KDCTime.After(hi) {
		t.Errorf("KDCTime %v not within the call, [%v, %v] on the fake's clock", s.KDCTime, lo, hi)
	}
	if s.KDCTime.Location() != time.UTC {
		t.Errorf("KDCTime not UTC: %v", s.KDCTime.Location())
	}
}

func TestProbeClockUDP(t *testing.T) {
	f := startFakeKDC(t, true, true, answer(t, errorcode.KDC_ERR_PREAUTH_REQUIRED, 420*time.Second))
	k := f.KDC(t, "")
	before := time.Now()
	s, err := probe(t, context.Background(), k, kdcops.ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkOffset(t, s, 420*time.Second, before)
	if s.Transport != kdcops.UDP || s.KDC != k.Entry {
		t.Errorf("Transport %q KDC %q", s.Transport, s.KDC)
	}
	if s.ErrorCode != 25 || s.ErrorName != "KDC_ERR_PREAUTH_REQUIRED" {
		t.Errorf("ErrorCode %d ErrorName %q", s.ErrorCode, s.ErrorName)
	}
	if s.Probes != 1 {
		t.Errorf("Probes %d, want 1 without refinement", s.Probes)
	}
	reqs := f.Requests()
	if len(reqs) != 1 || reqs[0].Transport != kdcops.UDP {
		t.Fatalf("fake saw %+v, want one udp request", reqs)
	}
	as := reqs[0].ASReq
	if as == nil {
		t.Fatal("request is not an AS-REQ")
	}
	if as.ReqBody.Realm != testRealm || as.ReqBody.CName.PrincipalNameString() != "alice" {
		t.Errorf("AS-REQ for %s@%s", as.ReqBody.CName.PrincipalNameString(), as.ReqBody.Realm)
	}
	if got := as.ReqBody.SName.PrincipalNameString(); got != "krbtgt/"+testRealm {
		t.Errorf("sname %q", got)
	}
	if len(as.PAData) != 0 {
		t.Errorf("probe carries pre-authentication data: %+v", as.PAData)
	}
	if len(as.ReqBody.EType) == 0 || slices.Contains(as.ReqBody.EType, 255) {
		t.Errorf("first probe etypes %v", as.ReqBody.EType)
	}
}

func TestProbeClockOffsets(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offset time.Duration
		code   int32
		want   string
	}{
		{"behind", -420 * time.Second, errorcode.KDC_ERR_PREAUTH_REQUIRED, "KDC_ERR_PREAUTH_REQUIRED"},
		{"in step, unknown principal", 0, errorcode.KDC_ERR_C_PRINCIPAL_UNKNOWN, "KDC_ERR_C_PRINCIPAL_UNKNOWN"},
		{"an hour ahead", time.Hour, errorcode.KDC_ERR_ETYPE_NOSUPP, "KDC_ERR_ETYPE_NOSUPP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeKDC(t, true, true, answer(t, tc.code, tc.offset))
			before := time.Now()
			s, err := probe(t, context.Background(), f.KDC(t, ""), kdcops.ProbeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkOffset(t, s, tc.offset, before)
			if s.ErrorCode != tc.code || s.ErrorName != tc.want {
				t.Errorf("ErrorCode %d ErrorName %q, want %q", s.ErrorCode, s.ErrorName, tc.want)
			}
		})
	}
}

func TestProbeClockRefine(t *testing.T) {
	t.Parallel() // refinement waits for a KDC second boundary
	// 420 s plus whatever puts the fake's clock on a whole second at the
	// first request: one probe leaves almost a second of doubt and
	// refinement is needed.
	clk := &secondClock{base: 420 * time.Second}
	f := startFakeKDC(t, true, true, clk.answer(t, errorcode.KDC_ERR_PREAUTH_REQUIRED))
	begin := time.Now()
	s, err := probe(t, context.Background(), f.KDC(t, ""), kdcops.ProbeOptions{Refine: 8, Target: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	offset := clk.offset()
	t.Logf("refinement: %d probes in %v, ±%v", s.Probes, time.Since(begin).Round(time.Millisecond), s.Uncertainty)
	if s.Probes < 2 || s.Probes > 9 {
		t.Errorf("Probes %d, want 2..9", s.Probes)
	}
	if s.Uncertainty > 100*time.Millisecond {
		t.Errorf("Uncertainty %v after refinement, want <= 100ms", s.Uncertainty)
	}
	if d := (s.Offset - offset).Abs(); d > s.Uncertainty+20*time.Millisecond {
		t.Errorf("Offset %v ± %v does not cover %v", s.Offset, s.Uncertainty, offset)
	}
	reqs := f.Requests()
	if len(reqs) != s.Probes {
		t.Errorf("fake saw %d requests, sample says %d probes", len(reqs), s.Probes)
	}
	// Each probe carries a fresh nonce: MIT's lookaside cache would answer
	// a repeated request with the cached (stale) reply.
	nonces := map[int]bool{}
	for _, r := range reqs {
		if r.ASReq == nil || r.Transport != kdcops.UDP {
			t.Fatalf("request %+v", r)
		}
		nonces[r.ASReq.ReqBody.Nonce] = true
	}
	if len(nonces) != len(reqs) {
		t.Errorf("%d distinct nonces over %d requests", len(nonces), len(reqs))
	}
}

func TestProbeClockRefineSticksToAnsweringTransport(t *testing.T) {
	t.Parallel()
	// UDP answers RESPONSE_TOO_BIG, so the first probe falls back to TCP;
	// every later probe must go straight to TCP instead of asking UDP again.
	clk := &secondClock{} // first reply at the start of a KDC second
	f := startFakeKDC(t, true, true, func(_ int, tr kdcops.Transport, _ []byte) []byte {
		if tr == kdcops.UDP {
			return krbError(t, errorcode.KRB_ERR_RESPONSE_TOO_BIG, clk.offset())
		}
		return krbError(t, errorcode.KDC_ERR_PREAUTH_REQUIRED, clk.offset())
	})
	s, err := probe(t, context.Background(), f.KDC(t, ""), kdcops.ProbeOptions{Refine: 3, Target: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if s.Transport != kdcops.TCP || s.Probes < 2 {
		t.Errorf("Transport %q Probes %d, want tcp and refinement", s.Transport, s.Probes)
	}
	if u, c := f.Count(kdcops.UDP), f.Count(kdcops.TCP); u != 1 || c != s.Probes {
		t.Errorf("udp %d tcp %d requests for %d probes, want udp only for the first", u, c, s.Probes)
	}
}

func TestProbeClockFallsBackToTCP(t *testing.T) {
	f := startFakeKDC(t, false, true, answer(t, errorcode.KDC_ERR_PREAUTH_REQUIRED, 420*time.Second))
	before := time.Now()
	s, err := probe(t, context.Background(), f.KDC(t, ""), kdcops.ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Transport != kdcops.TCP {
		t.Errorf("Transport %q, want tcp", s.Transport)
	}
	checkOffset(t, s, 420*time.Second, before)
	if n := f.Count(kdcops.TCP); n != 1 {
		t.Errorf("%d tcp requests", n)
	}
	if r := f.Requests(); r[0].ASReq == nil {
		t.Error("TCP request did not decode as an AS-REQ")
	}
}

func TestProbeClockTCPPreferredFallsBackToUDP(t *testing.T) {
	f := startFakeKDC(t, true, false, answer(t, errorcode.KDC_ERR_PREAUTH_REQUIRED, 0))
	k := f.KDC(t, "")
	k.Transport = kdcops.TCP // udp_preference_limit = 1
	s, err := probe(t, context.Background(), k, kdcops.ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Transport != kdcops.UDP || f.Count(kdcops.UDP) != 1 {
		t.Errorf("Transport %q, udp requests %d", s.Transport, f.Count(kdcops.UDP))
	}
}

func TestProbeClockResponseTooBigRetriesOverTCP(t *testing.T) {
	f := startFakeKDC(t, true, true, func(_ int, tr kdcops.Transport, _ []byte) []byte {
		if tr == kdcops.UDP {
			return krbError(t, errorcode.KRB_ERR_RESPONSE_TOO_BIG, 0)
		}
		return krbError(t, errorcode.KDC_ERR_PREAUTH_REQUIRED, 420*time.Second)
	})
	before := time.Now()
	s, err := probe(t, context.Background(), f.KDC(t, ""), kdcops.ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Transport != kdcops.TCP || s.ErrorCode != errorcode.KDC_ERR_PREAUTH_REQUIRED {
		t.Errorf("Transport %q ErrorCode %d", s.Transport, s.ErrorCode)
	}
	checkOffset(t, s, 420*time.Second, before)
	if u, c := f.Count(kdcops.UDP), f.Count(kdcops.TCP); u != 1 || c != 1 {
		t.Errorf("udp %d tcp %d requests, want 1 and 1", u, c)
	}
}

func TestProbeClockResponseTooBigForcedUDP(t *testing.T) {
	f := startFakeKDC(t, true, true, answer(t, errorcode.KRB_ERR_RESPONSE_TOO_BIG, 0))
	_, err := probe(t, context.Background(), f.KDC(t, "udp/"), kdcops.ProbeOptions{})
	if err == nil || !strings.Contains(err.Error(), "RESPONSE_TOO_BIG") {
		t.Fatalf("error %v", err)
	}
	if n := f.Count(kdcops.TCP); n != 0 {
		t.Errorf("udp/ KDC was tried over tcp (%d requests)", n)
	}
}

func TestProbeClockBadReplies(t *testing.T) {
	future := krbError(t, errorcode.KDC_ERR_PREAUTH_REQUIRED, 0)
	for _, tc := range []struct {
		name  string
		reply []byte
		want  string
	}{
		{"http", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), "not a Kerberos message (first byte 0x48)"},
		{"zeros", make([]byte, 64), "first byte 0x00"},
		{"empty datagram", []byte{}, "empty reply"},
		{"krb-error tag with junk", []byte{0x7e, 0x05, 0x01, 0x02, 0x03, 0x04, 0x05}, "cannot decode KRB-ERROR"},
		{"truncated krb-error", future[:len(future)/2], "cannot decode KRB-ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeKDC(t, true, true, func(int, kdcops.Transport, []byte) []byte { return tc.reply })
			k := f.KDC(t, "")
			_, err := probe(t, context.Background(), k, kdcops.ProbeOptions{})
			var bad *kdcops.BadReplyError
			if !errors.As(err, &bad) {
				t.Fatalf("error %v (%T), want *BadReplyError", err, err)
			}
			if bad.KDC != k.Entry || !strings.Contains(bad.Msg, tc.want) {
				t.Errorf("BadReplyError %+v, want %q", bad, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "kdc "+k.Entry+": ") {
				t.Errorf("Error() %q", err)
			}
			if n := f.Count(kdcops.TCP); n != 0 {
				t.Errorf("a bad reply was retried over tcp (%d)", n)
			}
		})
	}
}

func TestProbeClockASRepRetriesWithUnassignedEtype(t *testing.T) {
	f := startFakeKDC(t, true, true, func(n int, _ kdcops.Transport, _ []byte) []byte {
		if n == 1 {
			// An AS-REP: the principal needs no pre-authentication.
			return []byte{0x6b, 0x03, 0x02, 0x01, 0x05}
		}
		return krbError(t, errorcode.KDC_ERR_ETYPE_NOSUPP, 420*time.Second)
	})
	before := time.Now()
	s, err := probe(t, context.Background(), f.KDC(t, ""), kdcops.ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkOffset(t, s, 420*time.Second, before)
	if s.ErrorName != "KDC_ERR_ETYPE_NOSUPP" || s.Transport != kdcops.UDP {
		t.Errorf("ErrorName %q Transport %q", s.ErrorName, s.Transport)
	}
	reqs := f.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	first, second := reqs[0].ASReq, reqs[1].ASReq
	if first == nil || second == nil {
		t.Fatal("requests did not decode as AS-REQs")
	}
	if len(first.ReqBody.EType) == 0 || slices.Contains(first.ReqBody.EType, 255) {
		t.Errorf("first etypes %v", first.ReqBody.EType)
	}
	if !slices.Equal(second.ReqBody.EType, []int32{255}) {
		t.Errorf("second etypes %v, want [255]", second.ReqBody.EType)
	}
	if second.ReqBody.CName.PrincipalNameString() != "alice" || second.ReqBody.Realm != testRealm {
		t.Errorf("second request for %s@%s", second.ReqBody.CName.PrincipalNameString(), second.ReqBody.Realm)
	}
}

func TestProbeClockForcedTCPNeverTriesUDP(t *testing.T) {
	f := startFakeKDC(t, true, true, answer(t, errorcode.KDC_ERR_PREAUTH_REQUIRED, 420*time.Second))
	k := f.KDC(t, "tcp/")
	if !k.Forced || k.Transport != kdcops.TCP {
		t.Fatalf("KDC %+v", k)
	}
	before := time.Now()
	s, err := probe(t, context.Background(), k, kdcops.ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkOffset(t, s, 420*time.Second, before)
	if s.Transport != kdcops.TCP {
		t.Errorf("Transport %q", s.Transport)
	}
	if u, c := f.Count(kdcops.UDP), f.Count(kdcops.TCP); u != 0 || c != s.Probes {
		t.Errorf("udp %d tcp %d requests for %d probes", u, c, s.Probes)
	}
}

func TestProbeClockNothingListening(t *testing.T) {
	port := unusedPort(t)
	for _, tc := range []struct {
		prefix    string
		wantTried []kdcops.Transport
		want      string
	}{
		{"", []kdcops.Transport{kdcops.UDP, kdcops.TCP}, "over udp and tcp: connection refused"},
		{"tcp/", []kdcops.Transport{kdcops.TCP}, "over tcp: connection refused"},
		{"udp/", []kdcops.Transport{kdcops.UDP}, "over udp: connection refused"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			k, err := kdcops.ParseKDC(tc.prefix+"127.0.0.1:"+strconv.Itoa(port), kdcops.UDP)
			if err != nil {
				t.Fatal(err)
			}
			// ECONNREFUSED below proves the port refused: a timeout (a
			// minute here) would be a different error.
			_, err = probe(t, context.Background(), k, kdcops.ProbeOptions{Timeout: time.Minute})
			var ue *kdcops.UnreachableError
			if !errors.As(err, &ue) {
				t.Fatalf("error %v (%T), want *UnreachableError", err, err)
			}
			if !slices.Equal(ue.Tried, tc.wantTried) || ue.KDC != k.Entry {
				t.Errorf("UnreachableError %+v", ue)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), k.Entry) {
				t.Errorf("Error() %q, want %q", err, tc.want)
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("error does not unwrap to ECONNREFUSED: %v", err)
			}
		})
	}
}

func TestProbeClockTimeout(t *testing.T) {
	t.Parallel()
	f := startFakeKDC(t, true, false, func(int, kdcops.Transport, []byte) []byte { return nil })
	begin := time.Now()
	_, err := probe(t, context.Background(), f.KDC(t, "udp/"), kdcops.ProbeOptions{Timeout: 150 * time.Millisecond})
	// The deadline cannot pass sooner; 5s is SendRecv's default, which a
	// probe that dropped its Timeout would wait out.
	if took := time.Since(begin); took < 150*time.Millisecond || took >= 5*time.Second {
		t.Errorf("took %v for a 150ms timeout", took)
	}
	var ue *kdcops.UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "no reply before the timeout") {
		t.Errorf("error %v", err)
	}
}

func TestProbeClockTCPReplyTooLong(t *testing.T) {
	f := startFakeKDCRaw(t, false, true, true, func(int, kdcops.Transport, []byte) []byte {
		return []byte{0x01, 0x00, 0x00, 0x00} // 16 MiB
	})
	_, err := probe(t, context.Background(), f.KDC(t, "tcp/"), kdcops.ProbeOptions{})
	if err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("error %v", err)
	}
}

func TestProbeClockCancelledMidRead(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"", "tcp/"} {
		t.Run(prefix, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// The fake cancels when the request reaches it and never
			// answers: the probe is then blocked in its read.
			f := startFakeKDC(t, true, true, func(int, kdcops.Transport, []byte) []byte { cancel(); return nil })
			begin := time.Now()
			_, err := probe(t, ctx, f.KDC(t, prefix), kdcops.ProbeOptions{Timeout: time.Minute})
			// Only the cancel can end the read before the timeout.
			if took := time.Since(begin); took >= time.Minute {
				t.Errorf("returned after %v, at the timeout: the cancel did not end the read", took)
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error %v, want context.Canceled", err)
			}
			// A cancelled probe does not go on to the other transport.
			if prefix == "" && f.Count(kdcops.TCP) != 0 {
				t.Errorf("tcp tried after cancel")
			}
		})
	}
}

// countingLimiter counts the probes that asked to be sent.
type countingLimiter struct {
	mu    sync.Mutex
	waits int
}

func (l *countingLimiter) Wait(ctx context.Context) error {
	l.mu.Lock()
	l.waits++
	l.mu.Unlock()
	return ctx.Err()
}

// cancelOnRecord cancels when a log record with message msg is written.
type cancelOnRecord struct {
	msg    string
	cancel context.CancelFunc
}

func (h cancelOnRecord) Enabled(context.Context, slog.Level) bool { return true }
func (h cancelOnRecord) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.cancel()
	}
	return nil
}
func (h cancelOnRecord) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h cancelOnRecord) WithGroup(string) slog.Handler      { return h }

func TestProbeClockCancelledDuringRefine(t *testing.T) {
	t.Parallel()
	// The fake's first reply comes at the start of a KDC second, so the
	// one refinement probe is due about half a second later.
	clk := &secondClock{}
	f := startFakeKDC(t, true, true, clk.answer(t, errorcode.KDC_ERR_PREAUTH_REQUIRED))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancelled the moment the first reply is read (its "kdc reply" log
	// record), so the cancel lands in the wait before the refinement probe.
	lim := &countingLimiter{}
	_, err := probe(t, ctx, f.KDC(t, ""), kdcops.ProbeOptions{Refine: 1, Target: time.Nanosecond,
		Timeout: time.Minute, Limiter: lim, Log: slog.New(cancelOnRecord{msg: "kdc reply", cancel: cancel})})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	// A wait that ignored the cancel would go on to ask for the second
	// probe's slot.
	if lim.waits != 1 || f.Count(kdcops.UDP)+f.Count(kdcops.TCP) != 1 {
		t.Errorf("%d limiter waits, %d requests after a cancel before the refinement probe; want 1 and 1", lim.waits, len(f.Requests()))
	}
}

func TestErrorName(t *testing.T) {
	for code, want := range map[int32]string{
		25:  "KDC_ERR_PREAUTH_REQUIRED",
		6:   "KDC_ERR_C_PRINCIPAL_UNKNOWN",
		14:  "KDC_ERR_ETYPE_NOSUPP",
		37:  "KRB_AP_ERR_SKEW",
		52:  "KRB_ERR_RESPONSE_TOO_BIG",
		0:   "KDC_ERR_NONE",
		-1:  "KRB_ERROR_-1",
		999: "KRB_ERROR_999",
	} {
		if got := kdcops.ErrorName(code); got != want {
			t.Errorf("ErrorName(%d) = %q, want %q", code, got, want)
		}
	}
}

// mitClock answers like MIT's KDC: the first reply in a KDC second has
// the exact susec, every later one in that second the previous plus one.
type mitClock struct {
	off       time.Duration
	mu        sync.Mutex
	sec       time.Time
	lastSusec int
}

func (c *mitClock) answer(t *testing.T, code int32) func(int, kdcops.Transport, []byte) []byte {
	return func(int, kdcops.Transport, []byte) []byte {
		c.mu.Lock()
		defer c.mu.Unlock()
		now := time.Now().Add(c.off)
		sec, us := now.Truncate(time.Second), now.Nanosecond()/1000
		if sec.Equal(c.sec) {
			c.lastSusec++
			us = c.lastSusec
		}
		c.sec, c.lastSusec = sec, us
		return krbErrorAt(t, code, sec, us)
	}
}

// A KDC whose susec is exact (Heimdal, Samba AD; the fake's krbError) is
// recognised by two replies in one of its seconds, and the offset is then
// known to the round trip; an MIT-style KDC's unique susec is not taken
// for exact, and its interval still holds the truth.
func TestProbeClockExactSusec(t *testing.T) {
	t.Parallel()
	exact := startFakeKDC(t, true, true, answer(t, errorcode.KDC_ERR_PREAUTH_REQUIRED, 420*time.Second))
	s, err := probe(t, context.Background(), exact.KDC(t, ""), kdcops.ProbeOptions{Refine: 8, Target: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Bounded by the round trips of the two readings that proved it, not
	// by a second boundary.
	if s.Uncertainty > 2*s.RTT+5*time.Millisecond && s.Uncertainty > 50*time.Millisecond {
		t.Errorf("exact susec: Uncertainty %v (RTT %v, %d probes), want about the round trip", s.Uncertainty, s.RTT, s.Probes)
	}
	if d := (s.Offset - 420*time.Second).Abs(); d > s.Uncertainty+time.Millisecond {
		t.Errorf("exact susec: Offset %v ± %v does not cover 420s", s.Offset, s.Uncertainty)
	}

	mit := &mitClock{off: -90 * time.Second}
	f := startFakeKDC(t, true, true, mit.answer(t, errorcode.KDC_ERR_PREAUTH_REQUIRED))
	s, err = probe(t, context.Background(), f.KDC(t, ""), kdcops.ProbeOptions{Refine: 8, Target: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := (s.Offset - mit.off).Abs(); d > s.Uncertainty+time.Millisecond {
		t.Errorf("MIT-style susec: Offset %v ± %v does not cover %v", s.Offset, s.Uncertainty, mit.off)
	}
}
