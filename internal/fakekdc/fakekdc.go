// Package fakekdc is an in-memory KDC for unit tests of code that changes
// keys (package rotate). It speaks no wire protocol: it serves the
// operations rotate asks of a KDC as Go methods, with the behaviour of MIT
// krb5 that key rotation depends on:
//
//   - keys are derived from a password and salt with gokrb5's string-to-key,
//     so a keytab kdcops.DeriveKeytab makes from the same password matches;
//   - a login succeeds only with a key of the principal's current kvno;
//   - a key change bumps the kvno by one and, like MIT kpasswd and kadmin
//     cpw, gives the principal the realm's enctypes with the normal salt,
//     whatever enctypes and salt it had before;
//   - service tickets are real tickets encrypted in the service's current
//     key, so kdcops.DecryptTicket works on them.
//
// Fault hooks make the next key change fail, apply the next key change but
// lose its reply, or make the whole KDC unreachable.
//
// Passwords and keys stay inside the KDC: no method returns or logs them.
package fakekdc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/asn1tools"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/asnAppTag"
	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/kdcops"
)

// DefaultEnctypes are the realm's enctypes when New is given none: MIT's
// default supported_enctypes, strongest first.
var DefaultEnctypes = []int32{18, 17}

// ticketLifetime is what every ticket is issued for; tests that care about
// expiry move Now instead.
const ticketLifetime = 10 * time.Hour

// KDC is one realm's KDC, kpasswd server and kadmind. Safe for concurrent
// use.
type KDC struct {
	realm    string
	enctypes []int32
	// Now is the KDC's clock; time.Now when nil. Set it before use.
	Now func() time.Time

	mu          sync.Mutex
	principals  map[string]*principal
	tgtKey      types.EncryptionKey
	unreachable bool
	clockOffset time.Duration
	failNext    error
	loseNext    bool
	// downAfterLoss: the KDC becomes unreachable right after the reply
	// it loses.
	downAfterLoss bool
	changeReqs    map[string]int
}

type principal struct {
	components []string
	kvno       uint32
	keys       []key // in the order the KDC prefers them for tickets
	admin      bool
}

type key struct {
	enctype int32
	salt    string
	value   []byte
}

// Principal describes a principal for [KDC.Put].
type Principal struct {
	Name     string // name or name@REALM
	Password string
	KVNO     uint32 // 1 when zero, as after kadmin addprinc
	// Salt is the salt of every key; empty for the normal salt (realm
	// followed by the name components). A non-normal salt is what a
	// renamed or migrated principal has until its next password change.
	Salt string
	// Enctypes are the principal's key types; the realm's when nil.
	Enctypes []int32
	// Admin lets the principal set other principals' passwords (MIT: the
	// "c" privilege in kadm5.acl).
	Admin bool
}

// New returns a KDC for realm whose key changes give enctypes (the realm's
// supported_enctypes; DefaultEnctypes when none are given).
func New(realm string, enctypes ...int32) *KDC {
	if len(enctypes) == 0 {
		enctypes = DefaultEnctypes
	}
	et, err := crypto.GetEtype(18)
	if err != nil {
		panic(err) // aes256 is built into gokrb5
	}
	tgtKey, err := types.GenerateEncryptionKey(et)
	if err != nil {
		panic(err)
	}
	return &KDC{realm: realm, enctypes: slices.Clone(enctypes), principals: map[string]*principal{},
		tgtKey: tgtKey, changeReqs: map[string]int{}}
}

// Realm is the KDC's realm.
func (k *KDC) Realm() string { return k.realm }

func (k *KDC) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

// fullName returns name@REALM and the name's components.
func (k *KDC) fullName(name string) (string, []string) {
	n, realm := kdcops.SplitPrincipal(name)
	if realm == "" {
		realm = k.realm
	}
	return n + "@" + realm, strings.Split(n, "/")
}

func (k *KDC) normalSalt(components []string) string {
	return k.realm + strings.Join(components, "")
}

