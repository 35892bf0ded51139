package kdcops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/iana/patype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// tagTGSRep is the first byte of a TGS-REP ([APPLICATION 13]).
const tagTGSRep = 0x6d

// The online check (--online) asks the KDC three things about each
// principal of a keytab, with its own small exchanges so every KDC error
// code is exact (gokrb5 keeps them only as text; see DESIGN.md):
//
//  1. Which keys does the KDC hold? One AS-REQ without pre-authentication
//     per enctype: the KDC answers PREAUTH_REQUIRED with ETYPE-INFO2 (the
//     enctype and its salt) when it has a key of that enctype, and
//     ETYPE_NOSUPP when not. MIT lists only one enctype per reply, hence
//     one request per enctype.
//  2. What is its current kvno? A service ticket for the principal itself
//     carries it in the clear (Ticket.EncPart.KVNO). Asking needs a TGT:
//     preferably the operator's own (a ccache), which costs the principal
//     nothing; otherwise one obtained with the keytab, trying its kvnos
//     newest first, one kvno at a time (gokrb5 would pick a key by
//     timestamp, DESIGN.md).
//  3. Do the keytab's keys at that kvno work? One AS-REQ with encrypted
//     timestamp per enctype.
//
// Every request appears in the KDC log as an AS_REQ or TGS_REQ for the
// principal; a key the KDC rejects counts as a failed pre-authentication
// (and so towards a lockout policy's maxfailure).

// OnlineClient talks to the KDCs of a keytab's realms. It is not safe for
// concurrent use: one per goroutine.
type OnlineClient struct {
	Config  *Config
	Timeout time.Duration // per network call
	Log     *slog.Logger
	// CCache, when set, is a cache whose primary TGT is used to ask for
	// service tickets (step 2) in its own realm.
	CCache *CCache
	// Limiter, when set, paces every request this client sends.
	Limiter Limiter
	// Exchange replaces the network in tests: it sends one request to the
	// realm's KDCs and returns the reply.
	Exchange func(ctx context.Context, realm string, req []byte) ([]byte, error)
}

// KDCKey is one enctype the KDC holds for a principal.
type KDCKey struct {
	Enctype     int32
	Salt        string
	DefaultSalt bool // the salt is the realm followed by the name components
}

// KeyCheck is one attempt to authenticate with one keytab key.
type KeyCheck struct {
	KVNO    uint32
	Enctype int32
	OK      bool
	Error   string // the KDC's error name when not OK, e.g. KDC_ERR_PREAUTH_FAILED
	// ReplyKVNO is the kvno the AS-REP's encrypted part names: the KDC's
	// kvno of the key it answered with; 0 when the KDC leaves it out.
	ReplyKVNO uint32
}

// OnlineResult is what the KDC said about one principal.
type OnlineResult struct {
	Principal  string
	Realm      string
	KeytabKVNO uint32 // the keytab's newest kvno for the principal

	Unknown bool   // KDC_ERR_C_PRINCIPAL_UNKNOWN
	Refused string // the KDC refuses the principal tickets (revoked, expired, locked): its error name

	KDCKeys     []KDCKey // in probe order
	Unsupported []int32  // enctypes the KDC has no (permitted) key for

	KDCKVNO    uint32
	KVNOKnown  bool
	KVNOSource string // "ccache <principal>" or "keytab kvno N"
	KVNONote   string // why the kvno is unknown

	Checks []KeyCheck // every authentication attempt, in order
}

// KDCHas reports whether the KDC holds a key of enctype e.
func (r *OnlineResult) KDCHas(e int32) (KDCKey, bool) {
	for _, k := range r.KDCKeys {
		if k.Enctype == e {
			return k, true
		}
	}
	return KDCKey{}, false
}

// KDCError is a KRB-ERROR that ends an exchange.
type KDCError struct {
	Code int32
	Name string
	Text string
}

func (e *KDCError) Error() string {
	if e.Text != "" {
		return fmt.Sprintf("%s (%s)", e.Name, e.Text)
	}
	return e.Name
}

func (c *OnlineClient) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

