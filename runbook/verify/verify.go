// Package verify is the verify runbook: proves a principal end to end —
// its keytab, an AS exchange per kvno, the TGT, a service ticket, the
// server keytab decrypting it, the secret store's copy and SPNEGO — once
// per target, after one shared preflight. Start with [Fleet], which runs
// [Check.Preflight] once and [Check.Target] per target.
package verify

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/shquote"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/clock"
	"github.com/krbops/krbops/runbook/klistlint"
	"github.com/krbops/krbops/secretstore"
)

// runbook.Step ids of the verify runbook, in order. config and clock run once per
// run; the others once per target (with the target as the step's group
// when there are several).
const (
	StepConfig = "config"
	StepClock  = "clock"
	StepKeytab = "keytab"
	StepAS     = "as"
	StepTGT    = "tgt"
	StepTGS    = "tgs"
	StepAP     = "ap"
	StepSecret = "secret-store"
	StepSPNEGO = "spnego"
)

// Target is one principal to prove end to end.
type Target struct {
	Principal    string // name@REALM; the realm defaults to the run's realm
	Keytab       string // its keytab
	Service      string // SPN for the tgs/ap steps; default the principal itself
	ServerKeytab string // keytab the service decrypts with; default Keytab
}

// Check holds what every target's runbook shares. Nothing in it is
// mutated by the steps, so one Verify serves all workers; each target gets
// its own KDC client (gokrb5 state is not goroutine-safe).
type Check struct {
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
	SPNEGO         func(ctx context.Context, t Target, entries []kdcops.KeytabEntry) (int, error) // nil: no spnego step
	SPNEGOURL      string
	// Store and Secret name the secret-store copy of the keytab to compare
	// with the local one (single target); nil Store: no secret-store step.
	Store  secretstore.Store
	Secret string
	// NewClient replaces the KDC client in tests.
	NewClient func() *kdcops.OnlineClient
}

// Preflight is the part run once: krb5.conf and one clock probe.
func (v *Check) Preflight() runbook.Runbook {
	clk := clock.Check{
		Config: v.Config, Realm: v.Realm, Principal: v.ProbePrincipal, KDCs: v.KDCs,
		WarnSkew: v.WarnSkew, MaxSkew: v.Config.ClockSkew(), Timeout: v.Timeout, Log: v.Log, Quick: true,
		Limiter: v.Limiter,
	}
	return runbook.Runbook{Command: "verify", Steps: []runbook.Step{
		{ID: StepConfig, Title: "krb5.conf, realm and KDCs", Run: v.config},
		clk.FirstKDCStep(StepClock, "clock of the realm's KDC"),
	}}
}

func (v *Check) config(context.Context, *runbook.State) runbook.Result {
	var kdcs []string
	for _, k := range v.KDCs {
		kdcs = append(kdcs, k.Entry)
	}
	return runbook.Passf("%s: realm %s, %d KDC(s)", v.Config.Path, v.Realm, len(kdcs)).With(runbook.Evidence{
		"krb5_conf": v.Config.Path, "realm": v.Realm, "kdcs": kdcs, "clockskew_seconds": v.Config.ClockSkew().Seconds(),
	})
}

// target is what the steps of one target's runbook share. Each target
// has its own KDC client: gokrb5 state is not goroutine-safe.
type target struct {
	Target
	client  *kdcops.OnlineClient
	entries []kdcops.KeytabEntry // the keytab's keys of the principal
	session *kdcops.Session      // the TGT the as step obtained
	ticket  messages.Ticket      // the service ticket the tgs step obtained
}

