package runbook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/secretstore"
)

// Step ids of the verify runbook, in order. config and clock run once per
// run; the others once per target (with the target as the step's group
// when there are several).
const (
	StepVerifyConfig = "config"
	StepVerifyClock  = "clock"
	StepVerifyKeytab = "keytab"
	StepVerifyAS     = "as"
	StepVerifyTGT    = "tgt"
	StepVerifyTGS    = "tgs"
	StepVerifyAP     = "ap"
	StepVerifySecret = "secret-store"
	StepVerifySPNEGO = "spnego"
)

// VerifyTarget is one principal to prove end to end.
type VerifyTarget struct {
	Principal    string // name@REALM; the realm defaults to the run's realm
	Keytab       string // its keytab
	Service      string // SPN for the tgs/ap steps; default the principal itself
	ServerKeytab string // keytab the service decrypts with; default Keytab
}

// Verify holds what every target's runbook shares. Nothing in it is
// mutated by the steps, so one Verify serves all workers; each target gets
// its own KDC client (gokrb5 state is not goroutine-safe).
type Verify struct {
	Config *kdcops.Config
	Realm  string
	KDCs   []kdcops.KDC // of Realm, for the config and clock steps
	// ProbePrincipal names the clock probe's AS-REQ (the first target): a
	// real principal that requires pre-authentication, so the KDC answers
	// with an error and issues nothing.
	ProbePrincipal string
	Timeout        time.Duration
	Log            *slog.Logger
	MinLifetime    time.Duration
	WarnSkew       time.Duration
	Limiter        kdcops.Limiter // paces every KDC request across all workers; nil: unpaced
	CCache         *kdcops.CCache // the operator's TGT, to learn a stale principal's KDC kvno
	Lint           kdcops.LintOptions
	SPNEGO         func(ctx context.Context, t VerifyTarget, entries []kdcops.KeytabEntry) (int, error) // nil: no spnego step
	SPNEGOURL      string
	// Store and Secret name the secret-store copy of the keytab to compare
	// with the local one (single target); nil Store: no secret-store step.
	Store  secretstore.Store
	Secret string
	// NewClient replaces the KDC client in tests.
	NewClient func() *kdcops.OnlineClient
}

// Preflight is the part run once: krb5.conf and one clock probe.
func (v *Verify) Preflight() Runbook {
	clock := ClockCheck{
		Config: v.Config, Realm: v.Realm, Principal: v.ProbePrincipal, KDCs: v.KDCs,
		WarnSkew: v.WarnSkew, MaxSkew: v.Config.ClockSkew(), Timeout: v.Timeout, Log: v.Log, Quick: true,
		Limiter: v.Limiter,
	}
	return Runbook{Command: "verify", Steps: []Step{
		{ID: StepVerifyConfig, Title: "krb5.conf, realm and KDCs", Run: v.config},
		clock.FirstKDCStep(StepVerifyClock, "clock of the realm's KDC"),
	}}
}

func (v *Verify) config(context.Context, *State) Result {
	var kdcs []string
	for _, k := range v.KDCs {
		kdcs = append(kdcs, k.Entry)
	}
	return Passf("%s: realm %s, %d KDC(s)", v.Config.Path, v.Realm, len(kdcs)).With(Evidence{
		"krb5_conf": v.Config.Path, "realm": v.Realm, "kdcs": kdcs, "clockskew_seconds": v.Config.ClockSkew().Seconds(),
	})
}

// per-target state keys
const (
	keyVerifyEntries = "verify.entries"
	keyVerifySession = "verify.session"
	keyVerifyTicket  = "verify.ticket"
	keyVerifyClient  = "verify.client"
)

