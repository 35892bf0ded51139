// Package clock is the clock-check runbook: every KDC's clock offset, read
// from its KRB-ERROR without credentials, the spread between KDCs, this
// host against NTP and an AWS endpoint, and a verdict. Start with
// [Check.Steps]; verify and rotate reuse [Check.FirstKDCStep].
package clock

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
)

// runbook.Step ids of the clock runbook. KDC probe steps are "clock.kdc-offset:"
// followed by the KDC as configured, one per KDC.
const (
	StepKDCOffset = "clock.kdc-offset"
	StepKDCSpread = "clock.kdc-spread"
	StepNTPOffset = "clock.ntp-offset"
	StepAWSOffset = "clock.aws-offset"
	StepVerdict   = "clock.verdict"
)

// SigV4MaxSkew is AWS Signature V4's fixed tolerance.
const SigV4MaxSkew = 5 * time.Minute

// Check describes one clock-check run. The probe functions default to
// the real kdcops probes; tests replace them.
type Check struct {
	Config      *kdcops.Config
	Realm       string
	Principal   string
	KDCs        []kdcops.KDC
	NTPServer   string // optional
	AWSEndpoint string // optional
	// TLS is the AWS endpoint probe's trust (--ca-bundle); nil: default.
	TLS      *tls.Config
	WarnSkew time.Duration
	MaxSkew  time.Duration // krb5.conf clockskew
	Timeout  time.Duration
	Log      *slog.Logger
	// Quick sends one AS-REQ per KDC instead of refining around a second
	// boundary: ±1s is plenty for a verdict against a 300s clockskew, and
	// a fleet check should not send nine probes per run.
	Quick bool
	// Limiter, when set, paces the probes (verify --kdc-rate).
	Limiter kdcops.Limiter

	ProbeKDC  func(ctx context.Context, k kdcops.KDC) (*kdcops.ClockSample, error)
	ProbeNTP  func(ctx context.Context, host string) (*kdcops.SourceSample, error)
	ProbeHTTP func(ctx context.Context, endpoint string) (*kdcops.SourceSample, error)
}

func (c *Check) defaults() {
	if c.ProbeKDC == nil {
		c.ProbeKDC = func(ctx context.Context, k kdcops.KDC) (*kdcops.ClockSample, error) {
			refine := kdcops.DefaultRefine
			if c.Quick {
				refine = 0
			}
			return kdcops.ProbeClock(ctx, c.Config, k, c.Realm, c.Principal, kdcops.ProbeOptions{
				Timeout: c.Timeout, Log: c.Log, Refine: refine, Target: kdcops.DefaultTarget, Limiter: c.Limiter,
			})
		}
	}
	if c.ProbeNTP == nil {
		c.ProbeNTP = func(ctx context.Context, host string) (*kdcops.SourceSample, error) {
			return kdcops.NTPOffset(ctx, host, c.Timeout, c.Log)
		}
	}
	if c.ProbeHTTP == nil {
		c.ProbeHTTP = func(ctx context.Context, endpoint string) (*kdcops.SourceSample, error) {
			return kdcops.HTTPDateOffsetTLS(ctx, endpoint, c.Timeout, c.TLS, c.Log)
		}
	}
	if c.MaxSkew <= 0 {
		c.MaxSkew = 300 * time.Second
	}
	if c.WarnSkew <= 0 || c.WarnSkew > c.MaxSkew {
		c.WarnSkew = min(60*time.Second, c.MaxSkew)
	}
}

// run is what the steps of one clock-check run share: each KDC step
// records its sample (they run in parallel), the NTP step its reading,
// and the spread and verdict steps read them.
type run struct {
	mu      sync.Mutex
	samples map[string]*kdcops.ClockSample // by KDC entry, answered KDCs only
	ntp     *kdcops.SourceSample
}

func (r *run) addSample(entry string, s *kdcops.ClockSample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples[entry] = s
}

// answered returns the samples; callers run after the KDC group finished.
func (r *run) answered() map[string]*kdcops.ClockSample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.samples
}

// KDCOffsetID is the step id of the probe of one KDC.
func KDCOffsetID(k kdcops.KDC) string { return StepKDCOffset + ":" + k.Entry }

