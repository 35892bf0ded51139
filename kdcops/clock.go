package kdcops

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// ASN.1 application tags of the first byte of a KDC reply.
const (
	tagASRep    = 0x6b // [APPLICATION 11]
	tagKRBError = 0x7e // [APPLICATION 30]
)

// unassignedEtype is offered when the KDC answered the probe with an AS-REP
// (the principal does not require pre-authentication): no enctype in
// common forces a KRB-ERROR, which carries the KDC's time in clear.
const unassignedEtype int32 = 255

// ClockSample is the estimate of one KDC's clock.
type ClockSample struct {
	KDC       string
	Transport Transport
	// Offset is KDC time minus local time: positive means the KDC is ahead.
	// The true offset lies within Offset ± Uncertainty.
	Offset      time.Duration
	Uncertainty time.Duration
	// RTT is the shortest round trip seen.
	RTT       time.Duration
	Probes    int       // replies used; an extra AS-REQ is sent when the principal needs no preauth
	KDCTime   time.Time // the KDC's time as last reported
	ErrorCode int32     // the KRB-ERROR code the KDC answered with
	ErrorName string    // e.g. KDC_ERR_PREAUTH_REQUIRED
}

// ProbeOptions tune [ProbeClock].
type ProbeOptions struct {
	Timeout time.Duration // per network call
	Log     *slog.Logger  // forensic log; nil discards
	// Refine is the number of extra probes sent around one KDC second
	// boundary to narrow the estimate; 0 sends a single probe.
	Refine int
	// Target stops refining once Uncertainty is at most this.
	Target time.Duration
	// Limiter, when set, paces every AS-REQ of the probe.
	Limiter Limiter
}

// DefaultRefine and DefaultTarget give an uncertainty of about 60 ms on a
// LAN in about one second, far below any Kerberos clockskew.
const (
	DefaultRefine = 8
	DefaultTarget = 100 * time.Millisecond
)

// ProbeClock reads a KDC's clock without credentials: it sends AS-REQs
// without pre-authentication for principal and reads stime/susec from the
// KRB-ERROR the KDC answers with (PREAUTH_REQUIRED, or PRINCIPAL_UNKNOWN
// for a principal the KDC does not know). Each request shows up in the KDC
// log as an AS_REQ for principal.
//
// Why more than one probe: MIT's KDC makes susec unique rather than exact.
// Every reply after the first in a KDC second carries the previous susec
// plus one microsecond, so on a busy KDC a single reply can be up to a
// second behind. Only two facts hold for every reply: stime+susec is not
// after the true time, and the true time is before stime+1s. ProbeClock
// intersects these bounds over probes sent to straddle a second boundary
// of the KDC, and reports the middle of what is left. Heimdal's KDC and
// Samba's (Active Directory) report real microseconds: two replies in one
// KDC second show it, and from then on each reply bounds the offset to its
// round trip.
func ProbeClock(ctx context.Context, cfg *Config, k KDC, realm, principal string, opts ProbeOptions) (*ClockSample, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Target <= 0 {
		opts.Target = DefaultTarget
	}
	cname, _ := types.ParseSPNString(principal)
	cname.NameType = nametype.KRB_NT_PRINCIPAL
	req, err := messages.NewASReqForTGT(realm, cfg.Config, cname)
	if err != nil {
		return nil, fmt.Errorf("build AS-REQ for %s: %w", principal, err)
	}
	p := &prober{k: k, req: req, principal: principal, timeout: opts.Timeout, log: log, limiter: opts.Limiter}
	first, err := p.probe(ctx)
	if errors.Is(err, errGotASRep) {
		p.req.ReqBody.EType = []int32{unassignedEtype}
		first, err = p.probe(ctx)
	}
	if err != nil {
		return nil, err
	}
	// Later probes use the transport that answered.
	p.k.Transport, p.k.Forced = first.transport, true
	est := newBounds(first)
	if opts.Refine > 0 && est.width()/2 > opts.Target {
		if err := p.refine(ctx, &est, opts.Refine, opts.Target); err != nil {
			return nil, err
		}
	}
	last := est.last
	return &ClockSample{
		KDC:         k.Entry,
		Transport:   first.transport,
		Offset:      est.lo + est.width()/2,
		Uncertainty: est.width() / 2,
		RTT:         est.minRTT,
		Probes:      est.n,
		KDCTime:     last.kdcTime.UTC(),
		ErrorCode:   first.code,
		ErrorName:   ErrorName(first.code),
	}, nil
}

// reading is one KRB-ERROR reply with its local send time and round trip.
type reading struct {
	transport Transport
	sent      time.Time
	rtt       time.Duration
	stime     time.Time // whole seconds
	kdcTime   time.Time // stime + susec as reported
	code      int32
}