// Put creates or replaces a principal, as kadmin addprinc, or restoring
// the KDC database from a backup, would.
func (k *KDC) Put(p Principal) error {
	full, comps := k.fullName(p.Name)
	if _, realm := kdcops.SplitPrincipal(full); realm != k.realm {
		return fmt.Errorf("fakekdc: %s is not in realm %s", full, k.realm)
	}
	kvno := p.KVNO
	if kvno == 0 {
		kvno = 1
	}
	salt := p.Salt
	if salt == "" {
		salt = k.normalSalt(comps)
	}
	ets := p.Enctypes
	if ets == nil {
		ets = k.enctypes
	}
	keys, err := deriveKeys(p.Password, salt, ets)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.principals[full] = &principal{components: comps, kvno: kvno, keys: keys, admin: p.Admin}
	return nil
}

func deriveKeys(password, salt string, enctypes []int32) ([]key, error) {
	var keys []key
	for _, id := range enctypes {
		et, err := crypto.GetEtype(id)
		if err != nil {
			return nil, fmt.Errorf("fakekdc: enctype %d: %w", id, err)
		}
		v, err := et.StringToKey(password, salt, et.GetDefaultStringToKeyParams())
		if err != nil {
			// gokrb5's message is not passed on: it could echo its input.
			return nil, fmt.Errorf("fakekdc: deriving a %s key failed", kdcops.EnctypeName(id))
		}
		keys = append(keys, key{enctype: id, salt: salt, value: v})
	}
	return keys, nil
}

// SetPassword changes a principal's key outside any protocol, as
// kadmin.local cpw would: the next kvno, the realm's enctypes, the normal
// salt. It is not counted by [KDC.ChangeRequests]. Tests use it for a
// change that reached the KDC before a crash, or one made by someone else.
func (k *KDC) SetPassword(name, password string) error {
	full, _ := k.fullName(name)
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.principals[full]
	if !ok {
		return fmt.Errorf("fakekdc: no principal %s", full)
	}
	return k.setPassword(p, password)
}

func (k *KDC) setPassword(p *principal, password string) error {
	keys, err := deriveKeys(password, k.normalSalt(p.components), k.enctypes)
	if err != nil {
		return err
	}
	p.kvno++
	p.keys = keys
	return nil
}

// KVNO is the principal's current kvno; 0 when it does not exist.
func (k *KDC) KVNO(name string) uint32 {
	full, _ := k.fullName(name)
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.principals[full]; ok {
		return p.kvno
	}
	return 0
}

// KDCKeys is what the KDC's ETYPE-INFO2 says about the principal: each
// enctype it holds, with its salt.
func (k *KDC) KDCKeys(name string) []kdcops.KDCKey {
	full, _ := k.fullName(name)
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.principals[full]
	if !ok {
		return nil
	}
	return k.kdcKeys(p)
}

// Keys is rotate.KDC's Keys: the principal's enctypes and salts, as a
// KDC's ETYPE-INFO2 reports them.
func (k *KDC) Keys(ctx context.Context, realm string, components []string) ([]kdcops.KDCKey, error) {
	if err := k.enter(ctx, "keys"); err != nil {
		return nil, err
	}
	name := strings.Join(components, "/") + "@" + realm
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.principals[name]
	if !ok {
		return nil, kdcError(errorcode.KDC_ERR_C_PRINCIPAL_UNKNOWN)
	}
	return k.kdcKeys(p), nil
}

func (k *KDC) kdcKeys(p *principal) []kdcops.KDCKey {
	var out []kdcops.KDCKey
	for _, ky := range p.keys {
		out = append(out, kdcops.KDCKey{Enctype: ky.enctype, Salt: ky.salt, DefaultSalt: ky.salt == k.normalSalt(p.components)})
	}
	return out
}

// ChangeRequests counts the key-change requests for name that reached the
// KDC (kpasswd or kadmin), whether they were applied, refused (a stale
// key, no privilege, a fault) or had their reply lost. A rotation must
// send at most one.
func (k *KDC) ChangeRequests(name string) int {
	full, _ := k.fullName(name)
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changeReqs[full]
}

// FailNextChange makes the next key-change request fail with err; nothing
// changes at the KDC.
func (k *KDC) FailNextChange(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.failNext = err
}

// LoseNextReply makes the next key-change request take effect and then
// report an error, as when the reply is lost on the way back.
func (k *KDC) LoseNextReply() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.loseNext = true
}

