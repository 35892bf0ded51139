package kdcops

// The kpasswd client (RFC 3244): a principal changing its own password,
// or an administrator setting another principal's, against MIT kadmind,
// Heimdal kpasswdd and Active Directory alike.
//
// Two request forms, because the three servers disagree on the one
// between them (interop.md):
//   - a self change is MIT kpasswd's protocol-version-1 request (0x0001):
//     the new password alone as the KRB-PRIV user data. MIT refuses a
//     0xff80 request without targname (MALFORMED), and AD treats one with
//     targname as an administrative reset (ACCESSDENIED for a normal
//     account), so a self change never carries targname.
//   - a set-password of another principal is version 0xff80 with
//     ChangePasswdData's targname and targrealm.
//
// Transport: UDP first for a message no larger than krb5.conf's
// udp_preference_limit, TCP first otherwise, each kpasswd server in turn.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/kadmin"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/safetext"
)

// RFC 3244 protocol version numbers of a request.
const (
	KpasswdVersionChange uint16 = 0x0001 // RFC 3244 section 2 (MIT kpasswd): change one's own password
	KpasswdVersionSet    uint16 = 0xff80 // RFC 3244: ChangePasswdData, may name a target
)

// kpasswdPort is the kpasswd service's port when krb5.conf names a host
// alone.
const kpasswdPort = 464

// maxKpasswdText caps the server's result text before it reaches an error.
const maxKpasswdText = 200

// KpasswdSet sets target's password over RFC 3244 as the principal whose
// keys are auth: the target itself (a change of its own key, sent as a
// version-1 request without targname) or an administrator allowed to set
// other principals' passwords (version 0xff80 with targname; MIT: the "c"
// privilege in kadm5.acl; Heimdal: cpw in its ACL; AD: Reset Password).
//
// auth must hold one kvno only: gokrb5 picks keys by timestamp, and
// would fail on old and new kvno written in the same second (DESIGN.md).
//
// The request goes to the realm's kpasswd servers in krb5.conf order,
// each over the transport udp_preference_limit picks first and then the
// other when the first is refused, times out, or answers
// KRB_ERR_RESPONSE_TOO_BIG; every attempt waits at most c.Timeout. After a
// timeout the KDC is asked first whether the new password already works
// (see sendKpasswd). Other failures (a reset or a reply cut short) end
// the attempt at once: the server may have applied the change, and the
// caller must ask the KDC before anything is sent again.
//
// The password appears in no error and no log line. A refusal is a
// *KpasswdError; no reply from any server is an *UnreachableError.
func (c *OnlineClient) KpasswdSet(ctx context.Context, auth []KeytabEntry, targetRealm string, target []string, password string) error {
	if len(auth) == 0 {
		return errors.New("no keys to authenticate to kpasswd with")
	}
	if len(KVNOs(auth)) != 1 {
		return errors.New("kpasswd needs the keys of exactly one kvno to log in with")
	}
	a := auth[0]
	self := strings.EqualFold(a.Realm, targetRealm) && slices.Equal(a.Components, target)
	servers, err := c.kpasswdServers(a.Realm)
	if err != nil {
		return err
	}
	cname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: a.Components}
	tkt, sessionKey, err := c.changepwTicket(ctx, a.Realm, cname, auth)
	if err != nil {
		return err
	}
	var tname *types.PrincipalName
	if !self {
		tname = &types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: target}
	}
	msg, subkey, err := kpasswdRequest(cname, a.Realm, tname, targetRealm, password, tkt, sessionKey)
	if err != nil {
		return err
	}
	version := KpasswdVersionChange
	if !self {
		version = KpasswdVersionSet
	}
	attrs := []any{"principal", a.Principal, "target", unparsePrincipal(target, targetRealm),
		"version", fmt.Sprintf("0x%04x", version), "bytes", len(msg)}
	applied := func(ctx context.Context) (bool, error) {
		return c.passwordWorks(ctx, targetRealm, target, password)
	}
	reply, server, err := c.sendKpasswd(ctx, servers, msg, subkey, applied, attrs)
	if err != nil || reply == nil {
		return err
	}
	res, err := parseKpasswdReply(reply, subkey)
	if err != nil {
		return fmt.Errorf("kpasswd server %s: %w", server, err)
	}
	c.log().InfoContext(ctx, "kpasswd reply", "server", server, "result_code", res.code, "krb_error", res.krbCode)
	if res.code == 0 && res.krbCode == 0 {
		return nil
	}
	return newKpasswdError(server, self, res)
}

