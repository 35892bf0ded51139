package clock_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/clock"
)

func stepResult(t *testing.T, rep *runbook.Report, id string) runbook.StepResult {
	t.Helper()
	for _, sr := range rep.Steps {
		if sr.ID == id {
			return sr
		}
	}
	t.Fatalf("no step %q in report", id)
	return runbook.StepResult{}
}

// probeOutcome is what the fake KDC probe returns for one KDC.
type probeOutcome struct {
	offset time.Duration
	err    error
}

func mustKDC(t *testing.T, entry string) kdcops.KDC {
	t.Helper()
	k, err := kdcops.ParseKDC(entry, kdcops.UDP)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// clockCheck builds a ClockCheck over the given KDC entries with fake
// probes. ntp and aws are nil when that source is not configured.
func clockCheck(t *testing.T, kdcs []string, outcomes map[string]probeOutcome, ntp, aws *probeOutcome) *clock.Check {
	t.Helper()
	c := &clock.Check{
		Realm:    "EXAMPLE.COM",
		MaxSkew:  300 * time.Second,
		WarnSkew: 60 * time.Second,
	}
	for _, e := range kdcs {
		c.KDCs = append(c.KDCs, mustKDC(t, e))
	}
	c.ProbeKDC = func(_ context.Context, k kdcops.KDC) (*kdcops.ClockSample, error) {
		o, ok := outcomes[k.Entry]
		if !ok {
			t.Errorf("probe of unexpected KDC %q", k.Entry)
			return nil, errors.New("unexpected")
		}
		if o.err != nil {
			return nil, o.err
		}
		return &kdcops.ClockSample{
			KDC:         k.Entry,
			Transport:   k.Transport,
			Offset:      o.offset,
			RTT:         4 * time.Millisecond,
			Uncertainty: 2 * time.Millisecond,
			Probes:      3,
			KDCTime:     time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC).Add(o.offset),
			ErrorCode:   25,
			ErrorName:   "KDC_ERR_PREAUTH_REQUIRED",
		}, nil
	}
	if ntp != nil {
		c.NTPServer = "ntp.example.com"
		o := *ntp
		c.ProbeNTP = func(_ context.Context, host string) (*kdcops.SourceSample, error) {
			if host != "ntp.example.com" {
				t.Errorf("NTP probe of %q", host)
			}
			if o.err != nil {
				return nil, o.err
			}
			return &kdcops.SourceSample{Source: host, Offset: o.offset, RTT: 2 * time.Millisecond, Uncertainty: time.Millisecond, Stratum: 2}, nil
		}
	} else {
		c.ProbeNTP = func(context.Context, string) (*kdcops.SourceSample, error) {
			t.Error("NTP probed although no server was configured")
			return nil, errors.New("unexpected")
		}
	}
	if aws != nil {
		c.AWSEndpoint = "https://sts.us-east-1.amazonaws.com"
		o := *aws
		c.ProbeHTTP = func(_ context.Context, endpoint string) (*kdcops.SourceSample, error) {
			if endpoint != "https://sts.us-east-1.amazonaws.com" {
				t.Errorf("HTTP probe of %q", endpoint)
			}
			if o.err != nil {
				return nil, o.err
			}
			return &kdcops.SourceSample{Source: endpoint, Offset: o.offset, RTT: 20 * time.Millisecond, Uncertainty: 510 * time.Millisecond}, nil
		}
	} else {
		c.ProbeHTTP = func(context.Context, string) (*kdcops.SourceSample, error) {
			t.Error("HTTP probed although no endpoint was configured")
			return nil, errors.New("unexpected")
		}
	}
	return c
}

func runClock(c *clock.Check, strict bool) *runbook.Report {
	return runbook.Run(context.Background(), runbook.Runbook{Command: "clock-check", Steps: c.Steps()}, runbook.Options{Strict: strict})
}

func unreachable(entry string) error {
	return &kdcops.UnreachableError{KDC: entry, Transport: kdcops.UDP, Tried: []kdcops.Transport{kdcops.UDP, kdcops.TCP}, Err: syscall.ECONNREFUSED}
}