// Steps returns the clock runbook in its fixed order: one probe per KDC
// (all KDCs at once: a precise probe waits for a KDC second boundary, up
// to a second, and an on-call should not wait that long once per KDC),
// the spread between KDCs, the optional NTP and AWS comparisons, and the
// verdict.
func (c Check) Steps() []runbook.Step {
	c.defaults()
	r := &run{samples: map[string]*kdcops.ClockSample{}}
	var steps []runbook.Step
	for _, k := range c.KDCs {
		steps = append(steps, runbook.Step{
			ID:        KDCOffsetID(k),
			Title:     "offset of KDC " + k.Entry,
			DecidedBy: StepVerdict,
			Parallel:  StepKDCOffset,
			Run:       func(ctx context.Context, _ *runbook.State) runbook.Result { return c.probeKDC(ctx, r, k) },
		})
	}
	steps = append(steps, runbook.Step{ID: StepKDCSpread, Title: "spread between KDCs",
		Run: func(context.Context, *runbook.State) runbook.Result { return c.spread(r) }})
	if c.NTPServer != "" {
		steps = append(steps, runbook.Step{ID: StepNTPOffset, Title: "offset of NTP " + c.NTPServer,
			Run: func(ctx context.Context, _ *runbook.State) runbook.Result { return c.ntp(ctx, r) }})
	}
	if c.AWSEndpoint != "" {
		steps = append(steps, runbook.Step{ID: StepAWSOffset, Title: "offset of AWS endpoint",
			Run: func(ctx context.Context, _ *runbook.State) runbook.Result { return c.aws(ctx) }})
	}
	steps = append(steps, runbook.Step{ID: StepVerdict, Title: "clock verdict for realm " + c.Realm,
		Run: func(context.Context, *runbook.State) runbook.Result { return c.verdict(r) }})
	return steps
}