// Check asks the KDC about one principal of a keytab. entries are the
// keytab's entries for that principal, read with KeepKeys. The error is
// for what stops the check (KDC unreachable, bad reply, no KDC for the
// realm); everything the KDC answers is in the result.
func (c *OnlineClient) Check(ctx context.Context, entries []KeytabEntry) (*OnlineResult, error) {
	if len(entries) == 0 {
		return nil, errors.New("no keytab entries to check")
	}
	first := entries[0]
	res := &OnlineResult{Principal: first.Principal, Realm: first.Realm}
	kvnos := map[uint32]bool{}
	var etypes []int32
	for _, e := range entries {
		kvnos[e.KVNO] = true
		res.KeytabKVNO = max(res.KeytabKVNO, e.KVNO)
		if !containsEnctype(etypes, e.Enctype) {
			etypes = append(etypes, e.Enctype)
		}
	}
	for _, e := range probeEnctypes {
		if !containsEnctype(etypes, e) {
			etypes = append(etypes, e)
		}
	}
	cname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: first.Components}

	// 1. The KDC's keys.
	keys, missing, err := c.probeKeys(ctx, first.Realm, cname, etypes)
	if err != nil {
		var ke *KDCError
		if errors.As(err, &ke) {
			switch ke.Code {
			case errorcode.KDC_ERR_C_PRINCIPAL_UNKNOWN:
				res.Unknown = true
				return res, nil
			case errorcode.KDC_ERR_CLIENT_REVOKED, errorcode.KDC_ERR_KEY_EXPIRED, errorcode.KDC_ERR_POLICY:
				res.Refused = ke.Name
				return res, nil
			}
		}
		return res, err
	}
	res.KDCKeys, res.Unsupported = keys, missing

	// 2. The KDC's kvno: with the operator's TGT, else with the keytab's.
	if tgt, skey, client, ok := c.ccacheTGT(first.Realm); ok {
		kvno, err := c.serviceKVNO(ctx, first.Realm, client, tgt, skey, cname)
		switch {
		case err == nil:
			res.KDCKVNO, res.KVNOKnown, res.KVNOSource = kvno, true, "ccache "+c.CCache.Principal
		case isKDCError(err):
			res.KVNONote = "ticket request with the TGT of " + c.CCache.Principal + " failed: " + err.Error()
		default:
			return res, err
		}
	}
	if !res.KVNOKnown {
		if err := c.kvnoFromKeytab(ctx, res, cname, entries, sortedKVNOs(kvnos)); err != nil {
			return res, err
		}
	}

	// 3. The keys at the KDC's kvno.
	if res.KVNOKnown {
		for _, e := range entries {
			if e.KVNO != res.KDCKVNO || checked(res, e) {
				continue
			}
			if _, has := res.KDCHas(e.Enctype); !has {
				continue // ON005 reports it; asking would only log a failure
			}
			if _, err := crypto.GetEtype(e.Enctype); err != nil {
				continue // gokrb5 cannot encrypt with it (single DES)
			}
			kc, _, _, err := c.login(ctx, first.Realm, cname, e)
			if err != nil {
				return res, err
			}
			res.Checks = append(res.Checks, kc)
		}
	}
	return res, nil
}

func checked(res *OnlineResult, e KeytabEntry) bool {
	for _, kc := range res.Checks {
		if kc.KVNO == e.KVNO && kc.Enctype == e.Enctype {
			return true
		}
	}
	return false
}

func isKDCError(err error) bool {
	var ke *KDCError
	return errors.As(err, &ke)
}

func kdcCode(err error) int32 {
	var ke *KDCError
	if errors.As(err, &ke) {
		return ke.Code
	}
	return 0
}

// IsNoService reports whether err is the KDC's refusal to issue a ticket
// to a principal that is no service: unknown as a server (an Active
// Directory account without an SPN) or user-to-user only.
func IsNoService(err error) bool {
	return IsKDCCode(err, errorcode.KDC_ERR_S_PRINCIPAL_UNKNOWN) || IsKDCCode(err, errorcode.KDC_ERR_MUST_USE_USER2USER)
}