// Target returns the runbook for one principal. group labels its steps when a
// run checks several targets.
func (v *Check) Target(t Target, group string) runbook.Runbook {
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
	tg := &target{Target: t}
	steps := []runbook.Step{
		{ID: StepKeytab, Title: "keytab holds the principal", Run: func(context.Context, *runbook.State) runbook.Result { return v.keytab(tg) }},
		{ID: StepAS, Title: "AS exchange, one kvno at a time", Needs: []string{StepKeytab}, Run: func(ctx context.Context, _ *runbook.State) runbook.Result { return v.as(ctx, tg) }},
		{ID: StepTGT, Title: "TGT lifetime and renewability", Needs: []string{StepAS}, Run: func(context.Context, *runbook.State) runbook.Result { return v.tgt(tg) }},
		{ID: StepTGS, Title: "service ticket for " + t.Service, Needs: []string{StepAS}, Run: func(ctx context.Context, _ *runbook.State) runbook.Result { return v.tgs(ctx, tg) }},
		{ID: StepAP, Title: "server keytab decrypts the ticket", Needs: []string{StepTGS}, Run: func(context.Context, *runbook.State) runbook.Result { return v.ap(tg) }},
	}
	if v.Store != nil {
		steps = append(steps, runbook.Step{ID: StepSecret, Title: "secret store holds the same keys", Needs: []string{StepKeytab}, Run: func(ctx context.Context, _ *runbook.State) runbook.Result { return v.secretStore(ctx, tg) }})
	}
	if v.SPNEGO != nil {
		steps = append(steps, runbook.Step{ID: StepSPNEGO, Title: "HTTP GET with SPNEGO", Needs: []string{StepAS}, Run: func(ctx context.Context, _ *runbook.State) runbook.Result { return v.spnego(ctx, tg) }})
	}
	for i := range steps {
		steps[i].Group = group
	}
	return runbook.Runbook{Command: "verify", Steps: steps}
}

func (v *Check) client(tg *target) *kdcops.OnlineClient {
	if tg.client == nil {
		if v.NewClient != nil {
			tg.client = v.NewClient()
		} else {
			tg.client = &kdcops.OnlineClient{Config: v.Config, Timeout: v.Timeout, Log: v.Log, CCache: v.CCache, Limiter: v.Limiter}
		}
	}
	return tg.client
}

