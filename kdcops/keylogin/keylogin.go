// Package keylogin logs a service in from its keytab the way a long job
// needs it: the keytab file is read again at every login (a rotation
// replaces it on disk while the job runs), a change of its kvno is logged,
// and when the primary identity's key no longer works a fallback
// principal's keytab is used instead. resume-query's workers and krbops
// exec are built on it. Start with [New] and [Login.Login].
package keylogin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
)

// Identity is a principal and the keytab it logs in from.
type Identity struct {
	Principal string // name[/instance][@REALM]
	Keytab    string
}

// Options configure New.
type Options struct {
	Primary  Identity
	Fallback *Identity // nil: no fallback
	// Config is this Login's own parsed krb5.conf: gokrb5's config is not
	// safe for concurrent use, so it must not be shared.
	Config *config.Config
	Log    *slog.Logger
}

// Error is a failed login. Key is true when the identity's key is the
// problem (the keytab is unreadable or unusable, the KDC refused
// pre-authentication, does not know the principal, or its reply does not
// decrypt): the failures a fallback principal is for. Unreachable is true
// when no KDC answered.
type Error struct {
	Principal   string
	Op          string // "login", "renewal", "service ticket for HTTP/..."
	Unreachable bool
	Key         bool
	Reason      string // the KRB error name, the keytab problem or the network failure
	// Fallback is the fallback identity's failure, when it was tried too.
	Fallback *Error
	// Repeated: the KDC was not asked again; this is its refusal of the
	// same keytab less than RetryRefusedAfter ago.
	Repeated bool
}

func (e *Error) Error() string {
	s := fmt.Sprintf("kerberos %s as %s: %s", e.Op, e.Principal, e.Reason)
	if e.Fallback != nil {
		s += fmt.Sprintf("; fallback %s as %s: %s", e.Fallback.Op, e.Fallback.Principal, e.Fallback.Reason)
	}
	return s
}

// FaultClass: no KDC answered (fault.Unreachable), an unusable keytab
// file (fault.Usage), or the KDC refused (fault.CheckFailed).
func (e *Error) FaultClass() fault.Class {
	switch {
	case e.Unreachable:
		return fault.Unreachable
	case e.Key && strings.HasPrefix(e.Reason, "keytab "):
		return fault.Usage
	}
	return fault.CheckFailed
}

// Hint says what to do next.
func (e *Error) Hint() string {
	switch {
	case e.Unreachable:
		return "no KDC answered: check the realm's kdc entries in krb5.conf and the network"
	case strings.HasPrefix(e.Reason, "keytab "):
		return "check the keytab file: it must be a readable keytab holding the principal's key"
	case strings.Contains(e.Reason, "PREAUTH_FAILED"), strings.Contains(e.Reason, "integrity"):
		return "the keytab's key is not the principal's current key (rotated?): fetch the current keytab, then run again"
	case strings.Contains(e.Reason, "SKEW"):
		return "this host's clock is off from the KDC's: run krbops clock-check"
	case e.PrincipalUnknown():
		return "the KDC does not know the principal: check its name"
	}
	return "check the principal with kinit -kt <keytab> <principal>"
}

// PrincipalUnknown reports whether the KDC does not know the principal
// (or the service principal a ticket was asked for).
func (e *Error) PrincipalUnknown() bool {
	return strings.Contains(e.Reason, "PRINCIPAL_UNKNOWN")
}

var krbErrName = regexp.MustCompile(`\b(KDC_ERR_[A-Z_]+|KRB_AP_ERR_[A-Z_]+|KRB_ERR_[A-Z_]+)\b`)

// keyErrors are the KDC answers that say the client's key is wrong or
// gone: a fallback identity may still work.
var keyErrors = []string{"KDC_ERR_PREAUTH_FAILED", "KDC_ERR_C_PRINCIPAL_UNKNOWN", "KDC_ERR_CLIENT_REVOKED",
	"KRB_AP_ERR_BAD_INTEGRITY", "KDC_ERR_ETYPE_NOSUPP", "KDC_ERR_KEY_EXPIRED"}