func TestClockStepsOrderAndIDs(t *testing.T) {
	none := probeOutcome{}
	c := clockCheck(t, []string{"kdc1.example.com", "tcp/kdc2.example.com:750"},
		map[string]probeOutcome{"kdc1.example.com": none, "tcp/kdc2.example.com:750": none}, &none, &none)
	var got []string
	for _, s := range c.Steps() {
		got = append(got, s.ID)
	}
	want := []string{
		"clock.kdc-offset:kdc1.example.com",
		"clock.kdc-offset:tcp/kdc2.example.com:750",
		clock.StepKDCSpread, clock.StepNTPOffset, clock.StepAWSOffset, clock.StepVerdict,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("steps %v, want %v", got, want)
	}
	if id := clock.KDCOffsetID(c.KDCs[0]); id != "clock.kdc-offset:kdc1.example.com" {
		t.Errorf("KDCOffsetID %q", id)
	}
	for _, s := range c.Steps()[:2] {
		if s.DecidedBy != clock.StepVerdict {
			t.Errorf("%s DecidedBy %q, want the verdict", s.ID, s.DecidedBy)
		}
	}

	// Without NTP and AWS those steps are absent.
	c = clockCheck(t, []string{"kdc1.example.com"}, map[string]probeOutcome{"kdc1.example.com": none}, nil, nil)
	got = nil
	for _, s := range c.Steps() {
		got = append(got, s.ID)
	}
	if want := []string{"clock.kdc-offset:kdc1.example.com", "clock.kdc-spread", "clock.verdict"}; !reflect.DeepEqual(got, want) {
		t.Errorf("steps %v, want %v", got, want)
	}
}

func TestClockKDCBeyondClockskewFails(t *testing.T) {
	c := clockCheck(t, []string{"kdc1.example.com", "kdc2.example.com"}, map[string]probeOutcome{
		"kdc1.example.com": {offset: 10 * time.Millisecond},
		"kdc2.example.com": {offset: 420 * time.Second},
	}, nil, nil)
	rep := runClock(c, false)

	k2 := stepResult(t, rep, "clock.kdc-offset:kdc2.example.com")
	if k2.Status != runbook.Fail {
		t.Fatalf("kdc2 status %q (%s), want fail", k2.Status, k2.Message)
	}
	if got := k2.Evidence["offset_seconds"]; got != 420.0 {
		t.Errorf("offset_seconds %v (%T), want 420", got, got)
	}
	if got := k2.Evidence["clockskew_seconds"]; got != 300.0 {
		t.Errorf("clockskew_seconds %v", got)
	}
	if !strings.Contains(k2.Message, "420.000s ahead of") || !strings.Contains(k2.Message, "clockskew 5m0s") {
		t.Errorf("message %q", k2.Message)
	}
	if !strings.Contains(k2.Hint, "kdc2.example.com") {
		t.Errorf("hint %q does not name the KDC host", k2.Hint)
	}
	if k1 := stepResult(t, rep, "clock.kdc-offset:kdc1.example.com"); k1.Status != runbook.Pass {
		t.Errorf("kdc1 status %q", k1.Status)
	}
	// 420 s between the KDCs is beyond clockskew as well.
	if sp := stepResult(t, rep, clock.StepKDCSpread); sp.Status != runbook.Fail {
		t.Errorf("spread %q %s", sp.Status, sp.Message)
	}
	v := stepResult(t, rep, clock.StepVerdict)
	if v.Status != runbook.Fail || !strings.Contains(v.Message, "kdc2.example.com") {
		t.Errorf("verdict %q %q", v.Status, v.Message)
	}
	if v.Evidence["worst_kdc"] != "kdc2.example.com" || v.Evidence["worst_offset_seconds"] != 420.0 {
		t.Errorf("verdict evidence %v", v.Evidence)
	}
	// Without --ntp the hint says how to find out which clock is wrong.
	if !strings.Contains(v.Hint, "--ntp") {
		t.Errorf("verdict hint %q", v.Hint)
	}
	if rep.Class != fault.CheckFailed || rep.Status != "fail" {
		t.Errorf("exit %d status %q", rep.Class, rep.Status)
	}
}