// kvnoFromKeytab logs in with the keytab, newest kvno first, and asks for
// a ticket to the principal itself with the TGT that worked.
func (c *OnlineClient) kvnoFromKeytab(ctx context.Context, res *OnlineResult, cname types.PrincipalName, entries []KeytabEntry, kvnos []uint32) error {
	var rejected []string
	for i := len(kvnos) - 1; i >= 0; i-- {
		e, ok := loginEntry(res, entries, kvnos[i])
		if !ok {
			continue
		}
		kc, tgt, skey, err := c.login(ctx, res.Realm, cname, e)
		if err != nil {
			return err
		}
		res.Checks = append(res.Checks, kc)
		if !kc.OK {
			rejected = append(rejected, fmt.Sprintf("kvno %d: %s", kc.KVNO, kc.Error))
			continue
		}
		kvno, err := c.serviceKVNO(ctx, res.Realm, cname, tgt, skey, cname)
		switch {
		case err == nil:
			res.KDCKVNO, res.KVNOKnown, res.KVNOSource = kvno, true, fmt.Sprintf("keytab kvno %d", kc.KVNO)
		case IsNoService(err):
			// A pure client (an Active Directory user account without an
			// SPN): the KDC issues it no tickets, so the kvno comes from
			// the login itself. Only the KDC's current key decrypts an
			// AS-REP, and the reply names that key's kvno when the KDC
			// fills it in.
			res.KDCKVNO, res.KVNOKnown = kc.KVNO, true
			res.KVNOSource = fmt.Sprintf("login with keytab kvno %d (%s: no service tickets)", kc.KVNO, ErrorName(kdcCode(err)))
			if kc.ReplyKVNO > 0 {
				res.KDCKVNO = kc.ReplyKVNO
				res.KVNOSource = fmt.Sprintf("AS-REP of keytab kvno %d (%s: no service tickets)", kc.KVNO, ErrorName(kdcCode(err)))
			}
		case isKDCError(err):
			res.KVNONote = fmt.Sprintf("the key at kvno %d works, but the ticket request for the principal failed: %s", kc.KVNO, err)
		default:
			return err
		}
		return nil
	}
	if len(rejected) > 0 {
		res.KVNONote = "the KDC rejected every kvno tried (" + strings.Join(rejected, "; ") + ")"
	} else {
		res.KVNONote = "no keytab key of an enctype the KDC holds and krbops can use"
	}
	return nil
}

// loginEntry picks the key to log in with at kvno: an enctype the KDC has,
// AES first, one gokrb5 can encrypt with.
func loginEntry(res *OnlineResult, entries []KeytabEntry, kvno uint32) (KeytabEntry, bool) {
	var cands []KeytabEntry
	for _, e := range entries {
		if e.KVNO != kvno || len(e.key) == 0 {
			continue
		}
		if _, has := res.KDCHas(e.Enctype); !has {
			continue
		}
		if _, err := crypto.GetEtype(e.Enctype); err != nil {
			continue
		}
		cands = append(cands, e)
	}
	if len(cands) == 0 {
		return KeytabEntry{}, false
	}
	sort.SliceStable(cands, func(i, j int) bool {
		return AESEnctype(cands[i].Enctype) && !AESEnctype(cands[j].Enctype)
	})
	return cands[0], true
}

// ccacheTGT returns the operator's TGT when it is for realm and still
// valid.
func (c *OnlineClient) ccacheTGT(realm string) (messages.Ticket, types.EncryptionKey, types.PrincipalName, bool) {
	if c.CCache == nil || c.CCache.Realm != realm {
		return messages.Ticket{}, types.EncryptionKey{}, types.PrincipalName{}, false
	}
	cr, ok := c.CCache.TGT()
	if !ok || len(cr.ticket) == 0 || !time.Now().Before(cr.EndTime) {
		return messages.Ticket{}, types.EncryptionKey{}, types.PrincipalName{}, false
	}
	var tkt messages.Ticket
	if err := tkt.Unmarshal(cr.ticket); err != nil {
		return messages.Ticket{}, types.EncryptionKey{}, types.PrincipalName{}, false
	}
	client := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: c.CCache.Components}
	return tkt, types.EncryptionKey{KeyType: cr.SessionEnctype, KeyValue: cr.sessionKey}, client, true
}