// changepwTicket logs in with auth's keys (one kvno), strongest enctype
// first, for an initial ticket to kadmin/changepw: krbops' own AS
// exchange, so ctx cancels it and the forensic log records it (gokrb5's
// ASExchange takes no ctx, and its errors can embed key material).
func (c *OnlineClient) changepwTicket(ctx context.Context, realm string, cname types.PrincipalName, auth []KeytabEntry) (messages.Ticket, types.EncryptionKey, error) {
	var refused []string
	for _, e := range keysByStrength(auth) {
		req, err := messages.NewASReqForChgPasswd(realm, c.Config.Config, cname)
		if err != nil {
			return messages.Ticket{}, types.EncryptionKey{}, fmt.Errorf("build the AS-REQ for kadmin/changepw: %w", err)
		}
		kc, tkt, part, err := c.loginWith(ctx, realm, cname, e, req)
		if err != nil {
			return messages.Ticket{}, types.EncryptionKey{}, fmt.Errorf("initial ticket for kadmin/changepw as %s: %w", principalString(cname, realm), err)
		}
		if kc.OK {
			return tkt, part.Key, nil
		}
		refused = append(refused, EnctypeName(e.Enctype)+": "+kc.Error)
	}
	return messages.Ticket{}, types.EncryptionKey{}, fmt.Errorf("the KDC refused every key of %s at kvno %d for kadmin/changepw (%s)",
		principalString(cname, realm), auth[0].KVNO, strings.Join(refused, "; "))
}

// keysByStrength orders entries as krbops prefers enctypes (keyEnctypes).
func keysByStrength(entries []KeytabEntry) []KeytabEntry {
	out := slices.Clone(entries)
	rank := func(et int32) int {
		if i := slices.Index(keyEnctypes, et); i >= 0 {
			return i
		}
		return len(keyEnctypes)
	}
	slices.SortStableFunc(out, func(a, b KeytabEntry) int { return rank(a.Enctype) - rank(b.Enctype) })
	return out
}

// kpasswdServers are the realm's kpasswd_server entries (gokrb5 fills
// them from admin_server, port 464, when there are none) in krb5.conf
// order; a host without a port is on port 464. gokrb5's
// GetKpasswdServers would shuffle them, in place, and is used only for
// DNS SRV lookups.
func (c *OnlineClient) kpasswdServers(realm string) ([]KDC, error) {
	var entries []string
	for _, r := range c.Config.Realms {
		if r.Realm == realm {
			entries = append(entries, r.KPasswdServer...)
			break
		}
	}
	if len(entries) == 0 && c.Config.LibDefaults.DNSLookupKDC {
		if _, byPos, err := c.Config.GetKpasswdServers(realm, true); err == nil {
			for i := 1; i <= len(byPos); i++ {
				entries = append(entries, byPos[i])
			}
		}
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("no kpasswd_server or admin_server for realm %s in krb5.conf", realm)
	}
	pref := c.Config.PreferredTransport()
	out := make([]KDC, 0, len(entries))
	for _, entry := range entries {
		k, err := ParseKDC(entry, pref)
		if err != nil {
			return nil, fmt.Errorf("kpasswd_server of %s: %w", realm, err)
		}
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(entry, "tcp/"), "udp/")); err != nil {
			k.Port = kpasswdPort
		}
		out = append(out, k)
	}
	return out, nil
}

// KpasswdTransports is the order the transports are tried in for a
// message of size bytes to server k, as MIT's sendto_kdc orders a KDC
// request (issue 11): UDP first when the message is no larger than
// udp_preference_limit (MIT's default 1465; 1 therefore means TCP first),
// TCP first otherwise. MIT's kpasswd program itself always starts with
// TCP; a limit of 1 gives that order. An entry written "tcp/host" or
// "udp/host" is tried over that one only.
func KpasswdTransports(limit, size int, k KDC) []Transport {
	if k.Forced {
		return []Transport{k.Transport}
	}
	if size <= limit {
		return []Transport{UDP, TCP}
	}
	return []Transport{TCP, UDP}
}

// errResponseTooBig is a UDP reply of KRB_ERR_RESPONSE_TOO_BIG.
var errResponseTooBig = errors.New("KRB_ERR_RESPONSE_TOO_BIG over udp")

// nextAttempt is what a failed attempt allows.
type nextAttempt int

const (
	stop     nextAttempt = iota // the server may have applied it: the caller must find out
	tryNext                     // the request had no effect: the other transport, or server
	checkKDC                    // no reply in time after the request left: ask the KDC first
)