func TestClockNegativeOffsetBeyondClockskewFails(t *testing.T) {
	c := clockCheck(t, []string{"kdc1"}, map[string]probeOutcome{"kdc1": {offset: -400 * time.Second}}, nil, nil)
	rep := runClock(c, false)
	k := stepResult(t, rep, "clock.kdc-offset:kdc1")
	if k.Status != runbook.Fail || !strings.Contains(k.Message, "400.000s behind") {
		t.Errorf("%q %q", k.Status, k.Message)
	}
	if k.Evidence["offset_seconds"] != -400.0 {
		t.Errorf("offset_seconds %v", k.Evidence["offset_seconds"])
	}
	if rep.Class != fault.CheckFailed {
		t.Errorf("exit %d", rep.Class)
	}
}

func TestClockAllInStepPasses(t *testing.T) {
	c := clockCheck(t, []string{"kdc1", "kdc2", "kdc3"}, map[string]probeOutcome{
		"kdc1": {offset: 10 * time.Millisecond},
		"kdc2": {offset: -10 * time.Millisecond},
		"kdc3": {offset: 0},
	}, nil, nil)
	rep := runClock(c, true)
	for _, sr := range rep.Steps {
		if sr.Status != runbook.Pass {
			t.Errorf("%s: %q %s", sr.ID, sr.Status, sr.Message)
		}
	}
	if k3 := stepResult(t, rep, "clock.kdc-offset:kdc3"); !strings.Contains(k3.Message, "in step with") {
		t.Errorf("kdc3 message %q", k3.Message)
	}
	if sp := stepResult(t, rep, clock.StepKDCSpread); sp.Evidence["spread_seconds"] != 0.02 || sp.Evidence["kdcs_answered"] != 3 {
		t.Errorf("spread evidence %v", sp.Evidence)
	}
	v := stepResult(t, rep, clock.StepVerdict)
	if !strings.Contains(v.Message, "all 3 KDCs") || v.Evidence["kdcs_answered"] != 3 || v.Evidence["kdcs_configured"] != 3 {
		t.Errorf("verdict %q %v", v.Message, v.Evidence)
	}
	if rep.Class != fault.OK || rep.Status != "pass" {
		t.Errorf("exit %d status %q", rep.Class, rep.Status)
	}
}

func TestClockEvidenceKeys(t *testing.T) {
	k := mustKDC(t, "tcp/kdc1.example.com:750")
	c := clockCheck(t, nil, map[string]probeOutcome{"tcp/kdc1.example.com:750": {offset: 1500 * time.Millisecond}}, nil, nil)
	c.KDCs = []kdcops.KDC{k}
	rep := runClock(c, false)
	sr := stepResult(t, rep, clock.KDCOffsetID(k))
	for key, want := range map[string]any{
		"kdc":                 "tcp/kdc1.example.com:750",
		"offset_seconds":      1.5,
		"rtt_seconds":         0.004,
		"uncertainty_seconds": 0.002,
		"transport":           "tcp",
		"probes":              3,
		"kdc_reply":           "KDC_ERR_PREAUTH_REQUIRED",
		"clockskew_seconds":   300.0,
	} {
		got, ok := sr.Evidence[key]
		if !ok {
			t.Errorf("evidence key %q missing (have %v)", key, sr.Evidence.Keys())
			continue
		}
		if got != want {
			t.Errorf("evidence %s = %v (%T), want %v (%T)", key, got, got, want, want)
		}
	}
	if ps, ok := sr.Evidence["probe_seconds"].(float64); !ok || ps < 0 || ps > 5 {
		t.Errorf("probe_seconds %v", sr.Evidence["probe_seconds"])
	}
	if kt, ok := sr.Evidence["kdc_time"].(time.Time); !ok || kt.IsZero() {
		t.Errorf("kdc_time %v", sr.Evidence["kdc_time"])
	}
	if !strings.Contains(sr.Message, "±0.002s") {
		t.Errorf("message %q lacks the uncertainty", sr.Message)
	}
}