// probeKeys asks which of etypes the KDC holds a key of for cname, with
// AS-REQs without pre-authentication. The AES enctypes go together: each
// request lists every one not yet settled, and the KDC names at least
// one it holds among them (MIT and Heimdal name only the one they would
// use, the first they hold in request order); the named ones are settled
// as held and asked again without them, and a reply naming none settles
// all that are left as not held. A principal with k of n AES enctypes
// costs k+1 requests instead of n. The weak ones (DES, RC4) are asked one
// per request as before: a realm may refuse a request listing only a
// weak enctype while naming that key in a list with others, and a key
// the KDC will not use must not count as held. keys and missing follow
// the order of etypes.
func (c *OnlineClient) probeKeys(ctx context.Context, realm string, cname types.PrincipalName, etypes []int32) (keys []KDCKey, missing []int32, err error) {
	held := map[int32]KDCKey{}
	settle := func(left []int32) error {
		for len(left) > 0 {
			named, err := c.probeEnctypes(ctx, realm, cname, left)
			if err != nil {
				return err
			}
			if len(named) == 0 {
				return nil
			}
			for _, k := range named {
				held[k.Enctype] = k
			}
			left = slices.DeleteFunc(left, func(et int32) bool { _, ok := held[et]; return ok })
		}
		return nil
	}
	var aes []int32
	for _, et := range etypes {
		if AESEnctype(et) {
			aes = append(aes, et)
		}
	}
	if err := settle(aes); err != nil {
		return nil, nil, err
	}
	for _, et := range etypes {
		if !AESEnctype(et) {
			if err := settle([]int32{et}); err != nil {
				return nil, nil, err
			}
		}
	}
	for _, et := range etypes {
		if k, ok := held[et]; ok {
			keys = append(keys, k)
		} else {
			missing = append(missing, et)
		}
	}
	return keys, missing, nil
}

// probeEnctypes sends one AS-REQ without pre-authentication listing
// etypes and returns the keys among them the reply names (none when the
// KDC holds a key of none of them).
func (c *OnlineClient) probeEnctypes(ctx context.Context, realm string, cname types.PrincipalName, etypes []int32) ([]KDCKey, error) {
	req, err := messages.NewASReqForTGT(realm, c.Config.Config, cname)
	if err != nil {
		return nil, fmt.Errorf("build AS-REQ: %w", err)
	}
	req.ReqBody.EType = slices.Clone(etypes)
	raw, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("marshal AS-REQ: %w", err)
	}
	names := make([]string, len(etypes))
	for i, et := range etypes {
		names[i] = EnctypeName(et)
	}
	reply, err := c.send(ctx, realm, raw, "AS-REQ", principalString(cname, realm), "etype probe "+strings.Join(names, ","))
	if err != nil {
		return nil, err
	}
	defSalt := realm + strings.Join(cname.NameString, "")
	key := func(et int32, salt string) KDCKey {
		return KDCKey{Enctype: et, Salt: salt, DefaultSalt: salt == defSalt}
	}
	switch reply[0] {
	case tagASRep:
		// No pre-authentication required: the KDC issued a ticket in one
		// of the enctypes, so it has that key; a salt may ride in the
		// padata.
		var rep messages.ASRep
		if err := rep.Unmarshal(reply); err != nil {
			return nil, &BadReplyError{KDC: realm, Msg: "cannot decode AS-REP"}
		}
		et := rep.EncPart.EType
		if !slices.Contains(etypes, et) {
			return nil, nil
		}
		salt, ok := saltFrom(rep.PAData, et)
		if !ok {
			salt = defSalt
		}
		return []KDCKey{key(et, salt)}, nil
	case tagKRBError:
		var kerr messages.KRBError
		if err := kerr.Unmarshal(reply); err != nil {
			return nil, &BadReplyError{KDC: realm, Msg: "cannot decode KRB-ERROR"}
		}
		switch kerr.ErrorCode {
		case errorcode.KDC_ERR_PREAUTH_REQUIRED:
			var pas types.PADataSequence
			if err := pas.Unmarshal(kerr.EData); err != nil {
				return nil, &BadReplyError{KDC: realm, Msg: "cannot decode the PA-DATA of PREAUTH_REQUIRED"}
			}
			// MIT answers PREAUTH_REQUIRED even when the principal has no
			// key of the enctypes asked for; it then lists none of them
			// in ETYPE-INFO2.
			var out []KDCKey
			for _, et := range etypes {
				salt, ok := saltFrom(pas, et)
				if !ok {
					continue
				}
				if salt == "" {
					salt = defSalt
				}
				out = append(out, key(et, salt))
			}
			return out, nil
		case errorcode.KDC_ERR_ETYPE_NOSUPP:
			return nil, nil
		}
		return nil, kdcError(kerr)
	}
	return nil, &BadReplyError{KDC: realm, Msg: fmt.Sprintf("unexpected reply to AS-REQ (first byte 0x%02x)", reply[0])}
}