// SetUnreachable makes every request fail as if no KDC answered, or
// restores service.
func (k *KDC) SetUnreachable(down bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.unreachable = down
}

// SetClockOffset sets how far the KDC's clock is ahead of Now (negative:
// behind), as its replies report it.
func (k *KDC) SetClockOffset(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.clockOffset = d
}

// enter starts a request: the error a caller sees when the KDC cannot be
// reached or the caller gave up. k.mu must be held.
func (k *KDC) enter(ctx context.Context, what string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if k.unreachable {
		return &kdcops.UnreachableError{KDC: "fakekdc " + what, Transport: kdcops.TCP, Err: syscall.ECONNREFUSED}
	}
	return nil
}

func kdcError(code int32) *kdcops.KDCError {
	return &kdcops.KDCError{Code: code, Name: kdcops.ErrorName(code)}
}

// ProbeClock answers a clock probe of one KDC: a ClockSample with the
// KDC's offset, as a PREAUTH_REQUIRED reply would carry it. It fits
// clock.Check's ProbeKDC.
func (k *KDC) ProbeClock(ctx context.Context, at kdcops.KDC) (*kdcops.ClockSample, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.enter(ctx, at.Entry); err != nil {
		return nil, err
	}
	return &kdcops.ClockSample{KDC: at.Entry, Transport: kdcops.UDP, Offset: k.clockOffset, Probes: 1,
		KDCTime: k.now().Add(k.clockOffset), ErrorCode: errorcode.KDC_ERR_PREAUTH_REQUIRED,
		ErrorName: kdcops.ErrorName(errorcode.KDC_ERR_PREAUTH_REQUIRED)}, nil
}

// keytabKeys returns the key bytes of entries (read with KeepKeys) by kvno
// and enctype. kdcops keeps keys unexported, so they are read back the way
// gokrb5 would load the keytab.
func keytabKeys(entries []kdcops.KeytabEntry) (map[uint32]map[int32][]byte, error) {
	out := map[uint32]map[int32][]byte{}
	for _, kvno := range kdcops.KVNOs(entries) {
		kt, err := kdcops.GokrbKeytab(kdcops.AtKVNO(entries, kvno))
		if err != nil {
			return nil, err
		}
		out[kvno] = map[int32][]byte{}
		for _, e := range kt.Entries {
			out[kvno][e.Key.KeyType] = e.Key.KeyValue
		}
	}
	return out, nil
}

// loginEnctype picks the key a client tries at one kvno, as kdcops does:
// AES first, then any enctype gokrb5 can encrypt with.
func loginEnctype(keys map[int32][]byte) (int32, bool) {
	var best int32
	found := false
	for _, id := range slices.Sorted(maps.Keys(keys)) {
		if _, err := crypto.GetEtype(id); err != nil {
			continue
		}
		if !found || kdcops.AESEnctype(id) && !kdcops.AESEnctype(best) {
			best, found = id, true
		}
	}
	return best, found
}

// accepts reports whether the KDC takes the key of enctype et at kvno as
// the principal's: a pre-authentication it can decrypt, at the current
// kvno.
func (p *principal) accepts(kvno uint32, et int32, value []byte) bool {
	if kvno != p.kvno {
		return false
	}
	for _, ky := range p.keys {
		if ky.enctype == et {
			return bytes.Equal(ky.value, value)
		}
	}
	return false
}

func (p *principal) has(et int32) bool {
	return slices.ContainsFunc(p.keys, func(ky key) bool { return ky.enctype == et })
}

// lookup finds the principal of keytab entries. k.mu must be held.
func (k *KDC) lookup(e kdcops.KeytabEntry) (*principal, bool) {
	p, ok := k.principals[strings.Join(e.Components, "/")+"@"+e.Realm]
	return p, ok
}