// Target is the runbook for one principal. group labels its steps when a
// run checks several targets.
func (v *Verify) Target(t VerifyTarget, group string) Runbook {
	if _, realm := kdcops.SplitPrincipal(t.Principal); realm == "" {
		t.Principal += "@" + v.Realm
	}
	if t.Service == "" {
		t.Service = t.Principal
	} else if _, realm := kdcops.SplitPrincipal(t.Service); realm == "" {
		t.Service += "@" + v.Realm
	}
	if t.ServerKeytab == "" {
		t.ServerKeytab = t.Keytab
	}
	steps := []Step{
		{ID: StepVerifyKeytab, Title: "keytab holds the principal", Run: func(ctx context.Context, st *State) Result { return v.keytab(st, t) }},
		{ID: StepVerifyAS, Title: "AS exchange, one kvno at a time", Needs: []string{StepVerifyKeytab}, Run: func(ctx context.Context, st *State) Result { return v.as(ctx, st, t) }},
		{ID: StepVerifyTGT, Title: "TGT lifetime and renewability", Needs: []string{StepVerifyAS}, Run: func(ctx context.Context, st *State) Result { return v.tgt(st) }},
		{ID: StepVerifyTGS, Title: "service ticket for " + t.Service, Needs: []string{StepVerifyAS}, Run: func(ctx context.Context, st *State) Result { return v.tgs(ctx, st, t) }},
		{ID: StepVerifyAP, Title: "server keytab decrypts the ticket", Needs: []string{StepVerifyTGS}, Run: func(ctx context.Context, st *State) Result { return v.ap(st, t) }},
	}
	if v.Store != nil {
		steps = append(steps, Step{ID: StepVerifySecret, Title: "secret store holds the same keys", Needs: []string{StepVerifyKeytab}, Run: func(ctx context.Context, st *State) Result { return v.secretStore(ctx, st, t) }})
	}
	if v.SPNEGO != nil {
		steps = append(steps, Step{ID: StepVerifySPNEGO, Title: "HTTP GET with SPNEGO", Needs: []string{StepVerifyAS}, Run: func(ctx context.Context, st *State) Result { return v.spnego(ctx, st, t) }})
	}
	for i := range steps {
		steps[i].Group = group
	}
	return Runbook{Command: "verify", Steps: steps}
}

func (v *Verify) client(st *State) *kdcops.OnlineClient {
	if c, ok := Value[*kdcops.OnlineClient](st, keyVerifyClient); ok {
		return c
	}
	var c *kdcops.OnlineClient
	if v.NewClient != nil {
		c = v.NewClient()
	} else {
		c = &kdcops.OnlineClient{Config: v.Config, Timeout: v.Timeout, Log: v.Log, CCache: v.CCache, Limiter: v.Limiter}
	}
	st.Set(keyVerifyClient, c)
	return c
}

func (v *Verify) keytab(st *State, t VerifyTarget) Result {
	kt, err := kdcops.ReadKeytabFile(t.Keytab, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		return Failf("%s", err.Error()).With(Evidence{"keytab": t.Keytab}).
			WithHint("check the path and that this user may read it; klist-lint %s explains a corrupt file", t.Keytab)
	}
	var fs []kdcops.Finding
	if fi, err := os.Stat(t.Keytab); err == nil {
		fs = append(fs, kdcops.KeytabAccessFindings(t.Keytab, fi, v.Lint)...)
	}
	lint := v.Lint
	lint.Principal = t.Principal
	fs = append(fs, kdcops.LintKeytab(t.Keytab, kt.Entries, lint)...)
	mine := entriesOf(kt.Entries, t.Principal)
	st.Set(keyVerifyEntries, mine)
	kvnos, etypes := kvnosAndEnctypes(mine)
	ev := Evidence{"keytab": t.Keytab, "principal": t.Principal, "kvnos": kvnos, "enctypes": etypes}
	if len(mine) == 0 {
		return Failf("keytab %s holds no key for %s", t.Keytab, t.Principal).With(ev).
			WithHint("export it: kadmin -q \"ktadd -k %s %s\", or fetch the right keytab from the secret store", t.Keytab, t.Principal)
	}
	res := fromFindings(fs, fmt.Sprintf("%s: kvno %s, %s", t.Keytab, joinUints(kvnos), strings.Join(etypes, ", ")), ev)
	return res
}

