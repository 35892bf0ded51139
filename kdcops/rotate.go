package kdcops

// Kerberos primitives of a key rotation (the rotate package drives them):
// deriving a new keytab from a password with the salts the KDC reports,
// and changing a key over the kpasswd protocol (RFC 3244).

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/kadmin"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// DeriveKeytab derives one key per enctype in keys from password, each
// with the salt the KDC reported for it (ETYPE-INFO2), at kvno. gokrb5's
// keytab.AddEntry would use the default salt and an 8-bit kvno; a
// principal with another salt (renamed, migrated) or a kvno above 255
// would get keys the KDC does not hold.
func DeriveKeytab(realm string, components []string, keys []KDCKey, password string, kvno uint32, now time.Time) ([]KeytabEntry, error) {
	if len(keys) == 0 {
		return nil, errors.New("the KDC reported no key of the principal to derive from")
	}
	var out []KeytabEntry
	for _, k := range keys {
		et, err := crypto.GetEtype(k.Enctype)
		if err != nil {
			return nil, fmt.Errorf("the principal has a %s key, which krbops cannot derive", EnctypeName(k.Enctype))
		}
		key, err := et.StringToKey(password, k.Salt, et.GetDefaultStringToKeyParams())
		if err != nil {
			// The library's message is not quoted: it could echo its input.
			return nil, fmt.Errorf("deriving the %s key failed", EnctypeName(k.Enctype))
		}
		out = append(out, KeytabEntry{
			Principal:   unparsePrincipal(components, realm),
			Realm:       realm,
			Components:  append([]string(nil), components...),
			NameType:    nametype.KRB_NT_PRINCIPAL,
			Timestamp:   now.Truncate(time.Second),
			KVNO:        kvno,
			KVNO8:       uint8(kvno),
			Enctype:     k.Enctype,
			KeyLen:      len(key),
			fingerprint: keyFingerprint(k.Enctype, key),
			key:         key,
		})
	}
	return out, nil
}

// AtKVNO returns the entries of entries at kvno.
func AtKVNO(entries []KeytabEntry, kvno uint32) []KeytabEntry {
	var out []KeytabEntry
	for _, e := range entries {
		if e.KVNO == kvno {
			out = append(out, e)
		}
	}
	return out
}

// KVNOs lists the distinct kvnos of entries, ascending.
func KVNOs(entries []KeytabEntry) []uint32 {
	seen := map[uint32]bool{}
	for _, e := range entries {
		seen[e.KVNO] = true
	}
	return sortedKVNOs(seen)
}

// KpasswdError is a refusal by the kpasswd server: its result code and
// text (RFC 3244 section 2), or the KRB-ERROR it answered with.
type KpasswdError struct {
	Code   int
	Name   string
	Result string
}

func (e *KpasswdError) Error() string {
	if e.Result != "" {
		return fmt.Sprintf("kpasswd refused: %s (%d): %s", e.Name, e.Code, truncate(e.Result, 200))
	}
	return fmt.Sprintf("kpasswd refused: %s (%d)", e.Name, e.Code)
}

var kpasswdCodes = map[int]string{
	1: "KRB5_KPASSWD_MALFORMED", 2: "KRB5_KPASSWD_HARDERROR", 3: "KRB5_KPASSWD_AUTHERROR",
	4: "KRB5_KPASSWD_SOFTERROR", 5: "KRB5_KPASSWD_ACCESSDENIED", 6: "KRB5_KPASSWD_BAD_VERSION",
	7: "KRB5_KPASSWD_INITIAL_FLAG_NEEDED",
}

// KpasswdSet sets target's password over RFC 3244 (version 0xff80) as the
// principal whose keys are auth: the target itself (a change of its own
// key) or an administrator allowed to set other principals' passwords
// (MIT: the "c" privilege in kadm5.acl; Active Directory: Reset Password).
//
// auth must hold one kvno only: gokrb5 picks keys by timestamp, and
// would fail on old and new kvno written in the same second (DESIGN.md).
// gokrb5's Client.ChangePasswd cannot name a target, so the request is
// built here on kadmin.ChangePasswdData and sent to the realm's
// kpasswd_server over TCP (the reply to a set-password is short, but a
// request with a long principal can outgrow a UDP datagram limit).
//
// The password appears in no error and no log line.
func (c *OnlineClient) KpasswdSet(ctx context.Context, auth []KeytabEntry, targetRealm string, target []string, password string) error {
	if len(auth) == 0 {
		return errors.New("no keys to authenticate to kpasswd with")
	}
	if len(KVNOs(auth)) != 1 {
		return errors.New("kpasswd needs the keys of exactly one kvno to log in with")
	}
	a := auth[0]
	kt, err := GokrbKeytab(auth)
	if err != nil {
		return err
	}
	gcfg, err := c.Config.Clone()
	if err != nil {
		return err
	}
	user := strings.Join(a.Components, "/")
	cl := client.NewWithKeytab(user, a.Realm, kt, gcfg, client.DisablePAFXFAST(true))
	defer cl.Destroy()
	asReq, err := messages.NewASReqForChgPasswd(a.Realm, gcfg, cl.Credentials.CName())
	if err != nil {
		return fmt.Errorf("build the AS-REQ for kadmin/changepw: %w", err)
	}
	c.log().InfoContext(ctx, "kdc request", "msg_type", "AS-REQ", "principal", a.Principal, "purpose", "kadmin/changepw ticket")
	asRep, err := cl.ASExchange(a.Realm, asReq, 0)
	if err != nil {
		return fmt.Errorf("initial ticket for kadmin/changepw as %s: %s", a.Principal, firstLine(err.Error()))
	}
	tname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: target}
	req, subkey, err := setPasswdMsg(cl.Credentials.CName(), a.Realm, tname, targetRealm, password, asRep.Ticket, asRep.DecryptedEncPart.Key)
	if err != nil {
		return err
	}
	msg, err := req.Marshal()
	if err != nil {
		return fmt.Errorf("marshal the kpasswd request: %w", err)
	}
	_, servers, err := gcfg.GetKpasswdServers(a.Realm, true)
	if err != nil || len(servers) == 0 {
		return fmt.Errorf("no kpasswd_server or admin_server for realm %s in krb5.conf", a.Realm)
	}
	order := make([]int, 0, len(servers))
	for i := range servers {
		order = append(order, i)
	}
	sort.Ints(order)
	var last error
	for _, i := range order {
		k, err := ParseKDC(servers[i], TCP)
		if err != nil {
			last = err
			continue
		}
		if k.Port == 88 && !strings.Contains(servers[i], ":") {
			k.Port = 464
		}
		c.log().InfoContext(ctx, "kpasswd request", "server", servers[i], "principal", a.Principal,
			"target", unparsePrincipal(target, targetRealm))
		ex, err := SendRecv(ctx, k, TCP, msg, c.Timeout)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			last = err
			continue
		}
		return kpasswdReply(ex.Reply, subkey)
	}
	return last
}