func TestClockWarnSkew(t *testing.T) {
	outcomes := map[string]probeOutcome{"kdc1": {offset: 90 * time.Second}}
	c := clockCheck(t, []string{"kdc1"}, outcomes, nil, nil)
	rep := runClock(c, false)
	k := stepResult(t, rep, "clock.kdc-offset:kdc1")
	if k.Status != runbook.Warn || !strings.Contains(k.Message, "past --warn-skew 1m0s") || k.Hint == "" {
		t.Errorf("kdc step %q %q hint %q", k.Status, k.Message, k.Hint)
	}
	if v := stepResult(t, rep, clock.StepVerdict); v.Status != runbook.Warn {
		t.Errorf("verdict %q", v.Status)
	}
	if rep.Class != fault.OK || rep.Status != "warn" {
		t.Errorf("exit %d status %q, want 0 warn", rep.Class, rep.Status)
	}

	rep = runClock(clockCheck(t, []string{"kdc1"}, outcomes, nil, nil), true)
	if rep.Class != fault.CheckFailed || rep.Status != "fail" {
		t.Errorf("strict: exit %d status %q, want 1 fail", rep.Class, rep.Status)
	}
}

func TestClockFirstKDCUnreachable(t *testing.T) {
	c := clockCheck(t, []string{"kdc1.example.com", "kdc2.example.com"}, map[string]probeOutcome{
		"kdc1.example.com": {err: unreachable("kdc1.example.com")},
		"kdc2.example.com": {offset: 20 * time.Millisecond},
	}, nil, nil)
	rep := runClock(c, false)
	k1 := stepResult(t, rep, "clock.kdc-offset:kdc1.example.com")
	if k1.Status != runbook.Error {
		t.Fatalf("kdc1 status %q", k1.Status)
	}
	if !strings.Contains(k1.Message, "unreachable") || !strings.Contains(k1.Message, "connection refused") {
		t.Errorf("kdc1 message %q", k1.Message)
	}
	if k1.Hint == "" || !strings.Contains(k1.Hint, "kdc1.example.com") || !strings.Contains(k1.Hint, "88") || !strings.Contains(k1.Hint, "udp and tcp") {
		t.Errorf("kdc1 hint %q", k1.Hint)
	}
	if k1.Evidence["kdc"] != "kdc1.example.com" || k1.Evidence["transport"] != "udp" {
		t.Errorf("kdc1 evidence %v", k1.Evidence)
	}
	if sp := stepResult(t, rep, clock.StepKDCSpread); sp.Status != runbook.Skip || !strings.Contains(sp.Message, "1 KDC answered") {
		t.Errorf("spread %q %q", sp.Status, sp.Message)
	}
	v := stepResult(t, rep, clock.StepVerdict)
	if v.Status != runbook.Pass && v.Status != runbook.Warn {
		t.Errorf("verdict %q %s, want pass or warn", v.Status, v.Message)
	}
	if v.Evidence["kdcs_answered"] != 1 || v.Evidence["kdcs_configured"] != 2 {
		t.Errorf("verdict evidence %v", v.Evidence)
	}
	if rep.Class != fault.OK {
		t.Errorf("exit %d, want 0: one KDC down is not an incomplete run (status %q)", rep.Class, rep.Status)
	}
}