// Classify turns a gokrb5 error into an *Error. gokrb5's errors carry
// the KDC error code only as text ("KRB Error: (24)
// KDC_ERR_PREAUTH_FAILED"), so the name is taken from there. The result
// never quotes gokrb5's message beyond its last element, which carries no
// key material (keytab parsing, which does, is done by kdcops).
func Classify(principal, op string, err error) *Error {
	s := err.Error()
	e := &Error{Principal: principal, Op: op}
	if m := krbErrName.FindString(s); m != "" {
		e.Reason = m
		for _, k := range keyErrors {
			e.Key = e.Key || m == k
		}
		return e
	}
	switch {
	case strings.Contains(s, "Networking_Error"), strings.Contains(s, "failed to communicate with KDC"),
		strings.Contains(s, "connection refused"), strings.Contains(s, "i/o timeout"), strings.Contains(s, "no KDCs defined"):
		e.Unreachable = !strings.Contains(s, "no KDCs defined")
		e.Reason = "no KDC answered"
		if !e.Unreachable {
			e.Reason = "krb5.conf lists no KDC for the realm"
		}
	case strings.Contains(s, "integrity verification failed"), strings.Contains(s, "Decrypting_Error"):
		e.Key = true
		e.Reason = "the KDC's reply does not decrypt with the keytab's key (integrity verification failed)"
	default:
		s, _, _ = strings.Cut(s, "\n")
		parts := strings.Split(s, ": ")
		e.Reason = parts[len(parts)-1]
	}
	return e
}

// Ticket is a TGT (or a renewed one) and the client that got it.
type Ticket struct {
	Principal string // name@REALM it was issued to
	Fallback  bool   // issued to the fallback identity
	KVNO      uint32 // of the keytab key it was obtained with (0 after a renewal keeps the login's)
	CName     types.PrincipalName
	Realm     string
	Ticket    messages.Ticket
	Part      messages.EncKDCRepPart // session key, flags, times, server
	// Client is a gokrb5 client holding the identity's keys, for service
	// tickets from this TGT. Not safe for concurrent use.
	Client *client.Client
}

// Lifetime is from the ticket's start (its auth time when it has no
// start time; a renewal's is the renewal) to its end.
func (t *Ticket) Lifetime() time.Duration {
	start := t.Part.StartTime
	if start.IsZero() {
		start = t.Part.AuthTime
	}
	return t.Part.EndTime.Sub(start)
}

// Renewable reports whether the KDC would renew the ticket at now.
func (t *Ticket) Renewable(now time.Time) bool {
	return types.IsFlagSet(&t.Part.Flags, flags.Renewable) && t.Part.RenewTill.After(now)
}

type ident struct {
	Identity
	name  types.PrincipalName
	realm string
	full  string
	kvno  uint32 // of the last login, for "keytab kvno changed"
	// The KDC's last refusal of this identity's key, and the keytab file
	// it was refused with: see RetryRefusedAfter.
	refused   *Error
	refusedAt time.Time
	refusedBy fileStamp
}

// RetryRefusedAfter: a key the KDC refused is not offered again from the
// same, unchanged keytab file sooner than this. A caller that retries
// every page or every second would otherwise send a failed
// pre-authentication each time, and a KDC with account lockout counts
// every one; a new keytab file is tried at once.
const RetryRefusedAfter = time.Minute

// Login is one process's (or one worker's) login state. Its methods are
// safe for concurrent use; they serialise.
type Login struct {
	cfg *config.Config
	log *slog.Logger
	ids []*ident // primary, then the fallback

	mu sync.Mutex
	// onFallback: the last login was the fallback's. The primary is tried
	// again only when its keytab file changed since it failed, so a
	// broken primary is not asked every time (a KDC with lockout
	// counts every failed pre-authentication).
	onFallback   bool
	primaryStamp fileStamp
}

// New checks the identities' names (not their keytabs: those are read at
// every login).
func New(o Options) (*Login, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	l := &Login{cfg: o.Config, log: o.Log}
	ids := []Identity{o.Primary}
	if o.Fallback != nil {
		ids = append(ids, *o.Fallback)
	}
	for _, id := range ids {
		name, realm := kdcops.SplitPrincipal(id.Principal)
		if realm == "" {
			realm = o.Config.LibDefaults.DefaultRealm
		}
		if name == "" || realm == "" {
			return nil, fmt.Errorf("principal %q: need name@REALM (krb5.conf has no default_realm)", id.Principal)
		}
		l.ids = append(l.ids, &ident{Identity: id, name: types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, name), realm: realm, full: name + "@" + realm})
	}
	return l, nil
}