func entriesOf(entries []kdcops.KeytabEntry, principal string) []kdcops.KeytabEntry {
	var out []kdcops.KeytabEntry
	for _, e := range entries {
		if strings.EqualFold(e.Principal, principal) {
			out = append(out, e)
		}
	}
	return out
}

func kvnosAndEnctypes(entries []kdcops.KeytabEntry) ([]uint32, []string) {
	seen := map[string]bool{}
	var etypes []string
	for _, e := range entries {
		if n := kdcops.EnctypeName(e.Enctype); !seen[n] {
			seen[n] = true
			etypes = append(etypes, n)
		}
	}
	return kdcops.KVNOs(entries), etypes
}

func (v *Verify) as(ctx context.Context, st *State, t VerifyTarget) Result {
	entries, _ := Value[[]kdcops.KeytabEntry](st, keyVerifyEntries)
	c := v.client(st)
	sess, attempts, err := c.LoginPerKVNO(ctx, entries)
	keytabKVNOs, _ := kvnosAndEnctypes(entries)
	newest := keytabKVNOs[len(keytabKVNOs)-1]
	ev := Evidence{"principal": t.Principal, "keytab_kvnos": keytabKVNOs, "attempts": describeAttempts(attempts)}
	if err != nil {
		return kdcFailure(ctx, err, t.Principal, ev)
	}
	if sess != nil {
		st.Set(keyVerifySession, sess)
		ev["accepted_kvno"] = sess.KVNO
		ev["enctype"] = kdcops.EnctypeName(sess.Enctype)
		if sess.KVNO != newest {
			return Warnf("KDC accepted kvno %d, not the keytab's newest kvno %d", sess.KVNO, newest).With(ev).
				WithHint("the keytab is ahead of the KDC: a rotation that never reached this KDC, a replica lagging behind, or the wrong realm; check kvno at the primary KDC")
		}
		return Passf("KDC accepted kvno %d (%s)", sess.KVNO, kdcops.EnctypeName(sess.Enctype)).With(ev)
	}
	// Every kvno was rejected: say which kvno the KDC holds, if we can ask.
	rejected := describeAttempts(attempts)
	kdcKVNO, via, kerr := c.KDCKVNOWith(ctx, realmOf(t.Principal, v.Realm), componentsOf(t.Principal))
	switch {
	case kerr == nil:
		ev["kdc_kvno"] = kdcKVNO
		ev["kdc_kvno_source"] = "ticket requested with the TGT of " + via
		return Failf("KDC rejected keytab kvno %s (%s); the KDC's current kvno is %d", joinUints(keytabKVNOs), rejected, kdcKVNO).With(ev).
			WithHint("the keytab is stale (kvno %d < %d): fetch the current keytab from the secret store, or rotate the principal", newest, kdcKVNO)
	case kdcops.IsNoCCacheTGT(kerr):
		ev["kdc_kvno"] = "unknown"
		return Failf("KDC rejected keytab kvno %s (%s); the KDC's kvno is unknown", joinUints(keytabKVNOs), rejected).With(ev).
			WithHint("the keytab's key does not match the KDC's: fetch the current keytab or rotate; kinit as yourself and re-run to see the KDC's kvno")
	default:
		ev["kdc_kvno"] = "unknown"
		return Failf("KDC rejected keytab kvno %s (%s); asking the KDC's kvno failed: %s", joinUints(keytabKVNOs), rejected, kerr).With(ev).
			WithHint("the keytab's key does not match the KDC's: fetch the current keytab or rotate")
	}
}

