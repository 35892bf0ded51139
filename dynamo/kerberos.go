package dynamo

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
)

// KerberosError is a failed login or service-ticket request. Unreachable
// is true when no KDC answered (a transient condition); otherwise the KDC
// refused (wrong key, unknown or locked principal, clock skew).
type KerberosError struct {
	Principal   string
	Op          string // "login" or "service ticket for HTTP/..."
	Unreachable bool
	Reason      string // the KRB error name, or the network failure
}

func (e *KerberosError) Error() string {
	return fmt.Sprintf("kerberos %s as %s: %s", e.Op, e.Principal, e.Reason)
}

// Hint says what to do next.
func (e *KerberosError) Hint() string {
	switch {
	case e.Unreachable:
		return "no KDC answered: check the realm's kdc entries in krb5.conf and the network"
	case strings.Contains(e.Reason, "PREAUTH_FAILED"), strings.Contains(e.Reason, "integrity"):
		return "the keytab's key is not the principal's current key (rotated?): fetch the current keytab, then resume with the same command"
	case strings.Contains(e.Reason, "SKEW"):
		return "this host's clock is off from the KDC's: run krbops clock-check"
	case e.PrincipalUnknown():
		return "the KDC does not know the principal (or the broker's SPN): check the principal's name and the broker's SPN"
	}
	return "check the principal with kinit -kt <keytab> <principal>, then resume with the same command"
}

// PrincipalUnknown reports whether the KDC does not know the principal
// (or the service principal a ticket was asked for).
func (e *KerberosError) PrincipalUnknown() bool {
	return strings.Contains(e.Reason, "PRINCIPAL_UNKNOWN")
}

// FaultClass: the KDC refused or did not answer (fault.Unreachable; see
// classify.go).
func (e *KerberosError) FaultClass() fault.Class {
	if e.Unreachable {
		return fault.Unreachable
	}
	return fault.CheckFailed
}

var krbErrName = regexp.MustCompile(`\b(KDC_ERR_[A-Z_]+|KRB_AP_ERR_[A-Z_]+|KRB_ERR_[A-Z_]+)\b`)

// kerberosError turns a gokrb5 error into a KerberosError. gokrb5's errors
// carry the KDC error code only as text ("KRB Error: (24)
// KDC_ERR_PREAUTH_FAILED"), so the name is taken from there.
func kerberosError(principal, op string, err error) *KerberosError {
	s := err.Error()
	ke := &KerberosError{Principal: principal, Op: op}
	if m := krbErrName.FindString(s); m != "" {
		ke.Reason = m
		return ke
	}
	switch {
	case strings.Contains(s, "Networking_Error"), strings.Contains(s, "failed to communicate with KDC"),
		strings.Contains(s, "connection refused"), strings.Contains(s, "i/o timeout"), strings.Contains(s, "no KDCs defined"):
		ke.Unreachable = !strings.Contains(s, "no KDCs defined")
		ke.Reason = "no KDC answered"
		if !ke.Unreachable {
			ke.Reason = "krb5.conf lists no KDC for the realm"
		}
	case strings.Contains(s, "integrity verification failed"), strings.Contains(s, "Decrypting_Error"):
		ke.Reason = "the KDC's reply does not decrypt with the keytab's key (integrity verification failed)"
	default:
		// gokrb5's message chains are long; their last element is the
		// cause. None of them carries key material (keytab parsing,
		// which does, is handled before login).
		parts := strings.Split(firstLine(s), ": ")
		ke.Reason = parts[len(parts)-1]
	}
	return ke
}

// KerberosOptions configure a worker's login.
type KerberosOptions struct {
	Principal string // name[/instance][@REALM]
	Keytab    string
	Krb5Conf  string
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
// shared with other workers or processes. It does its own AS and TGS
// exchanges instead of gokrb5's session cache, which starts a renewal
// goroutine per login (a second user of the client) and does not expose
// the TGT's end time that the ticket margin needs.
type KerberosLogin struct {
	opts  KerberosOptions
	name  types.PrincipalName
	realm string

	mu       sync.Mutex
	cfg      *config.Config
	cl       *client.Client
	tgt      messages.Ticket
	key      types.EncryptionKey
	authTime time.Time
	endTime  time.Time
	logins   int
}

// TicketInfo describes the TGT a worker holds.
type TicketInfo struct {
	Worker    int
	Principal string
	AuthTime  time.Time
	EndTime   time.Time
	Lifetime  time.Duration
	Logins    int
}

// NewKerberosLogin prepares (but does not perform) a worker's login.
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
	cfg := kc.Config
	name, realm := kdcops.SplitPrincipal(o.Principal)
	if realm == "" {
		realm = cfg.LibDefaults.DefaultRealm
	}
	if name == "" || realm == "" {
		return nil, fmt.Errorf("principal %q: need name@REALM (krb5.conf has no default_realm)", o.Principal)
	}
	kt, _, err := kdcops.LoadLoginKeytab(o.Keytab, name+"@"+realm)
	if err != nil {
		return nil, err
	}
	k := &KerberosLogin{opts: o, realm: realm, cfg: cfg}
	k.name = types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, name)
	k.opts.Principal = name + "@" + realm
	k.cl = client.NewWithKeytab(name, realm, kt, cfg, client.DisablePAFXFAST(true))
	return k, nil
}