// afterFailure sorts a failed attempt. A refusal (TCP connect refused,
// UDP port unreachable), a connect that timed out, and RESPONSE_TOO_BIG
// moved nothing; a timeout after the request left may have; a reset or a
// reply cut short means the server got the request.
func afterFailure(err error) nextAttempt {
	if errors.Is(err, errResponseTooBig) || errors.Is(err, syscall.ECONNREFUSED) {
		return tryNext
	}
	var ne net.Error
	timeout := errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
	if !timeout {
		return stop
	}
	var ue *UnreachableError
	if errors.As(err, &ue) && !ue.Sent {
		return tryNext
	}
	return checkKDC
}

// kpasswdAppliedNote is logged when the change was found applied at the
// KDC although no reply came.
const kpasswdAppliedNote = "no reply, but the KDC accepts the new password: the change was applied; not resent"

// sendKpasswd delivers msg to the first kpasswd server that answers and
// returns the reply and that server. A nil reply with no error means no
// reply came but applied found the change in place.
//
// A timeout after the request left is the one ambiguous case: MIT's
// kadmind applies a resent copy of a request a second time (no replay
// cache; the key would move two kvnos). So before resending, applied asks
// the KDC whether the new password already works; only if it does not is
// the request sent again. A request delayed in the network past that
// check can still land twice; a server that never answers is then
// reported with every transport tried.
func (c *OnlineClient) sendKpasswd(ctx context.Context, servers []KDC, msg []byte, subkey types.EncryptionKey, applied func(context.Context) (bool, error), attrs []any) ([]byte, string, error) {
	log := c.log()
	match := kpasswdReplyMatcher(subkey)
	var unreachable []error
	for _, k := range servers {
		ue := &UnreachableError{KDC: k.Entry, Service: "kpasswd server"}
		for _, t := range KpasswdTransports(c.Config.LibDefaults.UDPPreferenceLimit, len(msg), k) {
			log.InfoContext(ctx, "kpasswd request", append([]any{"server", k.Entry, "transport", string(t)}, attrs...)...)
			ex, err := SendRecvMatch(ctx, k, t, msg, c.Timeout, match)
			if err == nil && ex.Stray > 0 {
				log.WarnContext(ctx, "kpasswd stray datagrams ignored", "server", k.Entry, "transport", string(t), "count", ex.Stray)
			}
			if err == nil && t == UDP && isResponseTooBig(ex.Reply) {
				err = errResponseTooBig
			}
			if err == nil {
				return ex.Reply, k.Entry, nil
			}
			if errors.Is(err, context.Canceled) {
				return nil, "", err
			}
			next := afterFailure(err)
			log.WarnContext(ctx, "kpasswd error", "server", k.Entry, "transport", string(t), "error", describeNetError(err))
			ue.Tried = append(ue.Tried, t)
			ue.TriedErrs = append(ue.TriedErrs, err)
			ue.Transport, ue.Err, ue.Sent = t, err, ue.Sent || next != tryNext
			switch next {
			case stop:
				return nil, k.Entry, ue
			case checkKDC:
				done, cerr := applied(ctx)
				if cerr != nil {
					log.WarnContext(ctx, "kpasswd outcome unknown", "server", k.Entry, "error", cerr.Error())
					return nil, k.Entry, ue
				}
				if done {
					log.InfoContext(ctx, "kpasswd outcome", "server", k.Entry, "transport", string(t), "note", kpasswdAppliedNote)
					return nil, k.Entry, nil
				}
				log.InfoContext(ctx, "kpasswd outcome", "server", k.Entry, "transport", string(t),
					"note", "no reply, and the KDC does not accept the new password yet: trying again")
			}
		}
		unreachable = append(unreachable, ue)
	}
	return nil, "", joinUnreachable(unreachable)
}

// passwordWorks reports whether the KDC accepts password for the
// principal now: one pre-authenticated AS-REQ with a key derived with the
// salt the KDC reports (ETYPE-INFO2). On AD a wrong password counts one
// bad attempt towards the lockout threshold.
func (c *OnlineClient) passwordWorks(ctx context.Context, realm string, components []string, password string) (bool, error) {
	keys, err := c.KDCKeys(ctx, realm, components)
	if err != nil {
		return false, err
	}
	ents, err := DeriveKeytab(realm, components, keys[:1], password, 0, time.Now())
	if err != nil {
		return false, err
	}
	cname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: components}
	kc, _, _, err := c.loginPart(ctx, realm, cname, ents[0])
	return kc.OK, err
}

func isResponseTooBig(reply []byte) bool {
	if len(reply) == 0 || reply[0] != tagKRBError {
		return false
	}
	var kerr messages.KRBError
	return kerr.Unmarshal(reply) == nil && kerr.ErrorCode == errorcode.KRB_ERR_RESPONSE_TOO_BIG
}