func describeOffset(d time.Duration) string {
	switch {
	case d > 0:
		return fmt.Sprintf("%.3fs ahead of", d.Seconds())
	case d < 0:
		return fmt.Sprintf("%.3fs behind", -d.Seconds())
	}
	return "in step with"
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

type probeOutcome struct {
	sample *kdcops.ClockSample
	err    error
	took   time.Duration
}

// FirstKDCStep is one clock probe of the realm: KDCs in order until one
// answers, judged like a clock-check KDC step. verify runs it before
// talking to the KDC with keys.
func (c Check) FirstKDCStep(id, title string) runbook.Step {
	c.defaults()
	return runbook.Step{ID: id, Title: title, Run: func(ctx context.Context, st *runbook.State) runbook.Result {
		var last runbook.Result
		for _, k := range c.KDCs {
			begin := time.Now()
			s, err := c.ProbeKDC(ctx, k)
			if err != nil {
				last = kdcProbeError(ctx, k, err)
				if ctx.Err() != nil {
					return last
				}
				continue
			}
			return c.offsetResult(k, probeOutcome{sample: s, took: time.Since(begin)})
		}
		if len(c.KDCs) > 1 {
			return runbook.Errorf("no KDC of %s answered (%d tried); last: %s", c.Realm, len(c.KDCs), last.Message).With(last.Evidence).WithHint("%s", last.Hint)
		}
		return last
	}}
}

func (c Check) probeKDC(ctx context.Context, r *run, k kdcops.KDC) runbook.Result {
	begin := time.Now()
	s, err := c.ProbeKDC(ctx, k)
	if err != nil {
		return kdcProbeError(ctx, k, err)
	}
	r.addSample(k.Entry, s)
	return c.offsetResult(k, probeOutcome{sample: s, took: time.Since(begin)})
}

func (c Check) offsetResult(k kdcops.KDC, out probeOutcome) runbook.Result {
	s := out.sample
	ev := runbook.Evidence{
		"kdc":                 k.Entry,
		"offset_seconds":      runbook.Seconds(s.Offset),
		"rtt_seconds":         runbook.Seconds(s.RTT),
		"uncertainty_seconds": runbook.Seconds(s.Uncertainty),
		"probes":              s.Probes,
		"probe_seconds":       runbook.Seconds(out.took),
		"transport":           string(s.Transport),
		"kdc_time":            s.KDCTime,
		"kdc_reply":           s.ErrorName,
		"clockskew_seconds":   c.MaxSkew.Seconds(),
	}
	msg := fmt.Sprintf("KDC is %s this host (±%.3fs)", describeOffset(s.Offset), s.Uncertainty.Seconds())
	off := abs(s.Offset)
	switch {
	case off > c.MaxSkew:
		return runbook.Failf("%s; beyond clockskew %s", msg, c.MaxSkew).With(ev).
			WithHint("Kerberos to this KDC fails with KRB_AP_ERR_SKEW: compare `chronyc tracking` on %s and on this host and fix the wrong one (re-run with --ntp to tell which)", k.Host)
	case off > c.WarnSkew:
		return runbook.Warnf("%s; within clockskew %s but past --warn-skew %s", msg, c.MaxSkew, c.WarnSkew).With(ev).
			WithHint("time sync is drifting: check chrony/ntpd on %s and on this host before it reaches %s", k.Host, c.MaxSkew)
	}
	return runbook.Passf("%s", msg).With(ev)
}

func kdcProbeError(ctx context.Context, k kdcops.KDC, err error) runbook.Result {
	ev := runbook.Evidence{"kdc": k.Entry, "transport": string(k.Transport)}
	if ctx.Err() != nil {
		return runbook.Errorf("probe of %s interrupted", k.Entry).With(ev)
	}
	var unreachable *kdcops.UnreachableError
	var bad *kdcops.BadReplyError
	switch {
	case errors.As(err, &unreachable):
		tried := "udp and tcp"
		if k.Forced {
			tried = string(k.Transport)
		}
		return runbook.Errorf("%s", err.Error()).With(ev).
			WithHint("check that krb5kdc runs on %s and that port %d (%s) is open from this host; the other KDCs were still measured", k.Host, k.Port, tried)
	case errors.As(err, &bad):
		return runbook.Errorf("%s", err.Error()).With(ev).
			WithHint("something other than a KDC answers on %s: check the kdc entry in krb5.conf", k.Addr())
	}
	return runbook.Errorf("probe of %s failed: %s", k.Entry, err.Error()).With(ev).
		WithHint("re-run with -v or --log-file to see the exchange")
}

func (c Check) spread(r *run) runbook.Result {
	m := r.answered()
	if len(m) < 2 {
		return runbook.Result{Status: runbook.Skip, Message: fmt.Sprintf("skipped: %d KDC answered, need two to compare", len(m))}
	}
	var lo, hi *kdcops.ClockSample
	for _, k := range c.KDCs {
		s, ok := m[k.Entry]
		if !ok {
			continue
		}
		if lo == nil || s.Offset < lo.Offset {
			lo = s
		}
		if hi == nil || s.Offset > hi.Offset {
			hi = s
		}
	}
	spread := hi.Offset - lo.Offset
	ev := runbook.Evidence{
		"spread_seconds": runbook.Seconds(spread),
		"ahead_kdc":      hi.KDC,
		"behind_kdc":     lo.KDC,
		"kdcs_answered":  len(m),
	}
	msg := fmt.Sprintf("KDCs differ by %.3fs (%s ahead of %s)", spread.Seconds(), hi.KDC, lo.KDC)
	switch {
	case spread > c.MaxSkew:
		return runbook.Failf("%s; beyond clockskew %s", msg, c.MaxSkew).With(ev).
			WithHint("clients fail or succeed depending on which KDC they reach: fix time sync on the KDC that disagrees with NTP")
	case spread > c.WarnSkew:
		return runbook.Warnf("%s; past --warn-skew %s", msg, c.WarnSkew).With(ev).
			WithHint("the KDCs' clocks are drifting apart: check chrony/ntpd on %s and %s", hi.KDC, lo.KDC)
	}
	return runbook.Passf("KDCs agree within %.3fs", spread.Seconds()).With(ev)
}

func (c Check) ntp(ctx context.Context, r *run) runbook.Result {
	s, err := c.ProbeNTP(ctx, c.NTPServer)
	if err != nil {
		return runbook.Errorf("%s", err.Error()).With(runbook.Evidence{"server": c.NTPServer}).
			WithHint("check the server name and that UDP 123 is open from this host")
	}
	r.ntp = s
	return sourceResult("NTP server "+c.NTPServer, s, c.MaxSkew, c.WarnSkew,
		"this host's clock is wrong: fix chrony/ntpd here (`chronyc tracking`, `chronyc makestep`)").
		With(runbook.Evidence{"server": c.NTPServer, "stratum": s.Stratum})
}

func (c Check) aws(ctx context.Context) runbook.Result {
	s, err := c.ProbeHTTP(ctx, c.AWSEndpoint)
	if err != nil {
		return runbook.Errorf("%s", err.Error()).With(runbook.Evidence{"endpoint": c.AWSEndpoint}).
			WithHint("check the endpoint URL and the network path (proxy, firewall) to it")
	}
	// SigV4 has its own fixed 5-minute limit, whatever clockskew says.
	return sourceResult("AWS endpoint", s, SigV4MaxSkew, min(c.WarnSkew, SigV4MaxSkew),
		"AWS rejects SigV4 requests more than 5 minutes off (RequestExpired, InvalidSignatureException): fix time sync on this host").
		With(runbook.Evidence{"endpoint": c.AWSEndpoint})
}

func sourceResult(name string, s *kdcops.SourceSample, maxSkew, warnSkew time.Duration, failHint string) runbook.Result {
	ev := runbook.Evidence{
		"offset_seconds":      runbook.Seconds(s.Offset),
		"rtt_seconds":         runbook.Seconds(s.RTT),
		"uncertainty_seconds": runbook.Seconds(s.Uncertainty),
		"limit_seconds":       maxSkew.Seconds(),
	}
	msg := fmt.Sprintf("%s is %s this host (±%.3fs)", name, describeOffset(s.Offset), s.Uncertainty.Seconds())
	off := abs(s.Offset)
	switch {
	case off > maxSkew:
		return runbook.Failf("%s; beyond %s", msg, maxSkew).With(ev).WithHint("%s", failHint)
	case off > warnSkew:
		return runbook.Warnf("%s; past --warn-skew %s", msg, warnSkew).With(ev).
			WithHint("time sync is drifting: check chrony/ntpd on this host")
	}
	return runbook.Passf("%s", msg).With(ev)
}

func (c Check) verdict(r *run) runbook.Result {
	m := r.answered()
	ev := runbook.Evidence{
		"realm":             c.Realm,
		"kdcs_configured":   len(c.KDCs),
		"kdcs_answered":     len(m),
		"clockskew_seconds": c.MaxSkew.Seconds(),
		"warn_skew_seconds": c.WarnSkew.Seconds(),
	}
	if len(m) == 0 {
		return runbook.Errorf("no KDC of %s answered (%d tried)", c.Realm, len(c.KDCs)).With(ev).
			WithHint("the clock could not be read: check that the KDCs run and port 88 is reachable, or pass --kdc host:port")
	}
	var worst *kdcops.ClockSample
	for _, k := range c.KDCs {
		if s, ok := m[k.Entry]; ok && (worst == nil || abs(s.Offset) > abs(worst.Offset)) {
			worst = s
		}
	}
	ev["worst_kdc"] = worst.KDC
	ev["worst_offset_seconds"] = runbook.Seconds(worst.Offset)
	missing := len(c.KDCs) - len(m)
	off := abs(worst.Offset)
	switch {
	case off > c.MaxSkew:
		return runbook.Failf("KDC %s is %s this host, beyond clockskew %s", worst.KDC, describeOffset(worst.Offset), c.MaxSkew).
			With(ev).WithHint("%s", c.blame(r, worst))
	case off > c.WarnSkew:
		return runbook.Warnf("KDC %s is %s this host: within clockskew %s, past --warn-skew %s", worst.KDC, describeOffset(worst.Offset), c.MaxSkew, c.WarnSkew).
			With(ev).WithHint("%s", c.blame(r, worst))
	case missing > 0:
		return runbook.Warnf("%d of %d KDCs answered, all within %.3fs of this host", len(m), len(c.KDCs), off.Seconds()).
			With(ev).WithHint("clients that try the unreachable KDC first lose time failing over: see its step above")
	}
	return runbook.Passf("all %d KDCs within %.3fs of this host (limit %s)", len(m), off.Seconds(), c.MaxSkew).With(ev)
}

// blame says which clock to fix. With an NTP reading the answer is known;
// without one the on-call is told how to find out.
func (c Check) blame(r *run, worst *kdcops.ClockSample) string {
	ntp := r.ntp
	if ntp == nil {
		return "one of the two clocks is wrong: re-run with --ntp <server> to learn which, then fix chrony/ntpd there"
	}
	hostOff := abs(ntp.Offset)
	kdcVsNTP := abs(worst.Offset - ntp.Offset)
	switch {
	case hostOff <= c.WarnSkew && kdcVsNTP > c.WarnSkew:
		return fmt.Sprintf("this host agrees with NTP %s: the KDC %s is wrong; fix chrony/ntpd on it", c.NTPServer, worst.KDC)
	case hostOff > c.WarnSkew && kdcVsNTP <= c.WarnSkew:
		return fmt.Sprintf("the KDC agrees with NTP %s: this host is wrong; fix chrony/ntpd here (`chronyc makestep`)", c.NTPServer)
	}
	return fmt.Sprintf("neither this host nor KDC %s agrees with NTP %s: fix time sync on both", worst.KDC, c.NTPServer)
}