func describeAttempts(as []kdcops.LoginAttempt) string {
	var parts []string
	for _, a := range as {
		switch {
		case a.Skipped != "":
			parts = append(parts, fmt.Sprintf("kvno %d skipped: %s", a.KVNO, a.Skipped))
		case a.OK:
			parts = append(parts, fmt.Sprintf("kvno %d %s accepted", a.KVNO, kdcops.EnctypeName(a.Enctype)))
		default:
			parts = append(parts, fmt.Sprintf("kvno %d %s: %s", a.KVNO, kdcops.EnctypeName(a.Enctype), a.Error))
		}
	}
	return strings.Join(parts, "; ")
}

// kdcFailure turns an error that ended an exchange into a result with the
// hint an expert would give.
func kdcFailure(ctx context.Context, err error, principal string, ev Evidence) Result {
	var ke *kdcops.KDCError
	var unreachable *kdcops.UnreachableError
	switch {
	case ctx.Err() != nil:
		return Errorf("interrupted").With(ev)
	case errors.As(err, &unreachable):
		return Errorf("%s", err).With(ev).WithHint("no KDC answered: check krb5kdc and port 88; run krbops clock-check for each KDC's state")
	case errors.As(err, &ke):
		ev["kdc_error"] = ke.Name
		switch ke.Code {
		case kdcops.ErrPrincipalUnknown:
			return Failf("the KDC does not know %s (%s)", principal, ke.Name).With(ev).
				WithHint("check the principal's spelling and realm: kadmin -q \"getprinc %s\"", principal)
		case kdcops.ErrServerUnknown:
			return Failf("the KDC does not know the service (%s)", ke.Name).With(ev).
				WithHint("check --service: the SPN must exist at the KDC (kadmin getprinc)")
		case kdcops.ErrSkew:
			return Failf("the KDC rejected the request for clock skew (%s)", ke.Name).With(ev).
				WithHint("run krbops clock-check and fix time sync on the side that is off")
		case kdcops.ErrClientRevoked, kdcops.ErrKeyExpired, kdcops.ErrPolicy:
			return Failf("the KDC refuses %s: %s", principal, ke.Error()).With(ev).
				WithHint("the principal is locked, disabled or its key expired: kadmin -q \"getprinc %s\" shows which", principal)
		}
		return Failf("the KDC answered %s", ke.Error()).With(ev).WithHint("re-run with --log-file to see the exchange")
	}
	return Errorf("%s", err).With(ev).WithHint("re-run with --log-file to see the exchange")
}

func (v *Verify) tgt(st *State) Result {
	sess, _ := Value[*kdcops.Session](st, keyVerifySession)
	life := sess.Lifetime()
	ev := Evidence{
		"lifetime_seconds": life.Seconds(), "end_time": sess.EndTime.UTC(), "renewable": sess.Renewable,
		"min_lifetime_seconds": v.MinLifetime.Seconds(),
	}
	if sess.Renewable {
		ev["renew_till"] = sess.RenewTill.UTC()
	}
	if life < v.MinLifetime {
		return Failf("TGT lifetime %s is below --min-lifetime %s", kdcops.HumanDuration(life), kdcops.HumanDuration(v.MinLifetime)).With(ev).
			WithHint("the KDC caps it: raise max_life of the principal or of krbtgt/%s (kadmin modprinc -maxlife), or lower --min-lifetime", sess.Realm)
	}
	if want := v.Config.LibDefaults.RenewLifetime; want > 0 && !sess.Renewable {
		ev["renew_lifetime_seconds"] = want.Seconds()
		return Warnf("TGT is not renewable although krb5.conf asks for renew_lifetime %s", kdcops.HumanDuration(want)).With(ev).
			WithHint("set max_renewable_life on the principal and on krbtgt/%s (kadmin modprinc -maxrenewlife), or services must re-login from the keytab", sess.Realm)
	}
	return Passf("TGT valid for %s (renewable: %t)", kdcops.HumanDuration(life), sess.Renewable).With(ev)
}