// kpasswdReplyMatcher accepts a datagram only if it is the reply to the
// request sealed with subkey: a KRB-PRIV that decrypts with it, or an
// error reply (a server that cannot read the request cannot seal its
// answer; MIT's client accepts those too), or RESPONSE_TOO_BIG.
func kpasswdReplyMatcher(subkey types.EncryptionKey) func([]byte) bool {
	return func(b []byte) bool {
		if isResponseTooBig(b) {
			return true
		}
		_, err := parseKpasswdReply(b, subkey)
		return err == nil
	}
}

// kpasswdRequest builds the request: version 1 with the bare password when
// target is nil (a self change), else version 0xff80 with
// ChangePasswdData naming target in targetRealm. It returns the message
// (without TCP framing) and the subkey the reply is sealed with.
func kpasswdRequest(cname types.PrincipalName, realm string, target *types.PrincipalName, targetRealm, password string, tkt messages.Ticket, sessionKey types.EncryptionKey) ([]byte, types.EncryptionKey, error) {
	version, data := KpasswdVersionChange, []byte(password)
	if target != nil {
		version = KpasswdVersionSet
		cpd := kadmin.ChangePasswdData{NewPasswd: []byte(password), TargName: *target, TargRealm: targetRealm}
		b, err := cpd.Marshal()
		if err != nil {
			return nil, types.EncryptionKey{}, errors.New("marshal the change-password data failed")
		}
		data = b
	}
	auth, err := types.NewAuthenticator(realm, cname)
	if err != nil {
		return nil, types.EncryptionKey{}, fmt.Errorf("build the authenticator: %w", err)
	}
	et, err := crypto.GetEtype(sessionKey.KeyType)
	if err != nil {
		return nil, types.EncryptionKey{}, fmt.Errorf("session key enctype %d: %w", sessionKey.KeyType, err)
	}
	if err := auth.GenerateSeqNumberAndSubKey(et.GetETypeID(), et.GetKeyByteSize()); err != nil {
		return nil, types.EncryptionKey{}, fmt.Errorf("generate the subkey: %w", err)
	}
	ap, err := messages.NewAPReq(tkt, sessionKey, auth)
	if err != nil {
		return nil, types.EncryptionKey{}, fmt.Errorf("build the AP-REQ: %w", err)
	}
	apb, err := ap.Marshal()
	if err != nil {
		return nil, types.EncryptionKey{}, errors.New("marshal the AP-REQ failed")
	}
	priv := messages.NewKRBPriv(messages.EncKrbPrivPart{
		UserData: data, Timestamp: auth.CTime, Usec: auth.Cusec, SequenceNumber: auth.SeqNumber,
	})
	if err := priv.EncryptEncPart(auth.SubKey); err != nil {
		return nil, types.EncryptionKey{}, errors.New("encrypting the change-password data failed")
	}
	pb, err := priv.Marshal()
	if err != nil {
		return nil, types.EncryptionKey{}, errors.New("marshal the KRB-PRIV failed")
	}
	msg, err := frameKpasswd(version, apb, pb)
	return msg, auth.SubKey, err
}

// frameKpasswd lays out an RFC 3244 request: message length, version,
// AP-REQ length, AP-REQ, KRB-PRIV (all lengths 16-bit big-endian).
func frameKpasswd(version uint16, apreq, priv []byte) ([]byte, error) {
	n := 6 + len(apreq) + len(priv)
	if len(apreq) > 0xffff || n > 0xffff {
		return nil, fmt.Errorf("kpasswd request of %d bytes exceeds the protocol's 65535", n)
	}
	b := make([]byte, 6, n)
	binary.BigEndian.PutUint16(b[0:], uint16(n))
	binary.BigEndian.PutUint16(b[2:], version)
	binary.BigEndian.PutUint16(b[4:], uint16(len(apreq)))
	return append(append(b, apreq...), priv...), nil
}

// KpasswdRequestInfo is what a kpasswd request says in the clear and,
// with the subkey, in its KRB-PRIV: for tests and for inspecting a
// captured request. TargName is nil when the request names no target.
type KpasswdRequestInfo struct {
	Version  uint16
	APReq    []byte
	UserData []byte // decrypted, when a subkey was given
	TargName []string
	TargRlm  string
	Password []byte // the new password; never print it
}

