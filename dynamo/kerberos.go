package dynamo

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/kdcops/keylogin"
)

// KerberosError is a failed login or service-ticket request. Unreachable
// is true when no KDC answered (a transient condition); otherwise the KDC
// refused (wrong key, unknown or locked principal, clock skew) or the
// keytab was unusable.
type KerberosError = keylogin.Error

// kerberosError turns a gokrb5 error into a KerberosError.
func kerberosError(principal, op string, err error) *KerberosError {
	return keylogin.Classify(principal, op, err)
}

// KerberosOptions configure a worker's login.
type KerberosOptions struct {
	Principal string // name[/instance][@REALM]
	Keytab    string
	// Fallback, when set, logs in when Principal fails with a key error
	// (see keylogin).
	Fallback *keylogin.Identity
	Krb5Conf string
	// Margin: log in again when the TGT has less than this left. When the
	// KDC issues tickets for no longer than Margin, half the lifetime is
	// used instead so a worker does not log in before every page.
	Margin time.Duration
	Worker int
	Log    *slog.Logger
	Now    func() time.Time
}

// KerberosLogin is one worker's private Kerberos identity: its own
// gokrb5 client and its own parsed krb5.conf (neither is safe for
// concurrent use), and its own TGT held in memory — no ticket cache is
// shared with other workers or processes. Every login reads the keytab
// file again (keylogin), so a rotation that replaces it mid-run is picked
// up at the next login. It does its own AS and TGS exchanges instead of
// gokrb5's session cache, which starts a renewal goroutine per login (a
// second user of the client) and does not expose the TGT's end time that
// the ticket margin needs.
type KerberosLogin struct {
	opts  KerberosOptions
	login *keylogin.Login

	mu        sync.Mutex
	tgt       *keylogin.Ticket
	authTime  time.Time
	endTime   time.Time
	logins    int
	fallbacks int
}

// TicketInfo describes the TGT a worker holds.
type TicketInfo struct {
	Worker    int
	Principal string // the principal the TGT was issued to (the fallback's after a fallback)
	AuthTime  time.Time
	EndTime   time.Time
	Lifetime  time.Duration
	Logins    int
	Fallback  bool // the TGT held now is the fallback principal's
	Fallbacks int  // logins that fell back
	// Primary and FallbackPrincipal are the configured identities,
	// name@REALM ("" without a fallback).
	Primary           string
	FallbackPrincipal string
}

// NewKerberosLogin prepares (but does not perform) a worker's login. It
// checks that the keytabs load now, so a wrong path is a usage error
// before anything is read; every login reads them again. Without a
// fallback the primary keytab must load; with one, only the fallback's
// (the primary may be the one being rotated).
func NewKerberosLogin(o KerberosOptions) (*KerberosLogin, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	// kdcops reads krb5.conf with its size cap and never waits on a FIFO
	// (gokrb5's config.Load does neither); each worker parses its own.
	kc, err := kdcops.LoadConfig(o.Krb5Conf)
	if err != nil {
		return nil, err
	}
	l, err := keylogin.New(keylogin.Options{Primary: keylogin.Identity{Principal: o.Principal, Keytab: o.Keytab},
		Fallback: o.Fallback, Config: kc.Config, Log: o.Log})
	if err != nil {
		return nil, err
	}
	check := keylogin.Identity{Principal: l.Principal(), Keytab: o.Keytab}
	if o.Fallback != nil {
		check = keylogin.Identity{Principal: l.FallbackPrincipal(), Keytab: o.Fallback.Keytab}
	}
	if _, _, err := kdcops.LoadLoginKeytab(check.Keytab, check.Principal); err != nil {
		return nil, err
	}
	o.Principal = l.Principal()
	return &KerberosLogin{opts: o, login: l}, nil
}

// Principal is the full principal name the worker holds a ticket for
// now: the fallback's after a fallback, else the primary's.
func (k *KerberosLogin) Principal() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.tgt != nil {
		return k.tgt.Principal
	}
	return k.opts.Principal
}

// Login performs an AS exchange from the keytab (read now) and holds the
// new TGT. reason is logged: "initial", "margin", "authentication-failure".
func (k *KerberosLogin) Login(ctx context.Context, reason string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.loginLocked(ctx, reason)
}

