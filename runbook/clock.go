package runbook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/krbops/krbops/kdcops"
)

// Step ids of the clock runbook. KDC probe steps are "clock.kdc-offset:"
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

// ClockCheck describes one clock-check run. The probe functions default to
// the real kdcops probes; tests replace them.
type ClockCheck struct {
	Config      *kdcops.Config
	Realm       string
	Principal   string
	KDCs        []kdcops.KDC
	NTPServer   string // optional
	AWSEndpoint string // optional
	WarnSkew    time.Duration
	MaxSkew     time.Duration // krb5.conf clockskew
	Timeout     time.Duration
	Log         *slog.Logger
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

func (c *ClockCheck) defaults() {
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
			return kdcops.HTTPDateOffset(ctx, endpoint, c.Timeout, c.Log)
		}
	}
	if c.MaxSkew <= 0 {
		c.MaxSkew = 300 * time.Second
	}
	if c.WarnSkew <= 0 || c.WarnSkew > c.MaxSkew {
		c.WarnSkew = min(60*time.Second, c.MaxSkew)
	}
}

// state keys
const (
	keyKDCSamples = "clock.samples" // map[string]*kdcops.ClockSample by KDC entry
	keyKDCProbes  = "clock.probes"  // map[string]probeOutcome by KDC entry
	keyNTPSample  = "clock.ntp"
)

// KDCOffsetID is the step id of the probe of one KDC.
func KDCOffsetID(k kdcops.KDC) string { return StepKDCOffset + ":" + k.Entry }

// Steps returns the clock runbook in its fixed order: one probe per KDC,
// the spread between KDCs, the optional NTP and AWS comparisons, and the
// verdict.
func (c ClockCheck) Steps() []Step {
	c.defaults()
	var steps []Step
	for _, k := range c.KDCs {
		steps = append(steps, Step{
			ID:        KDCOffsetID(k),
			Title:     "offset of KDC " + k.Entry,
			DecidedBy: StepVerdict,
			Run:       func(ctx context.Context, st *State) Result { return c.probeKDC(ctx, st, k) },
		})
	}
	steps = append(steps, Step{ID: StepKDCSpread, Title: "spread between KDCs", Run: c.spread})
	if c.NTPServer != "" {
		steps = append(steps, Step{ID: StepNTPOffset, Title: "offset of NTP " + c.NTPServer, Run: c.ntp})
	}
	if c.AWSEndpoint != "" {
		steps = append(steps, Step{ID: StepAWSOffset, Title: "offset of AWS endpoint", Run: c.aws})
	}
	steps = append(steps, Step{ID: StepVerdict, Title: "clock verdict for realm " + c.Realm, Run: c.verdict})
	return steps
}

func samples(st *State) map[string]*kdcops.ClockSample {
	m, ok := Value[map[string]*kdcops.ClockSample](st, keyKDCSamples)
	if !ok {
		m = map[string]*kdcops.ClockSample{}
		st.Set(keyKDCSamples, m)
	}
	return m
}

// seconds rounds to microseconds: the KDC's clock has that resolution, and
// more digits would only be noise in golden files and dashboards.
func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1e6) / 1e6 }

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