func (v *Verify) tgs(ctx context.Context, st *State, t VerifyTarget) Result {
	sess, _ := Value[*kdcops.Session](st, keyVerifySession)
	sname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: componentsOf(t.Service)}
	tkt, err := v.client(st).ServiceTicket(ctx, sess, sname)
	ev := Evidence{"service": t.Service}
	if err != nil {
		return kdcFailure(ctx, err, t.Service, ev)
	}
	st.Set(keyVerifyTicket, tkt)
	ev["ticket_kvno"] = tkt.EncPart.KVNO
	ev["enctype"] = kdcops.EnctypeName(tkt.EncPart.EType)
	return Passf("ticket for %s issued under kvno %d (%s)", t.Service, tkt.EncPart.KVNO, kdcops.EnctypeName(tkt.EncPart.EType)).With(ev)
}

func (v *Verify) ap(st *State, t VerifyTarget) Result {
	tkt, _ := Value[messages.Ticket](st, keyVerifyTicket)
	var server []kdcops.KeytabEntry
	if t.ServerKeytab == t.Keytab && strings.EqualFold(t.Service, t.Principal) {
		server, _ = Value[[]kdcops.KeytabEntry](st, keyVerifyEntries)
	} else {
		kt, err := kdcops.ReadKeytabFile(t.ServerKeytab, kdcops.KeytabOptions{KeepKeys: true})
		if err != nil {
			return Failf("server keytab: %s", err).With(Evidence{"server_keytab": t.ServerKeytab}).
				WithHint("pass the keytab the service reads with --server-keytab")
		}
		server = entriesOf(kt.Entries, t.Service)
	}
	r := kdcops.DecryptTicket(tkt, server)
	ev := Evidence{
		"server_keytab": t.ServerKeytab, "service": t.Service, "ticket_kvno": r.TicketKVNO,
		"server_kvnos": r.ServerKVNOs, "enctype": kdcops.EnctypeName(r.Enctype), "decrypted": r.Decrypted,
	}
	switch {
	case len(server) == 0:
		return Failf("server keytab %s holds no key for %s", t.ServerKeytab, t.Service).With(ev).
			WithHint("the service cannot accept any ticket: install the keytab holding %s", t.Service)
	case !r.Held:
		return Failf("tickets are issued under kvno %d but the server keytab holds kvno %s", r.TicketKVNO, joinUints(r.ServerKVNOs)).With(ev).
			WithHint("the service will reject every new ticket (KRB_AP_ERR_BADKEYVER): install the current keytab on the server; during a rotation publish old and new kvno (phase 1)")
	case !r.Decrypted:
		return Failf("the server keytab's kvno %d key (%s) does not decrypt the ticket", r.TicketKVNO, kdcops.EnctypeName(r.Enctype)).With(ev).
			WithHint("same kvno, different key (KRB_AP_ERR_BAD_INTEGRITY): the keytab was exported from another KDC or realm, or re-randomized; fetch the current keytab")
	}
	ev["ticket_client"] = r.Client
	msg := fmt.Sprintf("ticket kvno %d decrypts with %s (server keytab holds kvno %s)", r.TicketKVNO, t.ServerKeytab, joinUints(r.ServerKVNOs))
	return Passf("%s", msg).With(ev)
}