// saltFrom reads the salt of enctype et from ETYPE-INFO2 (or the older
// ETYPE-INFO). ok is false when neither lists et; an empty salt means the
// default one.
func saltFrom(pas types.PADataSequence, et int32) (salt string, ok bool) {
	for _, pa := range pas {
		switch pa.PADataType {
		case patype.PA_ETYPE_INFO2:
			info, err := pa.GetETypeInfo2()
			if err != nil {
				continue
			}
			for _, e := range info {
				if e.EType == et {
					return e.Salt, true
				}
			}
		case patype.PA_ETYPE_INFO:
			info, err := pa.GetETypeInfo()
			if err != nil {
				continue
			}
			for _, e := range info {
				if e.EType == et {
					return string(e.Salt), true
				}
			}
		}
	}
	return "", false
}

// login is loginPart for callers that need only the session key.
func (c *OnlineClient) login(ctx context.Context, realm string, cname types.PrincipalName, e KeytabEntry) (KeyCheck, messages.Ticket, types.EncryptionKey, error) {
	kc, tkt, part, err := c.loginPart(ctx, realm, cname, e)
	return kc, tkt, part.Key, err
}

// loginPart authenticates with one keytab key (encrypted timestamp) and
// returns the TGT and the AS-REP's decrypted part (session key, times,
// flags) when the KDC accepts it. A rejected key is a KeyCheck with OK
// false, not an error.
func (c *OnlineClient) loginPart(ctx context.Context, realm string, cname types.PrincipalName, e KeytabEntry) (KeyCheck, messages.Ticket, messages.EncKDCRepPart, error) {
	req, err := messages.NewASReqForTGT(realm, c.Config.Config, cname)
	if err != nil {
		return KeyCheck{KVNO: e.KVNO, Enctype: e.Enctype}, messages.Ticket{}, messages.EncKDCRepPart{}, fmt.Errorf("build AS-REQ: %w", err)
	}
	return c.loginWith(ctx, realm, cname, e, req)
}