func kpasswdReply(raw []byte, subkey types.EncryptionKey) error {
	var r kadmin.Reply
	if err := r.Unmarshal(raw); err != nil {
		return fmt.Errorf("cannot decode the kpasswd reply: %s", firstLine(err.Error()))
	}
	if r.IsKRBError {
		return &KpasswdError{Code: int(r.KRBError.ErrorCode), Name: ErrorName(r.KRBError.ErrorCode), Result: r.KRBError.EText}
	}
	if err := r.Decrypt(subkey); err != nil {
		return errors.New("cannot decrypt the kpasswd reply with the request's subkey")
	}
	if r.ResultCode != 0 {
		name := kpasswdCodes[int(r.ResultCode)]
		if name == "" {
			name = "KRB5_KPASSWD_UNKNOWN"
		}
		return &KpasswdError{Code: int(r.ResultCode), Name: name, Result: r.Result}
	}
	return nil
}

// setPasswdMsg is kadmin.ChangePasswdMsg with a target other than the
// caller (RFC 3244 targname/targrealm).
func setPasswdMsg(cname types.PrincipalName, realm string, target types.PrincipalName, targetRealm, password string, tkt messages.Ticket, sessionKey types.EncryptionKey) (kadmin.Request, types.EncryptionKey, error) {
	data := kadmin.ChangePasswdData{NewPasswd: []byte(password), TargName: target, TargRealm: targetRealm}
	b, err := data.Marshal()
	if err != nil {
		return kadmin.Request{}, types.EncryptionKey{}, errors.New("marshal the change-password data failed")
	}
	auth, err := types.NewAuthenticator(realm, cname)
	if err != nil {
		return kadmin.Request{}, types.EncryptionKey{}, fmt.Errorf("build the authenticator: %w", err)
	}
	et, err := crypto.GetEtype(sessionKey.KeyType)
	if err != nil {
		return kadmin.Request{}, types.EncryptionKey{}, fmt.Errorf("session key enctype %d: %w", sessionKey.KeyType, err)
	}
	if err := auth.GenerateSeqNumberAndSubKey(et.GetETypeID(), et.GetKeyByteSize()); err != nil {
		return kadmin.Request{}, types.EncryptionKey{}, fmt.Errorf("generate the subkey: %w", err)
	}
	ap, err := messages.NewAPReq(tkt, sessionKey, auth)
	if err != nil {
		return kadmin.Request{}, types.EncryptionKey{}, fmt.Errorf("build the AP-REQ: %w", err)
	}
	priv := messages.NewKRBPriv(messages.EncKrbPrivPart{
		UserData: b, Timestamp: auth.CTime, Usec: auth.Cusec, SequenceNumber: auth.SeqNumber,
	})
	if err := priv.EncryptEncPart(auth.SubKey); err != nil {
		return kadmin.Request{}, types.EncryptionKey{}, errors.New("encrypting the change-password data failed")
	}
	return kadmin.Request{APREQ: ap, KRBPriv: priv}, auth.SubKey, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return truncate(s, 300)
}

// keyEnctypes are the enctypes a key change can give a principal that
// krbops can derive keys for: the AES families, des3 and rc4.
var keyEnctypes = []int32{18, 17, 20, 19, 16, 23}

// KDCKeys asks the KDC which enctypes and salts it holds for the
// principal now, one AS-REQ without pre-authentication per enctype (the
// KDC's ETYPE-INFO2 answers for the current kvno). A rotation asks again
// after the key change: MIT gives a changed password the realm's
// supported_enctypes with the normal salt, whatever the old keys were.
func (c *OnlineClient) KDCKeys(ctx context.Context, realm string, components []string) ([]KDCKey, error) {
	cname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: components}
	var out []KDCKey
	for _, et := range keyEnctypes {
		key, has, err := c.probeEnctype(ctx, realm, cname, et)
		if err != nil {
			return nil, err
		}
		if has {
			out = append(out, key)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the KDC reports no key of %s that krbops can derive", unparsePrincipal(components, realm))
	}
	return out, nil
}

// SameKeys reports whether a and b list the same (enctype, salt) pairs,
// in any order.
func SameKeys(a, b []KDCKey) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[KDCKey]int{}
	for _, k := range a {
		seen[KDCKey{Enctype: k.Enctype, Salt: k.Salt}]++
	}
	for _, k := range b {
		kk := KDCKey{Enctype: k.Enctype, Salt: k.Salt}
		if seen[kk] == 0 {
			return false
		}
		seen[kk]--
	}
	return true
}