// bounds is the interval [lo, hi) the offset is known to lie in.
type bounds struct {
	lo, hi time.Duration
	minRTT time.Duration
	n      int
	last   reading
	// exact is set once two replies in one KDC second showed a susec that
	// moves with the clock: Heimdal and Samba AD report real microseconds,
	// where MIT adds one to the previous reply's. Every reply then pins
	// the KDC's clock to within a microsecond.
	exact bool
}

func newBounds(r reading) bounds {
	b := bounds{lo: -1 << 62, hi: 1 << 62, minRTT: r.rtt}
	b.add(r)
	return b
}

// add narrows the interval with one reading: the KDC's true time when it
// answered lies in [stime+susec, stime+1s) — [stime+susec, +1µs) on a
// KDC whose susec is exact — and that moment lies in [sent, sent+rtt]
// locally.
func (b *bounds) add(r reading) {
	if b.n > 0 && !b.exact && r.stime.Equal(b.last.stime) {
		// MIT's susec moves by a microsecond per reply; a real clock moves
		// it by the time between the requests, give or take the round trips.
		moved, elapsed := r.kdcTime.Sub(b.last.kdcTime), r.sent.Sub(b.last.sent)
		if moved > time.Millisecond && (moved-elapsed).Abs() <= b.last.rtt+r.rtt+time.Millisecond {
			b.exact = true
			b.narrow(b.last)
		}
	}
	b.narrow(r)
	if r.rtt < b.minRTT {
		b.minRTT = r.rtt
	}
	b.n++
	b.last = r
}

func (b *bounds) narrow(r reading) {
	recv := r.sent.Add(r.rtt)
	lo := r.kdcTime.Sub(recv)
	hi := r.stime.Add(time.Second).Sub(r.sent)
	if b.exact {
		hi = r.kdcTime.Add(time.Microsecond).Sub(r.sent)
	}
	if lo > b.lo {
		b.lo = lo
	}
	if hi < b.hi {
		b.hi = hi
	}
	if b.lo > b.hi {
		// Contradiction: the KDC's clock stepped between probes, or it
		// does not follow these semantics. Keep the newest reading alone.
		b.lo, b.hi = lo, hi
	}
}

func (b bounds) width() time.Duration { return b.hi - b.lo }

// refine sends up to n probes spread over the local window in which the
// KDC's next whole second begins. The first probe that sees the new second
// ends it: the one before bounds the offset from above, this one (the
// first reply of its KDC second, so its susec is exact) from below, and
// later probes would only repeat that.
func (p *prober) refine(ctx context.Context, b *bounds, n int, target time.Duration) error {
	const margin = 10 * time.Millisecond
	sent := 0
	// Normally one pass suffices; a second covers a boundary that passed
	// while the first pass's earliest probes were already late.
	for pass := 0; pass < 2 && sent < n && b.width()/2 > target; pass++ {
		// The KDC's clock now lies in [now+lo, now+hi]. Take the first
		// whole KDC second that may still lie ahead, and spread the probes
		// over the local window in which it can begin; the part of that
		// window already past is skipped.
		now := time.Now()
		boundary := now.Add(b.lo + margin).Truncate(time.Second).Add(time.Second)
		start, end := boundary.Add(-b.hi), boundary.Add(-b.lo)
		if start.Before(now) {
			start = now
		}
		span := end.Sub(start)
		per := n - sent
		for i := 1; i <= per; i++ {
			at := start.Add(span*time.Duration(i)/time.Duration(per+1) - b.minRTT/2)
			if err := sleepUntil(ctx, at); err != nil {
				return err
			}
			r, err := p.probe(ctx)
			if err != nil {
				return err
			}
			sent++
			b.add(r)
			if !r.stime.Before(boundary) || b.width()/2 <= target {
				break
			}
		}
	}
	return nil
}