// loginWith is loginPart for an AS-REQ of the caller's (another service
// than krbtgt, e.g. kadmin/changepw).
func (c *OnlineClient) loginWith(ctx context.Context, realm string, cname types.PrincipalName, e KeytabEntry, req messages.ASReq) (KeyCheck, messages.Ticket, messages.EncKDCRepPart, error) {
	var none messages.EncKDCRepPart
	kc := KeyCheck{KVNO: e.KVNO, Enctype: e.Enctype}
	key := types.EncryptionKey{KeyType: e.Enctype, KeyValue: e.key}
	req.ReqBody.EType = []int32{e.Enctype}
	ts, err := types.GetPAEncTSEncAsnMarshalled()
	if err != nil {
		return kc, messages.Ticket{}, none, fmt.Errorf("build pre-authentication: %w", err)
	}
	enc, err := crypto.GetEncryptedData(ts, key, keyusage.AS_REQ_PA_ENC_TIMESTAMP, int(e.KVNO))
	if err != nil {
		// The message names the enctype only; never the key.
		return kc, messages.Ticket{}, none, fmt.Errorf("encrypt pre-authentication with the %s key at kvno %d failed", EnctypeName(e.Enctype), e.KVNO)
	}
	pa, err := enc.Marshal()
	if err != nil {
		return kc, messages.Ticket{}, none, fmt.Errorf("marshal pre-authentication: %w", err)
	}
	req.PAData = append(req.PAData, types.PAData{PADataType: patype.PA_ENC_TIMESTAMP, PADataValue: pa})
	raw, err := req.Marshal()
	if err != nil {
		return kc, messages.Ticket{}, none, fmt.Errorf("marshal AS-REQ: %w", err)
	}
	reply, err := c.send(ctx, realm, raw, "AS-REQ", principalString(cname, realm),
		fmt.Sprintf("key check kvno %d %s for %s", e.KVNO, EnctypeName(e.Enctype), strings.Join(req.ReqBody.SName.NameString, "/")))
	if err != nil {
		return kc, messages.Ticket{}, none, err
	}
	switch reply[0] {
	case tagKRBError:
		var kerr messages.KRBError
		if err := kerr.Unmarshal(reply); err != nil {
			return kc, messages.Ticket{}, none, &BadReplyError{KDC: realm, Msg: "cannot decode KRB-ERROR"}
		}
		switch kerr.ErrorCode {
		case errorcode.KDC_ERR_PREAUTH_FAILED, errorcode.KRB_AP_ERR_BAD_INTEGRITY, errorcode.KDC_ERR_ETYPE_NOSUPP:
			kc.Error = ErrorName(kerr.ErrorCode)
			return kc, messages.Ticket{}, none, nil
		}
		return kc, messages.Ticket{}, none, kdcError(kerr)
	case tagASRep:
		var rep messages.ASRep
		if err := rep.Unmarshal(reply); err != nil {
			return kc, messages.Ticket{}, none, &BadReplyError{KDC: realm, Msg: "cannot decode AS-REP"}
		}
		plain, err := crypto.DecryptEncPart(rep.EncPart, key, keyusage.AS_REP_ENCPART)
		if err != nil {
			// Only possible without pre-authentication: the KDC replied
			// with a key that is not this one.
			kc.Error = "AS-REP does not decrypt with this key"
			return kc, messages.Ticket{}, none, nil
		}
		var part messages.EncKDCRepPart
		if err := part.Unmarshal(plain); err != nil {
			return kc, messages.Ticket{}, none, &BadReplyError{KDC: realm, Msg: "cannot decode the AS-REP's encrypted part"}
		}
		if part.Nonce != req.ReqBody.Nonce {
			return kc, messages.Ticket{}, none, &BadReplyError{KDC: realm, Msg: "AS-REP nonce does not match the request"}
		}
		kc.OK = true
		if rep.EncPart.KVNO > 0 {
			kc.ReplyKVNO = uint32(rep.EncPart.KVNO)
		}
		return kc, rep.Ticket, part, nil
	}
	return kc, messages.Ticket{}, none, &BadReplyError{KDC: realm, Msg: fmt.Sprintf("unexpected reply to AS-REQ (first byte 0x%02x)", reply[0])}
}

// serviceKVNO asks for a ticket to sname and returns the kvno its
// encrypted part names: the KDC's current kvno of sname.
func (c *OnlineClient) serviceKVNO(ctx context.Context, realm string, client types.PrincipalName, tgt messages.Ticket, skey types.EncryptionKey, sname types.PrincipalName) (uint32, error) {
	req, err := messages.NewTGSReq(client, realm, c.Config.Config, tgt, skey, sname, false)
	if err != nil {
		return 0, fmt.Errorf("build TGS-REQ: %w", err)
	}
	raw, err := req.Marshal()
	if err != nil {
		return 0, fmt.Errorf("marshal TGS-REQ: %w", err)
	}
	reply, err := c.send(ctx, realm, raw, "TGS-REQ", principalString(sname, realm), "kvno lookup")
	if err != nil {
		return 0, err
	}
	switch reply[0] {
	case tagTGSRep:
		var rep messages.TGSRep
		if err := rep.Unmarshal(reply); err != nil {
			return 0, &BadReplyError{KDC: realm, Msg: "cannot decode TGS-REP"}
		}
		if rep.Ticket.EncPart.KVNO <= 0 {
			return 0, &KDCError{Name: "NO_KVNO", Text: "the KDC's ticket carries no kvno"}
		}
		return uint32(rep.Ticket.EncPart.KVNO), nil
	case tagKRBError:
		var kerr messages.KRBError
		if err := kerr.Unmarshal(reply); err != nil {
			return 0, &BadReplyError{KDC: realm, Msg: "cannot decode KRB-ERROR"}
		}
		return 0, kdcError(kerr)
	}
	return 0, &BadReplyError{KDC: realm, Msg: fmt.Sprintf("unexpected reply to TGS-REQ (first byte 0x%02x)", reply[0])}
}