func (v *Check) keytab(tg *target) runbook.Result {
	t := tg.Target
	kt, err := kdcops.ReadKeytabFile(t.Keytab, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		hint := "check the path and that this user may read it"
		if c := shquote.Command("krbops", "klist-lint", "--keytab", t.Keytab); c != "" {
			hint += "; " + c + " explains a corrupt file"
		}
		return runbook.Failf("%s", err.Error()).With(runbook.Evidence{"keytab": t.Keytab}).WithHint("%s", hint)
	}
	var fs []kdcops.Finding
	if fi, err := os.Stat(t.Keytab); err == nil {
		fs = append(fs, kdcops.KeytabAccessFindings(t.Keytab, fi, v.Lint)...)
	}
	lint := v.Lint
	lint.Principal = t.Principal
	fs = append(fs, kdcops.LintKeytab(t.Keytab, kt.Entries, lint)...)
	mine := entriesOf(kt.Entries, t.Principal)
	tg.entries = mine
	kvnos, etypes := kvnosAndEnctypes(mine)
	ev := runbook.Evidence{"keytab": t.Keytab, "principal": t.Principal, "kvnos": kvnos, "enctypes": etypes}
	if len(mine) == 0 {
		hint := "export it into the keytab (kadmin ktadd), or fetch the right keytab from the secret store"
		if c := shquote.Kadmin("ktadd", "-k", t.Keytab, t.Principal); c != "" {
			hint = "export it: " + c + ", or fetch the right keytab from the secret store"
		}
		return runbook.Failf("keytab %s holds no key for %s", t.Keytab, t.Principal).With(ev).WithHint("%s", hint)
	}
	res := klistlint.FromFindings(fs, fmt.Sprintf("%s: kvno %s, %s", t.Keytab, joinUints(kvnos), strings.Join(etypes, ", ")), ev)
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

func (v *Check) as(ctx context.Context, tg *target) runbook.Result {
	t, entries := tg.Target, tg.entries
	c := v.client(tg)
	sess, attempts, err := c.LoginPerKVNO(ctx, entries)
	keytabKVNOs, _ := kvnosAndEnctypes(entries)
	newest := keytabKVNOs[len(keytabKVNOs)-1]
	ev := runbook.Evidence{"principal": t.Principal, "keytab_kvnos": keytabKVNOs, "attempts": kdcops.DescribeAttempts(attempts)}
	if err != nil {
		return kdcFailure(ctx, err, t.Principal, ev)
	}
	if sess != nil {
		tg.session = sess
		ev["accepted_kvno"] = sess.KVNO
		ev["enctype"] = kdcops.EnctypeName(sess.Enctype)
		if sess.KVNO != newest {
			return runbook.Warnf("KDC accepted kvno %d, not the keytab's newest kvno %d", sess.KVNO, newest).With(ev).
				WithHint("the keytab is ahead of the KDC: a rotation that never reached this KDC, a replica lagging behind, or the wrong realm; check kvno at the primary KDC")
		}
		return runbook.Passf("KDC accepted kvno %d (%s)", sess.KVNO, kdcops.EnctypeName(sess.Enctype)).With(ev)
	}
	// Every kvno was rejected: say which kvno the KDC holds, if we can ask.
	rejected := kdcops.DescribeAttempts(attempts)
	kdcKVNO, via, kerr := c.KDCKVNOWith(ctx, realmOf(t.Principal, v.Realm), componentsOf(t.Principal))
	switch {
	case kerr == nil:
		ev["kdc_kvno"] = kdcKVNO
		ev["kdc_kvno_source"] = "ticket requested with the TGT of " + via
		return runbook.Failf("KDC rejected keytab kvno %s (%s); the KDC's current kvno is %d", joinUints(keytabKVNOs), rejected, kdcKVNO).With(ev).
			WithHint("the keytab is stale (kvno %d < %d): fetch the current keytab from the secret store, or rotate the principal", newest, kdcKVNO)
	case kdcops.IsNoCCacheTGT(kerr):
		ev["kdc_kvno"] = "unknown"
		return runbook.Failf("KDC rejected keytab kvno %s (%s); the KDC's kvno is unknown", joinUints(keytabKVNOs), rejected).With(ev).
			WithHint("the keytab's key does not match the KDC's: fetch the current keytab or rotate; kinit as yourself and re-run to see the KDC's kvno")
	default:
		ev["kdc_kvno"] = "unknown"
		return runbook.Failf("KDC rejected keytab kvno %s (%s); asking the KDC's kvno failed: %s", joinUints(keytabKVNOs), rejected, kerr).With(ev).
			WithHint("the keytab's key does not match the KDC's: fetch the current keytab or rotate")
	}
}

// withCommand appends cmd to a hint, between sep and the optional tail,
// when there is one: a shquote helper returns "" for a value a terminal
// would not show as it is, and the hint is then prose alone.
func withCommand(hint, cmd, sep string, tail ...string) string {
	if cmd == "" {
		return hint
	}
	return hint + sep + cmd + strings.Join(tail, "")
}

// kdcFailure turns an error that ended an exchange into a result with the
// hint an expert would give.
func kdcFailure(ctx context.Context, err error, principal string, ev runbook.Evidence) runbook.Result {
	var ke *kdcops.KDCError
	var unreachable *kdcops.UnreachableError
	switch {
	case ctx.Err() != nil:
		return runbook.Errorf("interrupted").With(ev)
	case errors.As(err, &unreachable):
		return runbook.Errorf("%s", err).With(ev).WithHint("no KDC answered: check krb5kdc and port 88; run krbops clock-check for each KDC's state")
	case errors.As(err, &ke):
		ev["kdc_error"] = ke.Name
		switch ke.Code {
		case kdcops.ErrPrincipalUnknown:
			return runbook.Failf("the KDC does not know %s (%s)", principal, ke.Name).With(ev).
				WithHint("%s", withCommand("check the principal's spelling and realm", shquote.Kadmin("getprinc", principal), ": "))
		case kdcops.ErrServerUnknown:
			return runbook.Failf("the KDC does not know the service (%s)", ke.Name).With(ev).
				WithHint("check --service: the SPN must exist at the KDC (kadmin getprinc)")
		case kdcops.ErrSkew:
			return runbook.Failf("the KDC rejected the request for clock skew (%s)", ke.Name).With(ev).
				WithHint("run krbops clock-check and fix time sync on the side that is off")
		case kdcops.ErrClientRevoked, kdcops.ErrKeyExpired, kdcops.ErrPolicy:
			return runbook.Failf("the KDC refuses %s: %s", principal, ke.Error()).With(ev).
				WithHint("%s", withCommand("the principal is locked, disabled or its key expired", shquote.Kadmin("getprinc", principal), ": ", " shows which"))
		}
		return runbook.Failf("the KDC answered %s", ke.Error()).With(ev).WithHint("re-run with --log-file to see the exchange")
	}
	return runbook.Errorf("%s", err).With(ev).WithHint("re-run with --log-file to see the exchange")
}

func (v *Check) tgt(tg *target) runbook.Result {
	sess := tg.session
	life := sess.Lifetime()
	ev := runbook.Evidence{
		"lifetime_seconds": life.Seconds(), "end_time": sess.EndTime.UTC(), "renewable": sess.Renewable,
		"min_lifetime_seconds": v.MinLifetime.Seconds(),
	}
	if sess.Renewable {
		ev["renew_till"] = sess.RenewTill.UTC()
	}
	if life < v.MinLifetime {
		return runbook.Failf("TGT lifetime %s is below --min-lifetime %s", kdcops.HumanDuration(life), kdcops.HumanDuration(v.MinLifetime)).With(ev).
			WithHint("the KDC caps it: raise max_life of the principal or of %s (kadmin modprinc -maxlife), or lower --min-lifetime", shquote.Quote("krbtgt/"+sess.Realm))
	}
	if want := v.Config.LibDefaults.RenewLifetime; want > 0 && !sess.Renewable {
		ev["renew_lifetime_seconds"] = want.Seconds()
		return runbook.Warnf("TGT is not renewable although krb5.conf asks for renew_lifetime %s", kdcops.HumanDuration(want)).With(ev).
			WithHint("set max_renewable_life on the principal and on %s (kadmin modprinc -maxrenewlife), or services must re-login from the keytab", shquote.Quote("krbtgt/"+sess.Realm))
	}
	return runbook.Passf("TGT valid for %s (renewable: %t)", kdcops.HumanDuration(life), sess.Renewable).With(ev)
}

func (v *Check) tgs(ctx context.Context, tg *target) runbook.Result {
	t, sess := tg.Target, tg.session
	sname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: componentsOf(t.Service)}
	tkt, err := v.client(tg).ServiceTicket(ctx, sess, sname)
	ev := runbook.Evidence{"service": t.Service}
	if err != nil {
		return kdcFailure(ctx, err, t.Service, ev)
	}
	tg.ticket = tkt
	ev["ticket_kvno"] = tkt.EncPart.KVNO
	ev["enctype"] = kdcops.EnctypeName(tkt.EncPart.EType)
	return runbook.Passf("ticket for %s issued under kvno %d (%s)", t.Service, tkt.EncPart.KVNO, kdcops.EnctypeName(tkt.EncPart.EType)).With(ev)
}