func TestClockAllKDCsUnreachable(t *testing.T) {
	c := clockCheck(t, []string{"kdc1", "kdc2"}, map[string]probeOutcome{
		"kdc1": {err: unreachable("kdc1")},
		"kdc2": {err: unreachable("kdc2")},
	}, nil, nil)
	rep := runClock(c, false)
	v := stepResult(t, rep, clock.StepVerdict)
	if v.Status != runbook.Error || !strings.Contains(v.Message, "no KDC of EXAMPLE.COM answered (2 tried)") || v.Hint == "" {
		t.Errorf("verdict %q %q %q", v.Status, v.Message, v.Hint)
	}
	if rep.Class != fault.Unreachable || rep.Status != "error" {
		t.Errorf("exit %d status %q, want 3 error", rep.Class, rep.Status)
	}
}

func TestClockProbeErrorKinds(t *testing.T) {
	forced, err := kdcops.ParseKDC("tcp/kdc9.example.com:750", kdcops.UDP)
	if err != nil {
		t.Fatal(err)
	}
	c := clockCheck(t, []string{"kdc1", "kdc2"}, map[string]probeOutcome{
		"kdc1":       {err: &kdcops.BadReplyError{KDC: "kdc1", Msg: "reply is not a Kerberos message (first byte 0x48)"}},
		"kdc2":       {err: errors.New("build AS-REQ: boom")},
		forced.Entry: {err: &kdcops.UnreachableError{KDC: forced.Entry, Transport: kdcops.TCP, Err: syscall.ECONNREFUSED}},
	}, nil, nil)
	c.KDCs = append(c.KDCs, forced)
	rep := runClock(c, false)

	bad := stepResult(t, rep, "clock.kdc-offset:kdc1")
	if bad.Status != runbook.Error || !strings.Contains(bad.Hint, "kdc1:88") || !strings.Contains(bad.Message, "first byte 0x48") {
		t.Errorf("bad reply: %q %q %q", bad.Status, bad.Message, bad.Hint)
	}
	other := stepResult(t, rep, "clock.kdc-offset:kdc2")
	if other.Status != runbook.Error || !strings.Contains(other.Message, "probe of kdc2 failed: build AS-REQ: boom") || other.Hint == "" {
		t.Errorf("other error: %q %q %q", other.Status, other.Message, other.Hint)
	}
	f := stepResult(t, rep, clock.KDCOffsetID(forced))
	if f.Status != runbook.Error || !strings.Contains(f.Hint, "port 750 (tcp)") || strings.Contains(f.Hint, "udp") {
		t.Errorf("forced tcp: %q %q", f.Status, f.Hint)
	}
	if rep.Class != fault.Unreachable {
		t.Errorf("exit %d", rep.Class)
	}
}

func TestClockProbeInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := clockCheck(t, []string{"kdc1", "kdc2"}, map[string]probeOutcome{"kdc1": {}, "kdc2": {}}, nil, nil)
	// kdc1's probe is interrupted by the signal (it sends it); kdc2's waits
	// for it.
	c.ProbeKDC = func(ctx context.Context, k kdcops.KDC) (*kdcops.ClockSample, error) {
		if k.Entry == "kdc1" {
			cancel()
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	rep := runbook.Run(ctx, runbook.Runbook{Steps: c.Steps()}, runbook.Options{})
	k1 := stepResult(t, rep, "clock.kdc-offset:kdc1")
	if k1.Status != runbook.Error || k1.Message != "probe of kdc1 interrupted" {
		t.Errorf("kdc1 %q %q", k1.Status, k1.Message)
	}
	// kdc2 is probed in parallel with kdc1: it either had not started
	// when the run was cancelled (skipped) or was cut short (interrupted).
	if k2 := stepResult(t, rep, "clock.kdc-offset:kdc2"); k2.Status != runbook.Skip && k2.Message != "probe of kdc2 interrupted" {
		t.Errorf("kdc2 %q %q", k2.Status, k2.Message)
	}
	if rep.Class != fault.Cancelled || rep.Status != "cancelled" {
		t.Errorf("exit %d status %q", rep.Class, rep.Status)
	}
}

func TestClockSpreadWarn(t *testing.T) {
	c := clockCheck(t, []string{"kdc1", "kdc2"}, map[string]probeOutcome{
		"kdc1": {offset: 10 * time.Second},
		"kdc2": {offset: 200 * time.Second},
	}, nil, nil)
	rep := runClock(c, false)
	sp := stepResult(t, rep, clock.StepKDCSpread)
	if sp.Status != runbook.Warn {
		t.Fatalf("spread %q %q, want warn", sp.Status, sp.Message)
	}
	if sp.Evidence["spread_seconds"] != 190.0 || sp.Evidence["ahead_kdc"] != "kdc2" || sp.Evidence["behind_kdc"] != "kdc1" {
		t.Errorf("spread evidence %v", sp.Evidence)
	}
	if !strings.Contains(sp.Message, "190.000s (kdc2 ahead of kdc1)") || !strings.Contains(sp.Hint, "kdc1") || !strings.Contains(sp.Hint, "kdc2") {
		t.Errorf("spread %q %q", sp.Message, sp.Hint)
	}
	if rep.Class != fault.OK || rep.Status != "warn" {
		t.Errorf("exit %d status %q", rep.Class, rep.Status)
	}
}

func TestClockVerdictBlame(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ntp       time.Duration
		kdc       time.Duration
		wantHint  string
		wantNotIn string
	}{
		{"host agrees with NTP", 50 * time.Millisecond, 420 * time.Second, "the KDC kdc2 is wrong", "this host is wrong"},
		{"KDC agrees with NTP", 419 * time.Second, 420 * time.Second, "this host is wrong", "the KDC kdc2 is wrong"},
		{"neither agrees", 200 * time.Second, -300 * time.Second, "neither this host nor KDC kdc2", "is wrong"},
		{"host agrees, KDC warns", 0, 90 * time.Second, "the KDC kdc2 is wrong", "this host is wrong"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := clockCheck(t, []string{"kdc1", "kdc2"}, map[string]probeOutcome{
				"kdc1": {offset: tc.kdc / 100},
				"kdc2": {offset: tc.kdc},
			}, &probeOutcome{offset: tc.ntp}, nil)
			rep := runClock(c, false)
			v := stepResult(t, rep, clock.StepVerdict)
			if v.Status == runbook.Pass {
				t.Fatalf("verdict passed: %s", v.Message)
			}
			if !strings.Contains(v.Hint, tc.wantHint) || !strings.Contains(v.Hint, "ntp.example.com") {
				t.Errorf("hint %q, want %q", v.Hint, tc.wantHint)
			}
			if strings.Contains(v.Hint, tc.wantNotIn) {
				t.Errorf("hint %q must not say %q", v.Hint, tc.wantNotIn)
			}
		})
	}
}

func TestClockNTPStep(t *testing.T) {
	c := clockCheck(t, []string{"kdc1"}, map[string]probeOutcome{"kdc1": {}}, &probeOutcome{offset: 400 * time.Second}, nil)
	rep := runClock(c, false)
	n := stepResult(t, rep, clock.StepNTPOffset)
	if n.Status != runbook.Fail || !strings.Contains(n.Message, "NTP server ntp.example.com is 400.000s ahead of") {
		t.Errorf("ntp %q %q", n.Status, n.Message)
	}
	if !strings.Contains(n.Hint, "this host's clock is wrong") {
		t.Errorf("ntp hint %q", n.Hint)
	}
	if n.Evidence["server"] != "ntp.example.com" || n.Evidence["stratum"] != 2 || n.Evidence["offset_seconds"] != 400.0 || n.Evidence["limit_seconds"] != 300.0 {
		t.Errorf("ntp evidence %v", n.Evidence)
	}
	if rep.Class != fault.CheckFailed {
		t.Errorf("exit %d", rep.Class)
	}

	c = clockCheck(t, []string{"kdc1"}, map[string]probeOutcome{"kdc1": {}}, &probeOutcome{offset: 5 * time.Millisecond}, nil)
	rep = runClock(c, false)
	if n := stepResult(t, rep, clock.StepNTPOffset); n.Status != runbook.Pass {
		t.Errorf("ntp in step: %q %q", n.Status, n.Message)
	}
	if rep.Class != fault.OK {
		t.Errorf("exit %d", rep.Class)
	}
}