// ParseKpasswdRequest decodes a request built by KpasswdSet (the message
// without TCP framing); with a zero subkey the KRB-PRIV is not opened.
func ParseKpasswdRequest(b []byte, subkey types.EncryptionKey) (KpasswdRequestInfo, error) {
	var info KpasswdRequestInfo
	if len(b) < 6 || int(binary.BigEndian.Uint16(b)) != len(b) {
		return info, errors.New("kpasswd request: bad length")
	}
	info.Version = binary.BigEndian.Uint16(b[2:])
	apLen := int(binary.BigEndian.Uint16(b[4:]))
	if 6+apLen > len(b) {
		return info, errors.New("kpasswd request: AP-REQ length past the end")
	}
	info.APReq = b[6 : 6+apLen]
	if subkey.KeyType == 0 {
		return info, nil
	}
	var priv messages.KRBPriv
	if err := priv.Unmarshal(b[6+apLen:]); err != nil {
		return info, errors.New("kpasswd request: cannot decode the KRB-PRIV")
	}
	if err := priv.DecryptEncPart(subkey); err != nil {
		return info, errors.New("kpasswd request: the KRB-PRIV does not decrypt with the subkey")
	}
	info.UserData = priv.DecryptedEncPart.UserData
	switch info.Version {
	case KpasswdVersionChange:
		info.Password = info.UserData
	case KpasswdVersionSet:
		var cpd kadmin.ChangePasswdData
		if _, err := asn1.Unmarshal(info.UserData, &cpd); err != nil {
			return info, errors.New("kpasswd request: cannot decode ChangePasswdData")
		}
		info.Password = cpd.NewPasswd
		if len(cpd.TargName.NameString) > 0 {
			info.TargName, info.TargRlm = cpd.TargName.NameString, cpd.TargRealm
		}
	}
	return info, nil
}

// kpasswdResult is a decoded reply: an RFC 3244 result code and string,
// or (krbCode) a KRB-ERROR that carried no result code.
type kpasswdResult struct {
	code    int
	result  []byte
	krbCode int32
	eText   string
}

// parseKpasswdReply decodes a reply without trusting its lengths: a
// datagram can be anything. A KRB-PRIV reply must decrypt with subkey.
func parseKpasswdReply(b []byte, subkey types.EncryptionKey) (kpasswdResult, error) {
	if len(b) > 0 && b[0] == tagKRBError {
		// A bare KRB-ERROR: what some servers send for a request they
		// cannot frame at all.
		return krbErrorResult(b)
	}
	if len(b) < 6 {
		return kpasswdResult{}, errors.New("kpasswd reply shorter than its header")
	}
	if n := int(binary.BigEndian.Uint16(b)); n != len(b) {
		return kpasswdResult{}, fmt.Errorf("kpasswd reply says %d bytes, has %d", n, len(b))
	}
	// RFC 3244 replies carry version 1; some set-password servers echo
	// 0xff80.
	if v := binary.BigEndian.Uint16(b[2:]); v != KpasswdVersionChange && v != KpasswdVersionSet {
		return kpasswdResult{}, fmt.Errorf("kpasswd reply has protocol version 0x%04x", v)
	}
	apLen := int(binary.BigEndian.Uint16(b[4:]))
	if 6+apLen > len(b) {
		return kpasswdResult{}, errors.New("kpasswd reply: AP-REP length past the end")
	}
	rest := b[6+apLen:]
	if apLen == 0 {
		return krbErrorResult(rest)
	}
	var priv messages.KRBPriv
	if err := priv.Unmarshal(rest); err != nil {
		return kpasswdResult{}, errors.New("kpasswd reply: cannot decode the KRB-PRIV")
	}
	if err := priv.DecryptEncPart(subkey); err != nil {
		return kpasswdResult{}, errors.New("kpasswd reply is not sealed with this request's subkey")
	}
	ud := priv.DecryptedEncPart.UserData
	if len(ud) < 2 {
		return kpasswdResult{}, errors.New("kpasswd reply carries no result code")
	}
	return kpasswdResult{code: int(binary.BigEndian.Uint16(ud)), result: ud[2:]}, nil
}

func krbErrorResult(b []byte) (kpasswdResult, error) {
	var kerr messages.KRBError
	if err := kerr.Unmarshal(b); err != nil {
		return kpasswdResult{}, errors.New("kpasswd reply: cannot decode the KRB-ERROR")
	}
	r := kpasswdResult{eText: kerr.EText}
	if len(kerr.EData) >= 2 {
		r.code, r.result = int(binary.BigEndian.Uint16(kerr.EData)), kerr.EData[2:]
	}
	if r.code == 0 {
		r.krbCode = kerr.ErrorCode
	}
	return r, nil
}