func (v *Check) ap(tg *target) runbook.Result {
	t, tkt := tg.Target, tg.ticket
	var server []kdcops.KeytabEntry
	if t.ServerKeytab == t.Keytab && strings.EqualFold(t.Service, t.Principal) {
		server = tg.entries
	} else {
		kt, err := kdcops.ReadKeytabFile(t.ServerKeytab, kdcops.KeytabOptions{KeepKeys: true})
		if err != nil {
			return runbook.Failf("server keytab: %s", err).With(runbook.Evidence{"server_keytab": t.ServerKeytab}).
				WithHint("pass the keytab the service reads with --server-keytab")
		}
		server = entriesOf(kt.Entries, t.Service)
		if len(server) == 0 && !strings.EqualFold(t.Service, t.Principal) {
			// Active Directory: tickets for an SPN are encrypted with its
			// account's key, and a keytab exported for the account names
			// the account only. MIT's default acceptor tries every key;
			// acceptors that look keys up by the ticket's service name do not.
			if acct := entriesOf(kt.Entries, t.Principal); len(acct) > 0 {
				if r := kdcops.DecryptTicket(tkt, acct); r.Decrypted {
					return runbook.Warnf("ticket kvno %d for %s decrypts with %s's key, but %s has no entry named %s", r.TicketKVNO, t.Service, t.Principal, t.ServerKeytab, t.Service).
						With(runbook.Evidence{"server_keytab": t.ServerKeytab, "service": t.Service, "account": t.Principal, "ticket_kvno": r.TicketKVNO, "decrypted": true}).
						WithHint("MIT's acceptor accepts it; Java, gokrb5 and other acceptors that look the key up by service name refuse it: add entries named %s with the account's keys (msktutil --update, adcli update, or ktutil)", t.Service)
				}
			}
		}
	}
	r := kdcops.DecryptTicket(tkt, server)
	ev := runbook.Evidence{
		"server_keytab": t.ServerKeytab, "service": t.Service, "ticket_kvno": r.TicketKVNO,
		"server_kvnos": r.ServerKVNOs, "enctype": kdcops.EnctypeName(r.Enctype), "decrypted": r.Decrypted,
	}
	switch {
	case len(server) == 0:
		return runbook.Failf("server keytab %s holds no key for %s", t.ServerKeytab, t.Service).With(ev).
			WithHint("the service cannot accept any ticket: install the keytab holding %s", t.Service)
	case !r.Held:
		return runbook.Failf("tickets are issued under kvno %d but the server keytab holds kvno %s", r.TicketKVNO, joinUints(r.ServerKVNOs)).With(ev).
			WithHint("the service will reject every new ticket (KRB_AP_ERR_BADKEYVER): install the current keytab on the server; during a rotation publish old and new kvno (phase 1)")
	case !r.Decrypted:
		return runbook.Failf("the server keytab's kvno %d key (%s) does not decrypt the ticket", r.TicketKVNO, kdcops.EnctypeName(r.Enctype)).With(ev).
			WithHint("same kvno, different key (KRB_AP_ERR_BAD_INTEGRITY): the keytab was exported from another KDC or realm, or re-randomized; fetch the current keytab")
	}
	ev["ticket_client"] = r.Client
	msg := fmt.Sprintf("ticket kvno %d decrypts with %s (server keytab holds kvno %s)", r.TicketKVNO, t.ServerKeytab, joinUints(r.ServerKVNOs))
	return runbook.Passf("%s", msg).With(ev)
}