// Principal is the primary principal, name@REALM.
func (l *Login) Principal() string { return l.ids[0].full }

// FallbackPrincipal is the fallback principal, "" without one.
func (l *Login) FallbackPrincipal() string {
	if len(l.ids) < 2 {
		return ""
	}
	return l.ids[1].full
}

type logKey struct{}

// WithLog makes Login log to lg for calls made with the returned context
// (resume-query: the worker's and segment's logger).
func WithLog(ctx context.Context, lg *slog.Logger) context.Context {
	return context.WithValue(ctx, logKey{}, lg)
}

func (l *Login) logger(ctx context.Context) *slog.Logger {
	if lg, ok := ctx.Value(logKey{}).(*slog.Logger); ok && lg != nil {
		return lg
	}
	return l.log
}

// Login performs an AS exchange from the keytab read now. When the
// primary identity fails with a key error and a fallback is configured,
// the fallback logs in (logged as "ticket fallback"). reason is logged:
// "initial", "margin", "authentication-failure", "expiry".
func (l *Login) Login(ctx context.Context, reason string) (*Ticket, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	log := l.logger(ctx)
	primary := l.ids[0]
	skipPrimary := l.onFallback && len(l.ids) > 1 && stampOf(primary.Keytab) == l.primaryStamp
	var first *Error
	for i, id := range l.ids {
		if i == 0 && skipPrimary {
			continue
		}
		t, err := l.try(ctx, log, id, reason)
		if err == nil {
			t.Fallback = i > 0
			if t.Fallback {
				attrs := []slog.Attr{slog.String("principal", id.full), slog.String("primary", primary.full), slog.String("reason", reason)}
				if first != nil {
					attrs = append(attrs, slog.String("primary_error", first.Reason))
				} else {
					attrs = append(attrs, slog.String("primary_error", "failed before; its keytab has not changed since"))
				}
				log.LogAttrs(ctx, slog.LevelWarn, "ticket fallback", attrs...)
			} else if l.onFallback {
				log.LogAttrs(ctx, slog.LevelInfo, "ticket primary again", slog.String("principal", id.full))
			}
			l.onFallback = t.Fallback
			return t, nil
		}
		var e *Error
		if !errors.As(err, &e) || !e.Key {
			return nil, err
		}
		if i == 0 {
			l.primaryStamp = stampOf(primary.Keytab)
		}
		if first == nil {
			first = e
		} else {
			first.Fallback = e
		}
	}
	return nil, first
}