// Check answers what kdcops.OnlineClient.Check asks: the principal's
// enctypes and salts, its kvno (learned by logging in with the keytab,
// newest kvno first) and which keytab keys at that kvno work.
func (k *KDC) Check(ctx context.Context, entries []kdcops.KeytabEntry) (*kdcops.OnlineResult, error) {
	if len(entries) == 0 {
		return nil, errors.New("no keytab entries to check")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	first := entries[0]
	res := &kdcops.OnlineResult{Principal: first.Principal, Realm: first.Realm}
	if err := k.enter(ctx, first.Realm); err != nil {
		return res, err
	}
	for _, e := range entries {
		res.KeytabKVNO = max(res.KeytabKVNO, e.KVNO)
	}
	p, ok := k.lookup(first)
	if !ok {
		res.Unknown = true
		return res, nil
	}
	res.KDCKeys = k.kdcKeys(p)
	for _, e := range entries {
		if !p.has(e.Enctype) && !slices.Contains(res.Unsupported, e.Enctype) {
			res.Unsupported = append(res.Unsupported, e.Enctype)
		}
	}
	keys, err := keytabKeys(entries)
	if err != nil {
		return res, err
	}
	kvnos := kdcops.KVNOs(entries)
	var rejected []string
	for i := len(kvnos) - 1; i >= 0 && !res.KVNOKnown; i-- {
		held := map[int32][]byte{}
		for et, v := range keys[kvnos[i]] {
			if p.has(et) {
				held[et] = v
			}
		}
		et, ok := loginEnctype(held)
		if !ok {
			continue
		}
		kc := check(p, kvnos[i], et, held[et])
		res.Checks = append(res.Checks, kc)
		if !kc.OK {
			rejected = append(rejected, fmt.Sprintf("kvno %d: %s", kc.KVNO, kc.Error))
			continue
		}
		res.KDCKVNO, res.KVNOKnown, res.KVNOSource = p.kvno, true, fmt.Sprintf("keytab kvno %d", kvnos[i])
	}
	if !res.KVNOKnown {
		if len(rejected) > 0 {
			res.KVNONote = "the KDC rejected every kvno tried (" + strings.Join(rejected, "; ") + ")"
		} else {
			res.KVNONote = "no keytab key of an enctype the KDC holds and krbops can use"
		}
		return res, nil
	}
	at := keys[res.KDCKVNO]
	for _, et := range slices.Sorted(maps.Keys(at)) {
		if !p.has(et) || slices.ContainsFunc(res.Checks, func(c kdcops.KeyCheck) bool { return c.KVNO == res.KDCKVNO && c.Enctype == et }) {
			continue
		}
		res.Checks = append(res.Checks, check(p, res.KDCKVNO, et, at[et]))
	}
	return res, nil
}

func check(p *principal, kvno uint32, et int32, value []byte) kdcops.KeyCheck {
	kc := kdcops.KeyCheck{KVNO: kvno, Enctype: et, OK: p.accepts(kvno, et, value)}
	if !kc.OK {
		kc.Error = kdcops.ErrorName(errorcode.KDC_ERR_PREAUTH_FAILED)
	}
	return kc
}

// Login logs in with entries of one principal, newest kvno first, one key
// per kvno (as kdcops.OnlineClient.LoginPerKVNO): a TGT and its session
// for the first kvno the KDC accepts, nil when it accepts none.
func (k *KDC) Login(ctx context.Context, entries []kdcops.KeytabEntry) (*kdcops.Session, error) {
	if len(entries) == 0 {
		return nil, errors.New("no keytab entries for the principal")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	first := entries[0]
	if err := k.enter(ctx, first.Realm); err != nil {
		return nil, err
	}
	p, ok := k.lookup(first)
	if !ok {
		return nil, kdcError(errorcode.KDC_ERR_C_PRINCIPAL_UNKNOWN)
	}
	keys, err := keytabKeys(entries)
	if err != nil {
		return nil, err
	}
	kvnos := kdcops.KVNOs(entries)
	for i := len(kvnos) - 1; i >= 0; i-- {
		et, ok := loginEnctype(keys[kvnos[i]])
		if !ok || !p.accepts(kvnos[i], et, keys[kvnos[i]][et]) {
			continue
		}
		return k.issueTGT(p, first.Realm, kvnos[i], et)
	}
	return nil, nil
}

func (k *KDC) issueTGT(p *principal, realm string, kvno uint32, et int32) (*kdcops.Session, error) {
	cname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: slices.Clone(p.components)}
	sname := types.PrincipalName{NameType: nametype.KRB_NT_SRV_INST, NameString: []string{"krbtgt", realm}}
	now := k.now().Truncate(time.Second)
	tkt, skey, err := k.ticket(cname, sname, k.tgtKey, 1, now)
	if err != nil {
		return nil, err
	}
	return &kdcops.Session{Realm: realm, Client: cname, KVNO: kvno, Enctype: et, TGT: tkt, Key: skey,
		AuthTime: now, StartTime: now, EndTime: now.Add(ticketLifetime)}, nil
}

// ticket builds a ticket for sname encrypted in skey at kvno, with a new
// session key (messages.NewTicket takes a keytab, not a key).
func (k *KDC) ticket(cname, sname types.PrincipalName, skey types.EncryptionKey, kvno int, now time.Time) (messages.Ticket, types.EncryptionKey, error) {
	et, err := crypto.GetEtype(skey.KeyType)
	if err != nil {
		return messages.Ticket{}, types.EncryptionKey{}, err
	}
	session, err := types.GenerateEncryptionKey(et)
	if err != nil {
		return messages.Ticket{}, types.EncryptionKey{}, err
	}
	fl := types.NewKrbFlags()
	types.SetFlag(&fl, flags.Initial)
	part := messages.EncTicketPart{Flags: fl, Key: session, CRealm: k.realm, CName: cname,
		Transited: messages.TransitedEncoding{}, AuthTime: now, StartTime: now, EndTime: now.Add(ticketLifetime)}
	b, err := asn1.Marshal(part)
	if err != nil {
		return messages.Ticket{}, types.EncryptionKey{}, fmt.Errorf("fakekdc: marshal the ticket: %w", err)
	}
	b = asn1tools.AddASNAppTag(b, asnAppTag.EncTicketPart)
	enc, err := crypto.GetEncryptedData(b, skey, keyusage.KDC_REP_TICKET, kvno)
	if err != nil {
		return messages.Ticket{}, types.EncryptionKey{}, errors.New("fakekdc: encrypting the ticket failed")
	}
	return messages.Ticket{TktVNO: 5, Realm: k.realm, SName: sname, EncPart: enc}, session, nil
}

// ServiceTicket issues a ticket for sname to the holder of a session from
// Login, encrypted in sname's current key at its current kvno. The TGT
// must decrypt with the KDC's krbtgt key and carry the session's key, as
// a TGS would check the authenticator.
func (k *KDC) ServiceTicket(ctx context.Context, s *kdcops.Session, sname types.PrincipalName) (messages.Ticket, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.enter(ctx, s.Realm); err != nil {
		return messages.Ticket{}, err
	}
	plain, err := crypto.DecryptEncPart(s.TGT.EncPart, k.tgtKey, keyusage.KDC_REP_TICKET)
	if err != nil {
		return messages.Ticket{}, kdcError(errorcode.KRB_AP_ERR_BAD_INTEGRITY)
	}
	var tgt messages.EncTicketPart
	if err := tgt.Unmarshal(plain); err != nil {
		return messages.Ticket{}, kdcError(errorcode.KRB_AP_ERR_BAD_INTEGRITY)
	}
	if !bytes.Equal(tgt.Key.KeyValue, s.Key.KeyValue) {
		return messages.Ticket{}, kdcError(errorcode.KRB_AP_ERR_BAD_INTEGRITY)
	}
	now := k.now().Truncate(time.Second)
	if !now.Before(tgt.EndTime) {
		return messages.Ticket{}, kdcError(errorcode.KRB_AP_ERR_TKT_EXPIRED)
	}
	svc, ok := k.principals[strings.Join(sname.NameString, "/")+"@"+s.Realm]
	if !ok || len(svc.keys) == 0 {
		return messages.Ticket{}, kdcError(errorcode.KDC_ERR_S_PRINCIPAL_UNKNOWN)
	}
	// The first key is the strongest the realm prefers: MIT issues the
	// ticket in it.
	ky := svc.keys[0]
	tkt, _, err := k.ticket(tgt.CName, sname, types.EncryptionKey{KeyType: ky.enctype, KeyValue: ky.value}, int(svc.kvno), now)
	return tkt, err
}

// ChangeServer answers a connection to the kpasswd server or kadmind.
func (k *KDC) ChangeServer(ctx context.Context, backend string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.enter(ctx, backend); err != nil {
		return "", err
	}
	return "fakekdc " + backend, nil
}

// Kpasswd is an RFC 3244 set-password of target (in realm) as the
// principal whose keys are auth (one kvno): the target itself, or an
// administrator. As at MIT, auth must log in (a stale key cannot change
// anything) and a principal other than the target needs Admin.
func (k *KDC) Kpasswd(ctx context.Context, auth []kdcops.KeytabEntry, realm string, target []string, password string) error {
	if len(auth) == 0 {
		return errors.New("no keys to authenticate to kpasswd with")
	}
	if len(kdcops.KVNOs(auth)) != 1 {
		return errors.New("kpasswd needs the keys of exactly one kvno to log in with")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.enter(ctx, realm); err != nil {
		return err
	}
	full := strings.Join(target, "/") + "@" + realm
	k.changeReqs[full]++
	a := auth[0]
	caller, ok := k.lookup(a)
	if !ok {
		return fmt.Errorf("initial ticket for kadmin/changepw as %s: %s", a.Principal, kdcops.ErrorName(errorcode.KDC_ERR_C_PRINCIPAL_UNKNOWN))
	}
	keys, err := keytabKeys(auth)
	if err != nil {
		return err
	}
	if et, ok := loginEnctype(keys[a.KVNO]); !ok || !caller.accepts(a.KVNO, et, keys[a.KVNO][et]) {
		return fmt.Errorf("initial ticket for kadmin/changepw as %s: %s", a.Principal, kdcops.ErrorName(errorcode.KDC_ERR_PREAUTH_FAILED))
	}
	if full != a.Principal && !caller.admin {
		return &kdcops.KpasswdError{Code: 5, Name: "KRB5_KPASSWD_ACCESSDENIED", Result: "Not authorized"}
	}
	return k.change(full, password)
}

// KadminCPW is kadmin cpw of principal as admin, who authenticates with
// the keytab file adminKeytab (kadmin -k -t).
func (k *KDC) KadminCPW(ctx context.Context, admin, adminKeytab, principalName, password string) error {
	kt, err := kdcops.ReadKeytabFile(adminKeytab, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		return fmt.Errorf("kadmin: %s", err)
	}
	ents := kt.EntriesFor(admin)
	if len(ents) == 0 {
		return fmt.Errorf("kadmin: keytab %s has no key of %s", adminKeytab, admin)
	}
	kvnos := kdcops.KVNOs(ents)
	newest := kvnos[len(kvnos)-1]
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.enter(ctx, "kadmind"); err != nil {
		return err
	}
	full, _ := k.fullName(principalName)
	k.changeReqs[full]++
	caller, ok := k.lookup(ents[0])
	keys, err := keytabKeys(kdcops.AtKVNO(ents, newest))
	if err != nil {
		return err
	}
	if et, found := loginEnctype(keys[newest]); !ok || !found || !caller.accepts(newest, et, keys[newest][et]) {
		return fmt.Errorf("kadmin: cannot authenticate as %s: %s", admin, kdcops.ErrorName(errorcode.KDC_ERR_PREAUTH_FAILED))
	}
	if !caller.admin {
		return fmt.Errorf("kadmin: change_password %s: Operation requires ``change-password'' privilege", full)
	}
	return k.change(full, password)
}

// change applies a key-change request that reached the KDC, with the
// fault hooks. k.mu must be held.
func (k *KDC) change(full, password string) error {
	if err := k.failNext; err != nil {
		k.failNext = nil
		return err
	}
	p, ok := k.principals[full]
	if !ok {
		return fmt.Errorf("principal %s does not exist", full)
	}
	if err := k.setPassword(p, password); err != nil {
		return err
	}
	if k.loseNext {
		k.loseNext = false
		k.unreachable = k.downAfterLoss
		k.downAfterLoss = false
		return &kdcops.UnreachableError{KDC: "fakekdc kpasswd", Transport: kdcops.TCP, Err: syscall.ETIMEDOUT}
	}
	return nil
}

// LoseNextReplyAndGoDown is LoseNextReply followed by the KDC going away
// (a restart) until SetUnreachable(false): the rotation can then not find
// out in the same run whether its change was applied.
func (k *KDC) LoseNextReplyAndGoDown() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.loseNext, k.downAfterLoss = true, true
}