// secretStore compares the store's current keytab with the local one by
// key fingerprints: a host that installed an old copy, or a store that was
// never updated after a rotation, shows up here before the next restart.
func (v *Check) secretStore(ctx context.Context, tg *target) runbook.Result {
	t, local := tg.Target, tg.entries
	ev := runbook.Evidence{"secret": v.Secret}
	ver, err := v.Store.Get(ctx, v.Secret, secretstore.StageCurrent)
	if err != nil {
		hint := secretstore.HintOf(err)
		if hint == "" {
			hint = "check --secret-store and --secret, and that this identity may read the secret"
		}
		if errors.Is(err, secretstore.ErrNotFound) || errors.Is(err, secretstore.ErrPermission) {
			return runbook.Failf("%s", err).With(ev).WithHint("%s", hint)
		}
		return runbook.Errorf("%s", err).With(ev).WithHint("%s", hint)
	}
	ev["version"] = ver.ID
	stored, err := kdcops.ParseKeytab(ver.Data, kdcops.KeytabOptions{})
	if err != nil {
		return runbook.Failf("secret %s version %s is not a keytab: %s", v.Secret, ver.ID, err).With(ev).
			WithHint("the store holds something else under this name: check --secret")
	}
	remote := entriesOf(stored.Entries, t.Principal)
	onlyLocal, onlyStore := diffKeys(local, remote)
	lk, _ := kvnosAndEnctypes(local)
	rk, _ := kvnosAndEnctypes(remote)
	ev["local_kvnos"], ev["store_kvnos"] = lk, rk
	if len(onlyLocal)+len(onlyStore) == 0 {
		return runbook.Passf("secret %s (version %s) holds the same %d key(s), kvno %s", v.Secret, ver.ID, len(local), joinUints(lk)).With(ev)
	}
	ev["only_local"], ev["only_store"] = onlyLocal, onlyStore
	return runbook.Failf("secret %s differs from %s: %d key(s) only here, %d only in the store", v.Secret, t.Keytab, len(onlyLocal), len(onlyStore)).With(ev).
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

func (v *Check) spnego(ctx context.Context, tg *target) runbook.Result {
	t, sess, entries := tg.Target, tg.session, tg.entries
	ev := runbook.Evidence{"url": v.SPNEGOURL}
	// Only the kvno the KDC accepted: gokrb5 picks keys by timestamp.
	code, err := v.SPNEGO(ctx, t, kdcops.AtKVNO(entries, sess.KVNO))
	if err != nil {
		return runbook.Errorf("GET %s: %s", v.SPNEGOURL, err).With(ev).
			WithHint("check the URL and that the service's SPN is HTTP/<host> at the KDC")
	}
	ev["status"] = code
	if code < 200 || code > 299 {
		return runbook.Failf("GET %s answered HTTP %d", v.SPNEGOURL, code).With(ev).
			WithHint("401: the service rejected the ticket (its keytab or SPN); 403: authenticated but not authorized")
	}
	return runbook.Passf("GET %s answered HTTP %d", v.SPNEGOURL, code).With(ev)
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

// Fleet runs the preflight once, then every target's runbook, up to
// concurrency at a time, and merges them into one report: the preflight's
// steps first, then one group of steps per target (grouped by principal
// when there are several). When the preflight fails (no KDC, a skewed
// clock) every exchange would fail the same way, so each target's steps
// are skipped with that reason instead of asking the KDC. onDone, when
// set, is called as each target finishes (progress on a terminal).
func Fleet(ctx context.Context, v *Check, targets []Target, concurrency int, opts runbook.Options, onDone func(done, total int)) *runbook.Report {
	pre := runbook.Run(ctx, v.Preflight(), opts)
	preOK := pre.Status == "pass" || pre.Status == "warn"
	books := make([]runbook.Runbook, len(targets))
	for i, t := range targets {
		group := ""
		if len(targets) > 1 {
			group = t.Principal
		}
		books[i] = v.Target(t, group)
		if !preOK {
			books[i] = skipAll(books[i], "skipped: preflight "+pre.Status+" (see config and clock)")
		}
	}
	rep := runbook.RunGroups(ctx, "verify", books, concurrency, opts, onDone)
	return runbook.Merge("verify", opts, pre, rep)
}

// skipAll replaces every step of rb with a skip carrying reason.
func skipAll(rb runbook.Runbook, reason string) runbook.Runbook {
	out := rb
	out.Steps = make([]runbook.Step, len(rb.Steps))
	for i, s := range rb.Steps {
		s.Needs = nil
		s.Run = func(context.Context, *runbook.State) runbook.Result {
			return runbook.Result{Status: runbook.Skip, Message: reason}
		}
		out.Steps[i] = s
	}
	return out
}

// DirTargets lists every keytab under dir (recognised by its header, not
// its name) with one target per principal, in path order. Files that are
// not keytabs, or are corrupt, are passed over: klist-lint --dir reports
// those.
func DirTargets(dir string) ([]Target, error) {
	var out []Target
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		kt, err := kdcops.ReadKeytabFile(path, kdcops.KeytabOptions{})
		if err != nil {
			return nil
		}
		ps := kt.Principals()
		sort.Strings(ps)
		for _, p := range ps {
			out = append(out, Target{Principal: p, Keytab: path})
		}
		return nil
	})
	if err != nil {
		return nil, fault.New(fault.Usage, fmt.Errorf("%s: %s", dir, describeFileError(err)), "pass a readable directory")
	}
	if len(out) == 0 {
		return nil, fault.New(fault.Usage, fmt.Errorf("%s: no keytabs found", dir), "keytabs are recognised by their 0x05 0x02 header")
	}
	return out, nil
}

func describeFileError(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