func TestClockNTPErrorIsStepError(t *testing.T) {
	c := clockCheck(t, []string{"kdc1"}, map[string]probeOutcome{"kdc1": {}},
		&probeOutcome{err: errors.New("ntp server ntp.example.com: i/o timeout")}, nil)
	rep := runClock(c, false)
	n := stepResult(t, rep, clock.StepNTPOffset)
	if n.Status != runbook.Error || !strings.Contains(n.Message, "i/o timeout") || !strings.Contains(n.Hint, "UDP 123") {
		t.Errorf("ntp %q %q %q", n.Status, n.Message, n.Hint)
	}
	if n.Evidence["server"] != "ntp.example.com" {
		t.Errorf("evidence %v", n.Evidence)
	}
	// Without an NTP sample the verdict cannot blame a side...
	if v := stepResult(t, rep, clock.StepVerdict); v.Status != runbook.Pass {
		t.Errorf("verdict %q", v.Status)
	}
	// ...and the failed comparison makes the run incomplete.
	if rep.Class != fault.Unreachable {
		t.Errorf("exit %d", rep.Class)
	}
}

func TestClockAWSUsesSigV4Limit(t *testing.T) {
	c := clockCheck(t, []string{"kdc1"}, map[string]probeOutcome{"kdc1": {offset: 301 * time.Second}},
		nil, &probeOutcome{offset: 301 * time.Second})
	c.MaxSkew = 600 * time.Second // clockskew larger than SigV4's 5 minutes
	rep := runClock(c, false)
	if k := stepResult(t, rep, "clock.kdc-offset:kdc1"); k.Status != runbook.Warn {
		t.Errorf("kdc at 301s with clockskew 600s: %q, want warn", k.Status)
	}
	a := stepResult(t, rep, clock.StepAWSOffset)
	if a.Status != runbook.Fail {
		t.Fatalf("aws %q %q, want fail", a.Status, a.Message)
	}
	if a.Evidence["limit_seconds"] != 300.0 || a.Evidence["endpoint"] != "https://sts.us-east-1.amazonaws.com" || a.Evidence["offset_seconds"] != 301.0 {
		t.Errorf("aws evidence %v", a.Evidence)
	}
	if !strings.Contains(a.Hint, "SigV4") || !strings.Contains(a.Message, "beyond 5m0s") {
		t.Errorf("aws %q %q", a.Message, a.Hint)
	}
	if clock.SigV4MaxSkew != 5*time.Minute {
		t.Errorf("SigV4MaxSkew %v", clock.SigV4MaxSkew)
	}
	if rep.Class != fault.CheckFailed {
		t.Errorf("exit %d", rep.Class)
	}
}

func TestClockAWSWarnAndError(t *testing.T) {
	c := clockCheck(t, []string{"kdc1"}, map[string]probeOutcome{"kdc1": {}}, nil, &probeOutcome{offset: -90 * time.Second})
	rep := runClock(c, false)
	if a := stepResult(t, rep, clock.StepAWSOffset); a.Status != runbook.Warn || !strings.Contains(a.Message, "90.000s behind") {
		t.Errorf("aws %q %q", a.Status, a.Message)
	}

	c = clockCheck(t, []string{"kdc1"}, map[string]probeOutcome{"kdc1": {}}, nil, &probeOutcome{err: errors.New("endpoint x: dial tcp: no route")})
	rep = runClock(c, false)
	a := stepResult(t, rep, clock.StepAWSOffset)
	if a.Status != runbook.Error || a.Hint == "" || a.Evidence["endpoint"] != "https://sts.us-east-1.amazonaws.com" {
		t.Errorf("aws error %q %q %v", a.Status, a.Hint, a.Evidence)
	}
	if rep.Class != fault.Unreachable {
		t.Errorf("exit %d", rep.Class)
	}
}