// probeAll measures every KDC at once the first time a KDC step runs: a
// precise probe waits for a KDC second boundary (up to a second), and an
// on-call should not wait that long once per KDC.
func (c ClockCheck) probeAll(ctx context.Context, st *State) map[string]probeOutcome {
	if m, ok := Value[map[string]probeOutcome](st, keyKDCProbes); ok {
		return m
	}
	m := make(map[string]probeOutcome, len(c.KDCs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, k := range c.KDCs {
		wg.Go(func() {
			begin := time.Now()
			s, err := c.ProbeKDC(ctx, k)
			mu.Lock()
			m[k.Entry] = probeOutcome{sample: s, err: err, took: time.Since(begin)}
			mu.Unlock()
		})
	}
	wg.Wait()
	st.Set(keyKDCProbes, m)
	return m
}

type probeOutcome struct {
	sample *kdcops.ClockSample
	err    error
	took   time.Duration
}

// FirstKDCStep is one clock probe of the realm: KDCs in order until one
// answers, judged like a clock-check KDC step. verify runs it before
// talking to the KDC with keys.
func (c ClockCheck) FirstKDCStep(id, title string) Step {
	c.defaults()
	return Step{ID: id, Title: title, Run: func(ctx context.Context, st *State) Result {
		var last Result
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
			return Errorf("no KDC of %s answered (%d tried); last: %s", c.Realm, len(c.KDCs), last.Message).With(last.Evidence).WithHint("%s", last.Hint)
		}
		return last
	}}
}

func (c ClockCheck) probeKDC(ctx context.Context, st *State, k kdcops.KDC) Result {
	out := c.probeAll(ctx, st)[k.Entry]
	if out.err != nil {
		return kdcProbeError(ctx, k, out.err)
	}
	samples(st)[k.Entry] = out.sample
	return c.offsetResult(k, out)
}

func (c ClockCheck) offsetResult(k kdcops.KDC, out probeOutcome) Result {
	s := out.sample
	ev := Evidence{
		"kdc":                 k.Entry,
		"offset_seconds":      seconds(s.Offset),
		"rtt_seconds":         seconds(s.RTT),
		"uncertainty_seconds": seconds(s.Uncertainty),
		"probes":              s.Probes,
		"probe_seconds":       seconds(out.took),
		"transport":           string(s.Transport),
		"kdc_time":            s.KDCTime,
		"kdc_reply":           s.ErrorName,
		"clockskew_seconds":   c.MaxSkew.Seconds(),
	}
	msg := fmt.Sprintf("KDC is %s this host (±%.3fs)", describeOffset(s.Offset), s.Uncertainty.Seconds())
	off := abs(s.Offset)
	switch {
	case off > c.MaxSkew:
		return Failf("%s; beyond clockskew %s", msg, c.MaxSkew).With(ev).
			WithHint("Kerberos to this KDC fails with KRB_AP_ERR_SKEW: compare `chronyc tracking` on %s and on this host and fix the wrong one (re-run with --ntp to tell which)", k.Host)
	case off > c.WarnSkew:
		return Warnf("%s; within clockskew %s but past --warn-skew %s", msg, c.MaxSkew, c.WarnSkew).With(ev).
			WithHint("time sync is drifting: check chrony/ntpd on %s and on this host before it reaches %s", k.Host, c.MaxSkew)
	}
	return Passf("%s", msg).With(ev)
}

func kdcProbeError(ctx context.Context, k kdcops.KDC, err error) Result {
	ev := Evidence{"kdc": k.Entry, "transport": string(k.Transport)}
	if ctx.Err() != nil {
		return Errorf("probe of %s interrupted", k.Entry).With(ev)
	}
	var unreachable *kdcops.UnreachableError
	var bad *kdcops.BadReplyError
	switch {
	case errors.As(err, &unreachable):
		tried := "udp and tcp"
		if k.Forced {
			tried = string(k.Transport)
		}
		return Errorf("%s", err.Error()).With(ev).
			WithHint("check that krb5kdc runs on %s and that port %d (%s) is open from this host; the other KDCs were still measured", k.Host, k.Port, tried)
	case errors.As(err, &bad):
		return Errorf("%s", err.Error()).With(ev).
			WithHint("something other than a KDC answers on %s: check the kdc entry in krb5.conf", k.Addr())
	}
	return Errorf("probe of %s failed: %s", k.Entry, err.Error()).With(ev).
		WithHint("re-run with -v or --log-file to see the exchange")
}

func (c ClockCheck) spread(_ context.Context, st *State) Result {
	m := samples(st)
	if len(m) < 2 {
		return Result{Status: Skip, Message: fmt.Sprintf("skipped: %d KDC answered, need two to compare", len(m))}
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
	ev := Evidence{
		"spread_seconds": seconds(spread),
		"ahead_kdc":      hi.KDC,
		"behind_kdc":     lo.KDC,
		"kdcs_answered":  len(m),
	}
	msg := fmt.Sprintf("KDCs differ by %.3fs (%s ahead of %s)", spread.Seconds(), hi.KDC, lo.KDC)
	switch {
	case spread > c.MaxSkew:
		return Failf("%s; beyond clockskew %s", msg, c.MaxSkew).With(ev).
			WithHint("clients fail or succeed depending on which KDC they reach: fix time sync on the KDC that disagrees with NTP")
	case spread > c.WarnSkew:
		return Warnf("%s; past --warn-skew %s", msg, c.WarnSkew).With(ev).
			WithHint("the KDCs' clocks are drifting apart: check chrony/ntpd on %s and %s", hi.KDC, lo.KDC)
	}
	return Passf("KDCs agree within %.3fs", spread.Seconds()).With(ev)
}

func (c ClockCheck) ntp(ctx context.Context, st *State) Result {
	s, err := c.ProbeNTP(ctx, c.NTPServer)
	if err != nil {
		return Errorf("%s", err.Error()).With(Evidence{"server": c.NTPServer}).
			WithHint("check the server name and that UDP 123 is open from this host")
	}
	st.Set(keyNTPSample, s)
	return sourceResult("NTP server "+c.NTPServer, s, c.MaxSkew, c.WarnSkew,
		"this host's clock is wrong: fix chrony/ntpd here (`chronyc tracking`, `chronyc makestep`)").
		With(Evidence{"server": c.NTPServer, "stratum": s.Stratum})
}

func (c ClockCheck) aws(ctx context.Context, _ *State) Result {
	s, err := c.ProbeHTTP(ctx, c.AWSEndpoint)
	if err != nil {
		return Errorf("%s", err.Error()).With(Evidence{"endpoint": c.AWSEndpoint}).
			WithHint("check the endpoint URL and the network path (proxy, firewall) to it")
	}
	// SigV4 has its own fixed 5-minute limit, whatever clockskew says.
	return sourceResult("AWS endpoint", s, SigV4MaxSkew, min(c.WarnSkew, SigV4MaxSkew),
		"AWS rejects SigV4 requests more than 5 minutes off (RequestExpired, InvalidSignatureException): fix time sync on this host").
		With(Evidence{"endpoint": c.AWSEndpoint})
}

func sourceResult(name string, s *kdcops.SourceSample, maxSkew, warnSkew time.Duration, failHint string) Result {
	ev := Evidence{
		"offset_seconds":      seconds(s.Offset),
		"rtt_seconds":         seconds(s.RTT),
		"uncertainty_seconds": seconds(s.Uncertainty),
		"limit_seconds":       maxSkew.Seconds(),
	}
	msg := fmt.Sprintf("%s is %s this host (±%.3fs)", name, describeOffset(s.Offset), s.Uncertainty.Seconds())
	off := abs(s.Offset)
	switch {
	case off > maxSkew:
		return Failf("%s; beyond %s", msg, maxSkew).With(ev).WithHint("%s", failHint)
	case off > warnSkew:
		return Warnf("%s; past --warn-skew %s", msg, warnSkew).With(ev).
			WithHint("time sync is drifting: check chrony/ntpd on this host")
	}
	return Passf("%s", msg).With(ev)
}

func (c ClockCheck) verdict(_ context.Context, st *State) Result {
	m := samples(st)
	ev := Evidence{
		"realm":             c.Realm,
		"kdcs_configured":   len(c.KDCs),
		"kdcs_answered":     len(m),
		"clockskew_seconds": c.MaxSkew.Seconds(),
		"warn_skew_seconds": c.WarnSkew.Seconds(),
	}
	if len(m) == 0 {
		return Errorf("no KDC of %s answered (%d tried)", c.Realm, len(c.KDCs)).With(ev).
			WithHint("the clock could not be read: check that the KDCs run and port 88 is reachable, or pass --kdc host:port")
	}
	var worst *kdcops.ClockSample
	for _, k := range c.KDCs {
		if s, ok := m[k.Entry]; ok && (worst == nil || abs(s.Offset) > abs(worst.Offset)) {
			worst = s
		}
	}
	ev["worst_kdc"] = worst.KDC
	ev["worst_offset_seconds"] = seconds(worst.Offset)
	missing := len(c.KDCs) - len(m)
	off := abs(worst.Offset)
	switch {
	case off > c.MaxSkew:
		return Failf("KDC %s is %s this host, beyond clockskew %s", worst.KDC, describeOffset(worst.Offset), c.MaxSkew).
			With(ev).WithHint("%s", c.blame(st, worst))
	case off > c.WarnSkew:
		return Warnf("KDC %s is %s this host: within clockskew %s, past --warn-skew %s", worst.KDC, describeOffset(worst.Offset), c.MaxSkew, c.WarnSkew).
			With(ev).WithHint("%s", c.blame(st, worst))
	case missing > 0:
		return Warnf("%d of %d KDCs answered, all within %.3fs of this host", len(m), len(c.KDCs), off.Seconds()).
			With(ev).WithHint("clients that try the unreachable KDC first lose time failing over: see its step above")
	}
	return Passf("all %d KDCs within %.3fs of this host (limit %s)", len(m), off.Seconds(), c.MaxSkew).With(ev)
}

// blame says which clock to fix. With an NTP reading the answer is known;
// without one the on-call is told how to find out.
func (c ClockCheck) blame(st *State, worst *kdcops.ClockSample) string {
	ntp, ok := Value[*kdcops.SourceSample](st, keyNTPSample)
	if !ok {
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