func sleepUntil(ctx context.Context, at time.Time) error {
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type prober struct {
	k         KDC
	req       messages.ASReq
	principal string
	timeout   time.Duration
	log       *slog.Logger
	limiter   Limiter
}

var errGotASRep = errors.New("kdc issued a ticket without pre-authentication")

func (p *prober) probe(ctx context.Context) (reading, error) {
	k, log := p.k, p.log
	// A fresh nonce per probe: MIT's lookaside cache answers a repeated
	// request with the cached reply, and its stale time.
	nonce, err := rand.Int(rand.Reader, big.NewInt(math.MaxInt32))
	if err != nil {
		return reading{}, err
	}
	p.req.ReqBody.Nonce = int(nonce.Int64())
	raw, err := p.req.Marshal()
	if err != nil {
		return reading{}, fmt.Errorf("marshal AS-REQ: %w", err)
	}
	order := []Transport{k.Transport}
	if !k.Forced {
		order = append(order, other(k.Transport))
	}
	var lastErr error
	var tried []Transport
	for _, t := range order {
		tried = append(tried, t)
		if p.limiter != nil {
			if err := p.limiter.Wait(ctx); err != nil {
				return reading{}, err
			}
		}
		log.LogAttrs(ctx, slog.LevelInfo, "kdc request",
			slog.String("kdc", k.Entry), slog.String("transport", string(t)),
			slog.String("msg_type", "AS-REQ"), slog.String("principal", p.principal),
			slog.String("realm", p.req.ReqBody.Realm), slog.Int("bytes", len(raw)))
		ex, err := SendRecv(ctx, k, t, raw, p.timeout)
		if err != nil {
			log.LogAttrs(ctx, slog.LevelWarn, "kdc error", slog.String("kdc", k.Entry),
				slog.String("transport", string(t)), slog.String("error", err.Error()))
			if errors.Is(err, context.Canceled) {
				return reading{}, err
			}
			lastErr = err
			var ue *UnreachableError
			if errors.As(err, &ue) {
				ue.Tried = append([]Transport(nil), tried...)
			}
			continue // MIT clients try the other transport too
		}
		r, err := readClock(k, t, ex)
		if err == nil {
			log.LogAttrs(ctx, slog.LevelInfo, "kdc reply", slog.String("kdc", k.Entry),
				slog.String("transport", string(t)), slog.String("msg_type", "KRB-ERROR"),
				slog.Int("error_code", int(r.code)), slog.String("error_name", ErrorName(r.code)),
				slog.Time("kdc_time", r.kdcTime), slog.Float64("rtt_seconds", r.rtt.Seconds()))
			return r, nil
		}
		if errors.Is(err, errGotASRep) {
			log.LogAttrs(ctx, slog.LevelInfo, "kdc reply", slog.String("kdc", k.Entry),
				slog.String("transport", string(t)), slog.String("msg_type", "AS-REP"),
				slog.String("note", "principal needs no pre-authentication; probing again with no common enctype"))
			return reading{}, err
		}
		log.LogAttrs(ctx, slog.LevelWarn, "kdc reply unusable", slog.String("kdc", k.Entry),
			slog.String("transport", string(t)), slog.String("error", err.Error()))
		var tooBig *responseTooBigError
		if errors.As(err, &tooBig) && t == UDP && !k.Forced {
			continue
		}
		return reading{}, err
	}
	return reading{}, lastErr
}

type responseTooBigError struct{}

func (*responseTooBigError) Error() string { return "KRB_ERR_RESPONSE_TOO_BIG over udp" }

// BadReplyError is a reply that is not a usable Kerberos message: a wrong
// service on the port, or a KDC bug.
type BadReplyError struct {
	KDC string
	Msg string
}

func (e *BadReplyError) Error() string { return fmt.Sprintf("kdc %s: %s", e.KDC, e.Msg) }

func readClock(k KDC, t Transport, ex *Exchange) (reading, error) {
	if len(ex.Reply) == 0 {
		return reading{}, &BadReplyError{KDC: k.Entry, Msg: "empty reply"}
	}
	switch ex.Reply[0] {
	case tagASRep:
		return reading{}, errGotASRep
	case tagKRBError:
	default:
		return reading{}, &BadReplyError{KDC: k.Entry, Msg: fmt.Sprintf("reply is not a Kerberos message (first byte 0x%02x)", ex.Reply[0])}
	}
	var kerr messages.KRBError
	if err := kerr.Unmarshal(ex.Reply); err != nil {
		return reading{}, &BadReplyError{KDC: k.Entry, Msg: "cannot decode KRB-ERROR"}
	}
	if kerr.ErrorCode == errorcode.KRB_ERR_RESPONSE_TOO_BIG {
		return reading{}, &responseTooBigError{}
	}
	if kerr.STime.IsZero() {
		return reading{}, &BadReplyError{KDC: k.Entry, Msg: "KRB-ERROR carries no server time"}
	}
	if kerr.Susec < 0 || kerr.Susec > 999999 {
		return reading{}, &BadReplyError{KDC: k.Entry, Msg: fmt.Sprintf("KRB-ERROR susec %d out of range", kerr.Susec)}
	}
	stime := kerr.STime.Truncate(time.Second)
	return reading{
		transport: t,
		sent:      ex.Sent,
		rtt:       ex.RTT,
		stime:     stime,
		kdcTime:   stime.Add(time.Duration(kerr.Susec) * time.Microsecond),
		code:      kerr.ErrorCode,
	}, nil
}

// ErrorName is the RFC 4120 name of a KDC error code, e.g.
// KDC_ERR_PREAUTH_REQUIRED.
func ErrorName(code int32) string {
	s := errorcode.Lookup(code)
	if _, rest, ok := strings.Cut(s, ") "); ok {
		name, _, _ := strings.Cut(rest, " ")
		return name
	}
	return fmt.Sprintf("KRB_ERROR_%d", code)
}

func other(t Transport) Transport {
	if t == UDP {
		return TCP
	}
	return UDP
}