func TestClockDefaults(t *testing.T) {
	for _, tc := range []struct {
		name          string
		max, warn     time.Duration
		offset        time.Duration
		want          runbook.Status
		wantClockskew float64
		wantWarnSkew  float64
	}{
		{"zero max means 300s", 0, 0, 299 * time.Second, runbook.Warn, 300, 60},
		{"zero max, 301s fails", 0, 0, 301 * time.Second, runbook.Fail, 300, 60},
		{"warn above max is clamped", 30 * time.Second, 120 * time.Second, 31 * time.Second, runbook.Fail, 30, 30},
		{"warn above max, within", 30 * time.Second, 120 * time.Second, 29 * time.Second, runbook.Pass, 30, 30},
		{"negative warn defaults to 60s", 300 * time.Second, -1, 61 * time.Second, runbook.Warn, 300, 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := clockCheck(t, []string{"kdc1"}, map[string]probeOutcome{"kdc1": {offset: tc.offset}}, nil, nil)
			c.MaxSkew, c.WarnSkew = tc.max, tc.warn
			rep := runClock(c, false)
			if k := stepResult(t, rep, "clock.kdc-offset:kdc1"); k.Status != tc.want {
				t.Errorf("status %q (%s), want %q", k.Status, k.Message, tc.want)
			}
			v := stepResult(t, rep, clock.StepVerdict)
			if v.Evidence["clockskew_seconds"] != tc.wantClockskew || v.Evidence["warn_skew_seconds"] != tc.wantWarnSkew {
				t.Errorf("verdict evidence %v", v.Evidence)
			}
		})
	}
}

func TestClockVerdictTitleNamesRealm(t *testing.T) {
	c := clockCheck(t, []string{"kdc1"}, map[string]probeOutcome{"kdc1": {}}, nil, nil)
	steps := c.Steps()
	last := steps[len(steps)-1]
	if last.ID != clock.StepVerdict || last.Title != "clock verdict for realm EXAMPLE.COM" {
		t.Errorf("last step %q %q", last.ID, last.Title)
	}
	if steps[0].Title != "offset of KDC kdc1" {
		t.Errorf("first title %q", steps[0].Title)
	}
	// Steps is reusable: running it twice gives the same outcome (no state
	// leaks between runs through the ClockCheck).
	a, b := runClock(c, false), runClock(c, false)
	if fmt.Sprint(a.Summary) != fmt.Sprint(b.Summary) || a.ExitCode != b.ExitCode {
		t.Errorf("runs differ: %+v vs %+v", a.Summary, b.Summary)
	}
}

func TestClockProbesEachKDCOnceAndConcurrently(t *testing.T) {
	entries := []string{"kdc1", "kdc2", "kdc3", "kdc4"}
	outcomes := map[string]probeOutcome{}
	for _, e := range entries {
		outcomes[e] = probeOutcome{offset: time.Millisecond}
	}
	c := clockCheck(t, entries, outcomes, nil, nil)
	inner := c.ProbeKDC
	var mu sync.Mutex
	calls := map[string]int{}
	// Each probe waits until all four have started: probes made one after
	// the other would never get past the first, and the test binary's
	// -timeout would report the hang. No clock is read.
	var started sync.WaitGroup
	started.Add(len(entries))
	c.ProbeKDC = func(ctx context.Context, k kdcops.KDC) (*kdcops.ClockSample, error) {
		mu.Lock()
		calls[k.Entry]++
		mu.Unlock()
		started.Done()
		started.Wait()
		return inner(ctx, k)
	}
	rep := runClock(c, false)
	for _, e := range entries {
		if calls[e] != 1 {
			t.Errorf("%s probed %d times, want once", e, calls[e])
		}
		if sr := stepResult(t, rep, "clock.kdc-offset:"+e); sr.Status != runbook.Pass {
			t.Errorf("%s: %q %s", e, sr.Status, sr.Message)
		}
	}
	if rep.Class != fault.OK {
		t.Errorf("class %s", rep.Class)
	}
}