// secretStore compares the store's current keytab with the local one by
// key fingerprints: a host that installed an old copy, or a store that was
// never updated after a rotation, shows up here before the next restart.
func (v *Verify) secretStore(ctx context.Context, st *State, t VerifyTarget) Result {
	local, _ := Value[[]kdcops.KeytabEntry](st, keyVerifyEntries)
	ev := Evidence{"secret": v.Secret}
	ver, err := v.Store.Get(ctx, v.Secret, secretstore.StageCurrent)
	if err != nil {
		hint := secretstore.HintOf(err)
		if hint == "" {
			hint = "check --secret-store and --secret, and that this identity may read the secret"
		}
		if errors.Is(err, secretstore.ErrNotFound) || errors.Is(err, secretstore.ErrPermission) {
			return Failf("%s", err).With(ev).WithHint("%s", hint)
		}
		return Errorf("%s", err).With(ev).WithHint("%s", hint)
	}
	ev["version"] = ver.ID
	stored, err := kdcops.ParseKeytab(ver.Data, kdcops.KeytabOptions{})
	if err != nil {
		return Failf("secret %s version %s is not a keytab: %s", v.Secret, ver.ID, err).With(ev).
			WithHint("the store holds something else under this name: check --secret")
	}
	remote := entriesOf(stored.Entries, t.Principal)
	onlyLocal, onlyStore := diffKeys(local, remote)
	lk, _ := kvnosAndEnctypes(local)
	rk, _ := kvnosAndEnctypes(remote)
	ev["local_kvnos"], ev["store_kvnos"] = lk, rk
	if len(onlyLocal)+len(onlyStore) == 0 {
		return Passf("secret %s (version %s) holds the same %d key(s), kvno %s", v.Secret, ver.ID, len(local), joinUints(lk)).With(ev)
	}
	ev["only_local"], ev["only_store"] = onlyLocal, onlyStore
	return Failf("secret %s differs from %s: %d key(s) only here, %d only in the store", v.Secret, t.Keytab, len(onlyLocal), len(onlyStore)).With(ev).
		WithHint("compare kvnos in the evidence: a newer store copy means this host missed a rotation (reinstall from the store); a newer local copy means the store was not updated (krbops rotate --resume)")
}

// diffKeys lists "kvno N enctype" for keys present on one side only (or
// with different key bytes, by fingerprint).
func diffKeys(a, b []kdcops.KeytabEntry) (onlyA, onlyB []string) {
	has := func(list []kdcops.KeytabEntry, e kdcops.KeytabEntry) bool {
		for _, o := range list {
			if o.KVNO == e.KVNO && e.SameKey(o) {
				return true
			}
		}
		return false
	}
	for _, e := range a {
		if !has(b, e) {
			onlyA = append(onlyA, fmt.Sprintf("kvno %d %s", e.KVNO, kdcops.EnctypeName(e.Enctype)))
		}
	}
	for _, e := range b {
		if !has(a, e) {
			onlyB = append(onlyB, fmt.Sprintf("kvno %d %s", e.KVNO, kdcops.EnctypeName(e.Enctype)))
		}
	}
	return onlyA, onlyB
}

func (v *Verify) spnego(ctx context.Context, st *State, t VerifyTarget) Result {
	sess, _ := Value[*kdcops.Session](st, keyVerifySession)
	entries, _ := Value[[]kdcops.KeytabEntry](st, keyVerifyEntries)
	ev := Evidence{"url": v.SPNEGOURL}
	// Only the kvno the KDC accepted: gokrb5 picks keys by timestamp.
	code, err := v.SPNEGO(ctx, t, kdcops.AtKVNO(entries, sess.KVNO))
	if err != nil {
		return Errorf("GET %s: %s", v.SPNEGOURL, err).With(ev).
			WithHint("check the URL and that the service's SPN is HTTP/<host> at the KDC")
	}
	ev["status"] = code
	if code < 200 || code > 299 {
		return Failf("GET %s answered HTTP %d", v.SPNEGOURL, code).With(ev).
			WithHint("401: the service rejected the ticket (its keytab or SPN); 403: authenticated but not authorized")
	}
	return Passf("GET %s answered HTTP %d", v.SPNEGOURL, code).With(ev)
}

func realmOf(p, def string) string {
	if _, r := kdcops.SplitPrincipal(p); r != "" {
		return r
	}
	return def
}

func componentsOf(p string) []string {
	name, _ := kdcops.SplitPrincipal(p)
	return strings.Split(name, "/")
}

func joinUints(xs []uint32) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprint(x)
	}
	return strings.Join(parts, ", ")
}