// KpasswdError is a refusal by a kpasswd server: an RFC 3244 result code
// with its text, or a KRB-ERROR without one. It knows its fault class and
// the operator's next step.
type KpasswdError struct {
	Server string
	Code   int    // RFC 3244 result code; the KRB-ERROR code when KRBError
	Name   string // KRB5_KPASSWD_* or the KRB-ERROR's name
	// Result is the server's text, control characters removed and capped;
	// for AD's binary policy the policy in words.
	Result string
	// Policy is AD's password policy when the server sent it.
	Policy *ADPasswordPolicy
	// KRBError is set when the server answered with a KRB-ERROR that had
	// no result code.
	KRBError bool
	// Self is true for a change of the principal's own password (a
	// request without targname).
	Self bool
}

var kpasswdCodes = map[int]string{
	1: "KRB5_KPASSWD_MALFORMED", 2: "KRB5_KPASSWD_HARDERROR", 3: "KRB5_KPASSWD_AUTHERROR",
	4: "KRB5_KPASSWD_SOFTERROR", 5: "KRB5_KPASSWD_ACCESSDENIED", 6: "KRB5_KPASSWD_BAD_VERSION",
	7: "KRB5_KPASSWD_INITIAL_FLAG_NEEDED",
}

func newKpasswdError(server string, self bool, r kpasswdResult) *KpasswdError {
	e := &KpasswdError{Server: server, Self: self, Code: r.code}
	if r.krbCode != 0 {
		e.KRBError, e.Code, e.Name = true, int(r.krbCode), ErrorName(r.krbCode)
		e.Result = cleanText(r.eText)
		return e
	}
	e.Name = kpasswdCodes[r.code]
	if e.Name == "" {
		e.Name = "KRB5_KPASSWD_UNKNOWN"
	}
	if p, ok := DecodeADPolicy(r.result); ok {
		e.Policy = &p
		e.Result = p.String()
		return e
	}
	e.Result = cleanText(string(r.result))
	if e.Result == "" {
		e.Result = cleanText(r.eText)
	}
	return e
}

func cleanText(s string) string {
	return truncate(strings.TrimSpace(safetext.Line(s)), maxKpasswdText)
}

func (e *KpasswdError) Error() string {
	who := "kpasswd"
	if e.Server != "" {
		who = "kpasswd server " + e.Server
	}
	s := fmt.Sprintf("%s refused: %s (%d): %s", who, e.Name, e.Code, e.Reason())
	if e.Result != "" {
		s += ": " + e.Result
	}
	return s
}

// Reason is what the result code means, in one line.
func (e *KpasswdError) Reason() string {
	if e.KRBError {
		switch int32(e.Code) {
		case errorcode.KRB_AP_ERR_SKEW:
			return "the clocks of this host and the kpasswd server differ too much"
		case errorcode.KRB_AP_ERR_REPEAT:
			return "the server has seen this request before (a resent copy)"
		case errorcode.KRB_AP_ERR_MODIFIED, errorcode.KRB_AP_ERR_BAD_INTEGRITY:
			return "the server could not decrypt the request's ticket"
		}
		return "the server answered with a Kerberos error"
	}
	switch e.Code {
	case 1:
		return "the server could not decode the request"
	case 2:
		return "the server failed to apply the change"
	case 3:
		return "the server could not authenticate the request"
	case 4:
		return "the password policy refused the new password"
	case 5:
		if e.Self {
			return "the server does not let the principal change its own password"
		}
		return "the authenticating principal may not set this principal's password"
	case 6:
		return "the server does not accept this request's protocol version"
	case 7:
		return "the server wants a ticket from an initial login"
	}
	return fmt.Sprintf("result code %d is not one of RFC 3244's", e.Code)
}