func (k *KerberosLogin) loginLocked(ctx context.Context, reason string) error {
	log := logFrom(ctx, k.opts.Log)
	t, err := k.login.Login(keylogin.WithLog(ctx, log), reason)
	var ke *KerberosError
	if errors.As(err, &ke) && ke.Key && k.tgt != nil && k.opts.Now().Before(k.endTime) {
		// A rotation changes the key at the KDC a moment before the new
		// keytab lands on this host: the TGT held now is still good (a
		// key change does not revoke it), so the worker keeps it and
		// logs in again at its next refresh or margin.
		if !ke.Repeated {
			log.LogAttrs(ctx, slog.LevelWarn, "ticket kept", slog.String("principal", k.tgt.Principal), slog.String("reason", reason),
				slog.String("error", ke.Reason), slog.Float64("remaining_seconds", k.endTime.Sub(k.opts.Now()).Seconds()))
		}
		return nil
	}
	if err != nil {
		return err
	}
	k.tgt = t
	k.authTime, k.endTime = t.Part.AuthTime, t.Part.EndTime
	k.logins++
	if t.Fallback {
		k.fallbacks++
	}
	return nil
}

// threshold is the remaining lifetime below which Ensure logs in again.
func (k *KerberosLogin) threshold() time.Duration {
	life := k.endTime.Sub(k.authTime)
	if life > 0 && life <= k.opts.Margin {
		return life / 2
	}
	return k.opts.Margin
}

// Ensure logs in when the worker holds no TGT or its TGT has less than
// the margin left (logged as a ticket expiry).
func (k *KerberosLogin) Ensure(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ensure(ctx)
}

func (k *KerberosLogin) ensure(ctx context.Context) error {
	if k.endTime.IsZero() {
		return k.loginLocked(ctx, "initial")
	}
	left := k.endTime.Sub(k.opts.Now())
	if left >= k.threshold() {
		return nil
	}
	logFrom(ctx, k.opts.Log).LogAttrs(ctx, slog.LevelInfo, "ticket expiring", slog.String("principal", k.tgt.Principal),
		slog.Float64("remaining_seconds", left.Seconds()), slog.Float64("margin_seconds", k.threshold().Seconds()))
	return k.loginLocked(ctx, "margin")
}

// Info describes the TGT held now.
func (k *KerberosLogin) Info() TicketInfo {
	k.mu.Lock()
	defer k.mu.Unlock()
	in := TicketInfo{Worker: k.opts.Worker, Principal: k.opts.Principal, AuthTime: k.authTime, EndTime: k.endTime,
		Lifetime: k.endTime.Sub(k.authTime), Logins: k.logins, Fallbacks: k.fallbacks,
		Primary: k.login.Principal(), FallbackPrincipal: k.login.FallbackPrincipal()}
	if k.tgt != nil {
		in.Principal, in.Fallback = k.tgt.Principal, k.tgt.Fallback
	}
	return in
}

// NegotiateHeader returns an "Authorization: Negotiate ..." value for spn
// (e.g. HTTP/broker.example.com): a fresh service ticket from the
// worker's own TGT, wrapped by gokrb5's SPNEGO token builder exactly as
// its HTTP client does.
func (k *KerberosLogin) NegotiateHeader(ctx context.Context, spn string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.ensure(ctx); err != nil {
		return "", err
	}
	log := logFrom(ctx, k.opts.Log)
	t := k.tgt
	op := "service ticket for " + spn
	fail := func(err error) (string, error) {
		ke := kerberosError(t.Principal, op, err)
		log.LogAttrs(ctx, slog.LevelWarn, "ticket error", slog.String("principal", t.Principal),
			slog.String("op", op), slog.String("error", ke.Reason), slog.Bool("unreachable", ke.Unreachable))
		return "", ke
	}
	log.LogAttrs(ctx, slog.LevelInfo, "service ticket request", slog.String("principal", t.Principal), slog.String("spn", spn))
	sname := types.NewPrincipalName(nametype.KRB_NT_SRV_INST, spn)
	_, rep, err := t.Client.TGSREQGenerateAndExchange(sname, t.Realm, t.Ticket, t.Part.Key, false)
	if err != nil {
		return fail(err)
	}
	init, err := spnego.NewNegTokenInitKRB5(t.Client, rep.Ticket, rep.DecryptedEncPart.Key)
	if err != nil {
		return fail(err)
	}
	tok := spnego.SPNEGOToken{Init: true, NegTokenInit: init}
	b, err := tok.Marshal()
	if err != nil {
		return fail(err)
	}
	log.LogAttrs(ctx, slog.LevelInfo, "service ticket granted", slog.String("spn", spn), slog.Time("end_time", rep.DecryptedEncPart.EndTime))
	return "Negotiate " + base64.StdEncoding.EncodeToString(b), nil
}