// Principal is the full principal name.
func (k *KerberosLogin) Principal() string { return k.opts.Principal }

// Login performs an AS exchange from the keytab and holds the new TGT.
// reason is logged: "initial", "margin", "authentication-failure".
func (k *KerberosLogin) Login(ctx context.Context, reason string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.login(ctx, reason)
}

func (k *KerberosLogin) login(ctx context.Context, reason string) error {
	log := logFrom(ctx, k.opts.Log)
	if err := ctx.Err(); err != nil {
		return err
	}
	log.LogAttrs(ctx, slog.LevelInfo, "ticket request", slog.String("principal", k.opts.Principal), slog.String("reason", reason))
	req, err := messages.NewASReqForTGT(k.realm, k.cfg, k.name)
	if err != nil {
		return k.fail(ctx, log, "login", err)
	}
	rep, err := k.cl.ASExchange(k.realm, req, 0)
	if err != nil {
		return k.fail(ctx, log, "login", err)
	}
	k.tgt, k.key = rep.Ticket, rep.DecryptedEncPart.Key
	k.authTime, k.endTime = rep.DecryptedEncPart.AuthTime, rep.DecryptedEncPart.EndTime
	k.logins++
	log.LogAttrs(ctx, slog.LevelInfo, "ticket granted", slog.String("principal", k.opts.Principal),
		slog.Time("end_time", k.endTime), slog.Float64("lifetime_seconds", k.endTime.Sub(k.authTime).Seconds()))
	return nil
}

func (k *KerberosLogin) fail(ctx context.Context, log *slog.Logger, op string, err error) error {
	ke := kerberosError(k.opts.Principal, op, err)
	log.LogAttrs(ctx, slog.LevelWarn, "ticket error", slog.String("principal", k.opts.Principal),
		slog.String("op", op), slog.String("error", ke.Reason), slog.Bool("unreachable", ke.Unreachable))
	return ke
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
		return k.login(ctx, "initial")
	}
	left := k.endTime.Sub(k.opts.Now())
	if left >= k.threshold() {
		return nil
	}
	logFrom(ctx, k.opts.Log).LogAttrs(ctx, slog.LevelInfo, "ticket expiring", slog.String("principal", k.opts.Principal),
		slog.Float64("remaining_seconds", left.Seconds()), slog.Float64("margin_seconds", k.threshold().Seconds()))
	return k.login(ctx, "margin")
}

// Info describes the TGT held now.
func (k *KerberosLogin) Info() TicketInfo {
	k.mu.Lock()
	defer k.mu.Unlock()
	return TicketInfo{Worker: k.opts.Worker, Principal: k.opts.Principal, AuthTime: k.authTime, EndTime: k.endTime,
		Lifetime: k.endTime.Sub(k.authTime), Logins: k.logins}
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
	op := "service ticket for " + spn
	log.LogAttrs(ctx, slog.LevelInfo, "service ticket request", slog.String("principal", k.opts.Principal), slog.String("spn", spn))
	sname := types.NewPrincipalName(nametype.KRB_NT_SRV_INST, spn)
	_, rep, err := k.cl.TGSREQGenerateAndExchange(sname, k.realm, k.tgt, k.key, false)
	if err != nil {
		return "", k.fail(ctx, log, op, err)
	}
	init, err := spnego.NewNegTokenInitKRB5(k.cl, rep.Ticket, rep.DecryptedEncPart.Key)
	if err != nil {
		return "", k.fail(ctx, log, op, err)
	}
	tok := spnego.SPNEGOToken{Init: true, NegTokenInit: init}
	b, err := tok.Marshal()
	if err != nil {
		return "", k.fail(ctx, log, op, err)
	}
	log.LogAttrs(ctx, slog.LevelInfo, "service ticket granted", slog.String("spn", spn), slog.Time("end_time", rep.DecryptedEncPart.EndTime))
	return "Negotiate " + base64.StdEncoding.EncodeToString(b), nil
}