// Hint is what the operator should do next.
func (e *KpasswdError) Hint() string {
	if e.KRBError {
		switch int32(e.Code) {
		case errorcode.KRB_AP_ERR_SKEW:
			return "run krbops clock-check and fix this host's or the KDC's clock"
		case errorcode.KRB_AP_ERR_REPEAT:
			return "an earlier copy of this request may have been applied: ask the KDC for the principal's kvno before changing anything"
		case errorcode.KRB_AP_ERR_MODIFIED, errorcode.KRB_AP_ERR_BAD_INTEGRITY:
			return "the kpasswd server and the KDC disagree on the kadmin/changepw key: check kpasswd_server points at this realm's server"
		}
		return "read the kpasswd server's log for the request"
	}
	switch e.Code {
	case 1:
		return "krbops sends a self change as protocol version 1 and a set-password as 0xff80 with targname; check kpasswd_server is an RFC 3244 server of this realm"
	case 2:
		return "read the kpasswd server's log; MIT: the principal may not exist or the database failed; Heimdal: its ACL refused a set-password"
	case 3:
		return "the keytab's key is not the KDC's: run krbops klist-lint --online on it, and krbops clock-check"
	case 4:
		return e.policyHint()
	case 5:
		if e.Self {
			return "allow the account to change its own password (AD: clear \"User cannot change password\"; MIT: the principal's policy), or use --backend kpasswd-admin; krbops sent no targname"
		}
		return "grant the admin principal the right to set passwords (MIT: c in kadm5.acl; Heimdal: cpw; AD: Reset Password), or use another admin"
	case 6:
		if e.Self {
			return "the server does not speak protocol version 1 (RFC 3244 change): check kpasswd_server, or use --backend kpasswd-admin"
		}
		return "the server does not speak protocol version 0xff80 (RFC 3244 set-password): use --backend kadmin on MIT, or a server that implements RFC 3244"
	case 7:
		return "krbops logs in afresh for kadmin/changepw; check the KDC issues kadmin/changepw tickets with the initial flag"
	}
	return "read the kpasswd server's log for the request"
}

// Hints for a SOFTERROR, by the rule that refused the password.
const (
	hintComplexity = "krbops' passwords have upper, lower, digit and symbol and no three letters in a row; a custom password filter refused it: ask the domain admins, then resume the rotation"
	hintMinAge     = "the password was changed less than the policy's minimum age ago: wait, or use --backend kpasswd-admin (an admin set-password ignores the minimum age), then resume the rotation"
	hintHistory    = "the server already holds this password: an earlier attempt was likely applied; ask the KDC for the kvno before changing anything"
	hintLength     = "the policy wants a longer password than krbops' 64 characters: ask the realm's admins to exempt service accounts"
)

func (e *KpasswdError) policyHint() string {
	// AD's blob says what the policy is, not which rule failed: krbops'
	// passwords meet every rule but a length over 64, the minimum age and
	// the history (a resent password).
	if p := e.Policy; p != nil {
		switch {
		case p.MinLength > 64:
			return hintLength
		case p.MinAgeDays > 0:
			return hintMinAge
		case p.History > 0:
			return hintHistory
		}
		return hintComplexity
	}
	t := strings.ToLower(e.Result)
	switch {
	case strings.Contains(t, "complex") || strings.Contains(t, "character classes"):
		return hintComplexity
	case strings.Contains(t, "too young") || strings.Contains(t, "minimum password age") || strings.Contains(t, "minimum life") ||
		strings.Contains(t, "too recently"):
		return hintMinAge
	case strings.Contains(t, "history") || strings.Contains(t, "reuse") || strings.Contains(t, "previous"):
		return hintHistory
	case strings.Contains(t, "too short") || strings.Contains(t, "length"):
		return hintLength
	}
	return "the password policy refused it (see the server's text); exempt service accounts from it or use --backend kpasswd-admin, then resume the rotation"
}

// FaultClass: a refusal is a failed check (exit 1); a server that cannot
// read the request, or speaks another protocol, leaves the run unable to
// complete (exit 3).
func (e *KpasswdError) FaultClass() fault.Class {
	if e.KRBError {
		return fault.CheckFailed
	}
	switch e.Code {
	case 2, 3, 4, 5, 7:
		return fault.CheckFailed
	}
	return fault.Unreachable
}

// ADPasswordPolicy is Active Directory's password policy as a kpasswd
// SOFTERROR reply carries it: the 30-byte result string of MS-KILE
// 3.1.5.2 (a zero, then DOMAIN_PASSWORD_INFORMATION of MS-SAMR 2.2.3.5 in
// big-endian).
type ADPasswordPolicy struct {
	MinLength  uint32
	History    uint32
	Properties uint32
	MaxAgeDays uint64
	MinAgeDays uint64
}

// PasswordProperties bits (MS-SAMR 2.2.1.7).
const (
	ADPasswordComplex        = 0x01
	ADPasswordNoAnonChange   = 0x02
	ADPasswordNoClearChange  = 0x04
	ADLockoutAdmins          = 0x08
	ADPasswordStoreCleartext = 0x10
	ADRefusePasswordChange   = 0x20
)

const (
	adPolicyLength          = 30
	adPolicyIntervalsPerDay = 86400 * 10_000_000 // AD intervals are 100 ns units
	// "Never" is the largest interval of either sign.
	adPolicyNever    = 1<<63 - 1
	adPolicyNeverNeg = 1 << 63
)

