package kdcops_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
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

// checkOffset checks a single-probe sample. The KDC's time has microsecond
// resolution but a reply only proves the KDC's clock was in
// [stime+susec, stime+1s), so one probe reports the middle of that window:
// up to half a second above the true offset, with Uncertainty covering it.
func checkOffset(t *testing.T, s *kdcops.ClockSample, want time.Duration) {
	t.Helper()
	if d := s.Offset - want; d < -100*time.Millisecond || d > 600*time.Millisecond {
		t.Errorf("Offset %v, want %v (+0.5s)", s.Offset, want)
	}
	if d := (s.Offset - want).Abs(); d > s.Uncertainty+50*time.Millisecond {
		t.Errorf("true offset %v outside Offset %v ± Uncertainty %v", want, s.Offset, s.Uncertainty)
	}
	if s.Uncertainty < 0 || s.Uncertainty > 600*time.Millisecond {
		t.Errorf("Uncertainty %v", s.Uncertainty)
	}
	if s.RTT <= 0 || s.RTT > time.Second {
		t.Errorf("RTT %v", s.RTT)
	}
	if d := s.KDCTime.Sub(time.Now().Add(want)).Abs(); d > 2*time.Second {
		t.Errorf("KDCTime %v is %v away from the fake's clock", s.KDCTime, d)
	}
	if s.KDCTime.Location() != time.UTC {
		t.Errorf("KDCTime not UTC: %v", s.KDCTime.Location())
	}
}

func TestProbeClockUDP(t *testing.T) {
	f := startFakeKDC(t, true, true, answer(t, errorcode.KDC_ERR_PREAUTH_REQUIRED, 420*time.Second))
	k := f.KDC(t, "")
	s, err := probe(t, context.Background(), k, kdcops.ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkOffset(t, s, 420*time.Second)
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
			s, err := probe(t, context.Background(), f.KDC(t, ""), kdcops.ProbeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkOffset(t, s, tc.offset)
			if s.ErrorCode != tc.code || s.ErrorName != tc.want {
				t.Errorf("ErrorCode %d ErrorName %q, want %q", s.ErrorCode, s.ErrorName, tc.want)
			}
		})
	}
}

func TestProbeClockRefine(t *testing.T) {
	t.Parallel() // refinement waits for a KDC second boundary
	// 420 s plus whatever puts the fake's clock on a whole second now: its
	// first reply comes early in a KDC second, so one probe leaves almost
	// a second of doubt and refinement is needed.
	begin := time.Now()
	offset := 420*time.Second + begin.Truncate(time.Second).Add(time.Second).Sub(begin)
	f := startFakeKDC(t, true, true, answer(t, errorcode.KDC_ERR_PREAUTH_REQUIRED, offset))
	s, err := probe(t, context.Background(), f.KDC(t, ""), kdcops.ProbeOptions{Refine: 8, Target: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("refinement took %v", took)
	}
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
	begin := time.Now()
	offset := begin.Truncate(time.Second).Add(time.Second).Sub(begin) // first reply early in a KDC second
	f := startFakeKDC(t, true, true, func(_ int, tr kdcops.Transport, _ []byte) []byte {
		if tr == kdcops.UDP {
			return krbError(t, errorcode.KRB_ERR_RESPONSE_TOO_BIG, offset)
		}
		return krbError(t, errorcode.KDC_ERR_PREAUTH_REQUIRED, offset)
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
	s, err := probe(t, context.Background(), f.KDC(t, ""), kdcops.ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Transport != kdcops.TCP {
		t.Errorf("Transport %q, want tcp", s.Transport)
	}
	checkOffset(t, s, 420*time.Second)
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
	s, err := probe(t, context.Background(), f.KDC(t, ""), kdcops.ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Transport != kdcops.TCP || s.ErrorCode != errorcode.KDC_ERR_PREAUTH_REQUIRED {
		t.Errorf("Transport %q ErrorCode %d", s.Transport, s.ErrorCode)
	}
	checkOffset(t, s, 420*time.Second)
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
	s, err := probe(t, context.Background(), f.KDC(t, ""), kdcops.ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkOffset(t, s, 420*time.Second)
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
	s, err := probe(t, context.Background(), k, kdcops.ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkOffset(t, s, 420*time.Second)
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
			begin := time.Now()
			_, err = probe(t, context.Background(), k, kdcops.ProbeOptions{Timeout: 3 * time.Second})
			if took := time.Since(begin); took > time.Second {
				t.Errorf("took %v for a refused port", took)
			}
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
	if took := time.Since(begin); took > time.Second {
		t.Errorf("took %v", took)
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
			// The fake never answers; the probe blocks in a read.
			f := startFakeKDC(t, true, true, func(int, kdcops.Transport, []byte) []byte { return nil })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			time.AfterFunc(100*time.Millisecond, cancel)
			begin := time.Now()
			_, err := probe(t, ctx, f.KDC(t, prefix), kdcops.ProbeOptions{Timeout: 5 * time.Second})
			if took := time.Since(begin); took > time.Second {
				t.Errorf("returned after %v, want < 1s", took)
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

func TestProbeClockCancelledDuringRefine(t *testing.T) {
	t.Parallel()
	// The fake's first reply comes early in a KDC second, so refinement
	// has to wait most of a second for the next boundary.
	now := time.Now()
	f := startFakeKDC(t, true, true, answer(t, errorcode.KDC_ERR_PREAUTH_REQUIRED, now.Truncate(time.Second).Add(time.Second).Sub(now)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(50*time.Millisecond, cancel)
	begin := time.Now()
	// A target no probe can reach keeps it refining until cancelled.
	_, err := probe(t, ctx, f.KDC(t, ""), kdcops.ProbeOptions{Refine: 1000, Target: time.Nanosecond})
	if took := time.Since(begin); took > time.Second {
		t.Errorf("returned after %v", took)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
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