func (l *Login) try(ctx context.Context, log *slog.Logger, id *ident, reason string) (*Ticket, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fail := func(e *Error) (*Ticket, error) {
		log.LogAttrs(ctx, slog.LevelWarn, "ticket error", slog.String("principal", id.full), slog.String("op", e.Op),
			slog.String("error", e.Reason), slog.Bool("unreachable", e.Unreachable), slog.Bool("key_error", e.Key))
		return nil, e
	}
	// The keytab is read at every login: a rotation replaces it while a
	// long job runs, and the bytes read at start hold a key the KDC no
	// longer has (Hadoop's checkTGTAndReloginFromKeytab does the same).
	keys, kvno, err := kdcops.LoadLoginKeys(id.Keytab, id.full)
	var kt *keytab.Keytab
	if err == nil {
		kt, err = kdcops.GokrbKeytab(keys)
	}
	if err != nil {
		return fail(&Error{Principal: id.full, Op: "login", Key: true, Reason: "keytab " + strings.TrimPrefix(err.Error(), "keytab ")})
	}
	if id.kvno != 0 && id.kvno != kvno {
		log.LogAttrs(ctx, slog.LevelInfo, "keytab kvno changed", slog.String("principal", id.full), slog.String("keytab", id.Keytab),
			slog.Int("old_kvno", int(id.kvno)), slog.Int("new_kvno", int(kvno)))
	}
	if id.refused != nil && time.Since(id.refusedAt) < RetryRefusedAfter && stampOf(id.Keytab) == id.refusedBy {
		again := *id.refused
		again.Repeated, again.Fallback = true, nil
		return nil, &again
	}
	log.LogAttrs(ctx, slog.LevelInfo, "ticket request", slog.String("principal", id.full), slog.String("reason", reason), slog.Int("kvno", int(kvno)))
	// krbops' own AS exchange: ctx (SIGINT) cancels it at once, where
	// gokrb5's ASExchange would wait out every KDC's and transport's
	// timeout. The gokrb5 client is kept for the caller's service tickets.
	cl := client.NewWithKeytab(id.name.PrincipalNameString(), id.realm, kt, l.cfg, client.DisablePAFXFAST(true))
	tkt, part, err := l.online(log).LoginTGT(ctx, id.realm, id.name, keys)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, ctx.Err()
		}
		e := classifyKDC(id.full, "login", err)
		if e.Key {
			id.refused, id.refusedAt, id.refusedBy = e, time.Now(), stampOf(id.Keytab)
		}
		return fail(e)
	}
	id.refused = nil
	id.kvno = kvno
	t := &Ticket{Principal: id.full, KVNO: kvno, CName: id.name, Realm: id.realm, Ticket: tkt, Part: part, Client: cl}
	log.LogAttrs(ctx, slog.LevelInfo, "ticket granted", slog.String("principal", id.full), slog.Int("kvno", int(kvno)),
		slog.Time("end_time", t.Part.EndTime), slog.Float64("lifetime_seconds", t.Lifetime().Seconds()),
		slog.Bool("renewable", t.Renewable(t.Part.AuthTime)))
	return t, nil
}

// Renew asks the KDC to renew t (a TGS exchange with the RENEW option,
// no keytab involved) and returns the renewed ticket.
func (l *Login) Renew(ctx context.Context, t *Ticket) (*Ticket, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	log := l.logger(ctx)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	log.LogAttrs(ctx, slog.LevelInfo, "ticket renewal request", slog.String("principal", t.Principal),
		slog.Time("renew_till", t.Part.RenewTill))
	tkt, part, err := l.online(log).RenewTGT(ctx, t.Realm, t.CName, t.Ticket, t.Part.Key)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, ctx.Err()
		}
		e := classifyKDC(t.Principal, "renewal", err)
		log.LogAttrs(ctx, slog.LevelWarn, "ticket error", slog.String("principal", t.Principal), slog.String("op", e.Op),
			slog.String("error", e.Reason), slog.Bool("unreachable", e.Unreachable))
		return nil, e
	}
	n := *t
	n.Ticket, n.Part = tkt, part
	log.LogAttrs(ctx, slog.LevelInfo, "ticket renewed", slog.String("principal", t.Principal),
		slog.Time("end_time", n.Part.EndTime), slog.Time("renew_till", n.Part.RenewTill))
	return &n, nil
}

// online is the ctx-aware KDC client of one exchange, on this Login's
// own krb5.conf.
func (l *Login) online(log *slog.Logger) *kdcops.OnlineClient {
	return &kdcops.OnlineClient{Config: &kdcops.Config{Config: l.cfg}, Log: log}
}

// classifyKDC is Classify for kdcops' errors: an unreachable KDC and a
// krb5.conf without one are told by type, the KDC's answers by name.
func classifyKDC(principal, op string, err error) *Error {
	var ue *kdcops.UnreachableError
	var ce *kdcops.ConfigError
	switch {
	case errors.As(err, &ue), errors.Is(err, context.DeadlineExceeded):
		return &Error{Principal: principal, Op: op, Unreachable: true, Reason: "no KDC answered"}
	case errors.As(err, &ce):
		return &Error{Principal: principal, Op: op, Reason: "krb5.conf lists no KDC for the realm"}
	}
	return Classify(principal, op, err)
}

// fileStamp tells whether a keytab file was replaced or rewritten.
type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{size: fi.Size(), mtime: fi.ModTime(), ino: inodeOf(fi)}
}