func kdcError(k messages.KRBError) *KDCError {
	return &KDCError{Code: k.ErrorCode, Name: ErrorName(k.ErrorCode), Text: truncate(k.EText, 200)}
}

func principalString(p types.PrincipalName, realm string) string {
	return unparsePrincipal(p.NameString, realm)
}

// send delivers one request to the realm's KDCs, in configured order, each
// over its preferred transport and then the other, and returns the first
// reply. RESPONSE_TOO_BIG over UDP is retried over TCP.
func (c *OnlineClient) send(ctx context.Context, realm string, req []byte, msgType, principal, purpose string) ([]byte, error) {
	log := c.log()
	log.LogAttrs(ctx, slog.LevelInfo, "kdc request", slog.String("msg_type", msgType),
		slog.String("principal", principal), slog.String("realm", realm), slog.String("purpose", purpose))
	if c.Limiter != nil {
		if err := c.Limiter.Wait(ctx); err != nil {
			return nil, err
		}
	}
	var reply []byte
	var err error
	if c.Exchange != nil {
		reply, err = c.Exchange(ctx, realm, req)
	} else {
		reply, err = c.exchange(ctx, realm, req)
	}
	if err != nil {
		log.LogAttrs(ctx, slog.LevelWarn, "kdc error", slog.String("realm", realm), slog.String("error", err.Error()))
		return nil, err
	}
	if len(reply) == 0 {
		return nil, &BadReplyError{KDC: realm, Msg: "empty reply"}
	}
	attrs := []slog.Attr{slog.String("realm", realm), slog.String("principal", principal), slog.Int("bytes", len(reply))}
	if reply[0] == tagKRBError {
		var kerr messages.KRBError
		if kerr.Unmarshal(reply) == nil {
			attrs = append(attrs, slog.String("msg_type", "KRB-ERROR"), slog.String("error_name", ErrorName(kerr.ErrorCode)))
		}
	}
	log.LogAttrs(ctx, slog.LevelInfo, "kdc reply", attrs...)
	return reply, nil
}

func (c *OnlineClient) exchange(ctx context.Context, realm string, req []byte) ([]byte, error) {
	kdcs, err := c.Config.ResolveKDCs(ctx, realm, nil)
	if err != nil {
		return nil, err
	}
	var last error
	for _, k := range kdcs {
		order := []Transport{k.Transport}
		if !k.Forced {
			order = append(order, other(k.Transport))
		}
		for _, t := range order {
			ex, err := SendRecv(ctx, k, t, req, c.Timeout)
			if err != nil {
				if errors.Is(err, context.Canceled) {
					return nil, err
				}
				last = err
				continue
			}
			if t == UDP && len(ex.Reply) > 0 && ex.Reply[0] == tagKRBError {
				var kerr messages.KRBError
				if kerr.Unmarshal(ex.Reply) == nil && kerr.ErrorCode == errorcode.KRB_ERR_RESPONSE_TOO_BIG {
					last = &BadReplyError{KDC: k.Entry, Msg: "KRB_ERR_RESPONSE_TOO_BIG over udp, and tcp is not allowed for this KDC"}
					continue
				}
			}
			return ex.Reply, nil
		}
	}
	return nil, last
}