// DecodeADPolicy decodes AD's 30-byte policy blob; ok is false for any
// other result string (plain text).
func DecodeADPolicy(b []byte) (ADPasswordPolicy, bool) {
	if len(b) != adPolicyLength || b[0] != 0 || b[1] != 0 {
		return ADPasswordPolicy{}, false
	}
	return ADPasswordPolicy{
		MinLength:  binary.BigEndian.Uint32(b[2:]),
		History:    binary.BigEndian.Uint32(b[6:]),
		Properties: binary.BigEndian.Uint32(b[10:]),
		MaxAgeDays: adDays(binary.BigEndian.Uint64(b[14:])),
		MinAgeDays: adDays(binary.BigEndian.Uint64(b[22:])),
	}, true
}

// adDays turns an AD interval into whole days, rounding a non-zero part
// day up. AD stores intervals negative; the blob may carry either sign.
// "Never" (the largest magnitude) is 0, like no limit.
func adDays(v uint64) uint64 {
	if v == adPolicyNeverNeg || v == adPolicyNever {
		return 0
	}
	if v > adPolicyNever {
		v = -v
	}
	d := v / adPolicyIntervalsPerDay
	if v%adPolicyIntervalsPerDay != 0 {
		d++
	}
	return d
}

func (p ADPasswordPolicy) String() string {
	var w []string
	if p.MinLength > 0 {
		w = append(w, "at least "+strconv.Itoa(int(p.MinLength))+" characters")
	}
	if p.Properties&ADPasswordComplex != 0 {
		w = append(w, "complexity on (three of upper, lower, digit, symbol; no part of the account name)")
	}
	if p.History > 0 {
		w = append(w, "none of the last "+strconv.Itoa(int(p.History))+" passwords")
	}
	if p.MinAgeDays > 0 {
		w = append(w, "minimum age "+strconv.FormatUint(p.MinAgeDays, 10)+" days")
	}
	if p.MaxAgeDays > 0 {
		w = append(w, "maximum age "+strconv.FormatUint(p.MaxAgeDays, 10)+" days")
	}
	if p.Properties&ADRefusePasswordChange != 0 {
		w = append(w, "users may not change passwords")
	}
	if len(w) == 0 {
		return "domain password policy: no limits reported"
	}
	return "domain password policy: " + strings.Join(w, ", ")
}

// KpasswdReachable reports the first kpasswd server of realm that answers
// over either transport, and over which. TCP is tried first, a connect
// and no request; then UDP (Heimdal's kpasswdd listens on UDP only), with
// a request whose AP-REQ and KRB-PRIV are empty ASN.1 shells: a server can
// only answer it with an error, and none can act on it (MIT's kadmind
// ignores a request with no AP-REQ bytes at all, so the shells are
// needed). An entry written "tcp/host" or
// "udp/host" is tried over that transport only. Nothing is changed.
func (c *OnlineClient) KpasswdReachable(ctx context.Context, realm string) (string, Transport, error) {
	servers, err := c.kpasswdServers(realm)
	if err != nil {
		return "", "", err
	}
	probe, _ := frameKpasswd(KpasswdVersionChange, []byte{0x6e, 0x00}, []byte{0x75, 0x00})
	var errs []error
	for _, k := range servers {
		ue := &UnreachableError{KDC: k.Entry, Service: "kpasswd server"}
		order := []Transport{TCP, UDP}
		if k.Forced {
			order = []Transport{k.Transport}
		}
		for _, t := range order {
			c.log().InfoContext(ctx, "kpasswd probe", "server", k.Entry, "transport", string(t))
			err := reach(ctx, k, t, probe, c.Timeout)
			if err == nil {
				return k.Entry, t, nil
			}
			if errors.Is(err, context.Canceled) {
				return "", "", err
			}
			ue.Tried = append(ue.Tried, t)
			ue.TriedErrs = append(ue.TriedErrs, err)
			ue.Transport, ue.Err = t, err
		}
		errs = append(errs, ue)
	}
	return "", "", joinUnreachable(errs)
}

// unreachableServers is every kpasswd server failing, on one line.
type unreachableServers []error

func (u unreachableServers) Error() string {
	var s []string
	for _, e := range u {
		s = append(s, e.Error())
	}
	return strings.Join(s, "; ")
}

func (u unreachableServers) Unwrap() []error { return u }

func joinUnreachable(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return unreachableServers(errs)
}

func reach(ctx context.Context, k KDC, t Transport, probe []byte, timeout time.Duration) error {
	if t == UDP {
		_, err := SendRecv(ctx, k, UDP, probe, timeout)
		return err
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", k.Addr())
	if err != nil {
		return err
	}
	return conn.Close()
}
