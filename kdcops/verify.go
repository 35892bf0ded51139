package kdcops

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Session is a TGT obtained with one keytab key, and what the KDC said
// about it in the AS-REP's encrypted part.
type Session struct {
	Realm     string
	Client    types.PrincipalName
	KVNO      uint32 // the keytab kvno the KDC accepted
	ReplyKVNO uint32 // the kvno the AS-REP names (0: not given); see KeyCheck
	Enctype   int32
	TGT       messages.Ticket
	Key       types.EncryptionKey // session key: never logged
	AuthTime  time.Time
	StartTime time.Time
	EndTime   time.Time
	RenewTill time.Time // zero when not renewable
	Renewable bool
}

// Lifetime is how long the TGT was issued for.
func (s *Session) Lifetime() time.Duration {
	start := s.StartTime
	if start.IsZero() {
		start = s.AuthTime
	}
	return s.EndTime.Sub(start)
}

// LoginAttempt is one kvno tried by [OnlineClient.LoginPerKVNO].
type LoginAttempt struct {
	KeyCheck
	Skipped string // why this kvno was not tried (no usable enctype)
}

// LoginPerKVNO tries the keytab's kvnos for one principal, newest first,
// one kvno at a time with one key each (AES preferred): gokrb5 would pick a
// key by timestamp and fail on a keytab holding two kvnos written in the
// same second (DESIGN.md). It stops at the first kvno the KDC accepts.
//
// entries must be one principal's, read with KeepKeys. The error is for
// what stops the attempt (unreachable KDC, unknown principal, policy);
// rejected keys are attempts with OK false.
func (c *OnlineClient) LoginPerKVNO(ctx context.Context, entries []KeytabEntry) (*Session, []LoginAttempt, error) {
	if len(entries) == 0 {
		return nil, nil, errors.New("no keytab entries for the principal")
	}
	first := entries[0]
	cname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: first.Components}
	sorted := KVNOs(entries)
	var attempts []LoginAttempt
	for i := len(sorted) - 1; i >= 0; i-- {
		e, ok := usableLoginEntry(entries, sorted[i])
		if !ok {
			attempts = append(attempts, LoginAttempt{KeyCheck: KeyCheck{KVNO: sorted[i]}, Skipped: "no key of an enctype krbops can use"})
			continue
		}
		kc, sess, err := c.loginSession(ctx, first.Realm, cname, e)
		if err != nil {
			return nil, attempts, err
		}
		attempts = append(attempts, LoginAttempt{KeyCheck: kc})
		if kc.OK {
			return sess, attempts, nil
		}
	}
	return nil, attempts, nil
}

// DescribeAttempts is one line for a report: each kvno tried, and what
// the KDC said, e.g. "kvno 3 aes256-cts-hmac-sha1-96: KDC_ERR_PREAUTH_FAILED;
// kvno 2 aes256-cts-hmac-sha1-96 accepted".
func DescribeAttempts(as []LoginAttempt) string {
	var parts []string
	for _, a := range as {
		switch {
		case a.Skipped != "":
			parts = append(parts, fmt.Sprintf("kvno %d skipped: %s", a.KVNO, a.Skipped))
		case a.OK:
			parts = append(parts, fmt.Sprintf("kvno %d %s accepted", a.KVNO, EnctypeName(a.Enctype)))
		default:
			parts = append(parts, fmt.Sprintf("kvno %d %s: %s", a.KVNO, EnctypeName(a.Enctype), a.Error))
		}
	}
	return strings.Join(parts, "; ")
}

// usableLoginEntry picks the key to try at kvno: AES first, then any
// enctype gokrb5 can encrypt with.
func usableLoginEntry(entries []KeytabEntry, kvno uint32) (KeytabEntry, bool) {
	var best KeytabEntry
	found := false
	for _, e := range entries {
		if e.KVNO != kvno || len(e.key) == 0 {
			continue
		}
		if _, err := crypto.GetEtype(e.Enctype); err != nil {
			continue
		}
		if !found || AESEnctype(e.Enctype) && !AESEnctype(best.Enctype) {
			best, found = e, true
		}
	}
	return best, found
}

// loginSession is login with the AS-REP's encrypted part kept: verify
// needs the TGT's lifetime and flags, not just its session key.
func (c *OnlineClient) loginSession(ctx context.Context, realm string, cname types.PrincipalName, e KeytabEntry) (KeyCheck, *Session, error) {
	kc, tkt, part, err := c.loginPart(ctx, realm, cname, e)
	if err != nil || !kc.OK {
		return kc, nil, err
	}
	s := &Session{
		Realm: realm, Client: cname, KVNO: e.KVNO, ReplyKVNO: kc.ReplyKVNO, Enctype: e.Enctype,
		TGT: tkt, Key: part.Key,
		AuthTime: part.AuthTime, StartTime: part.StartTime, EndTime: part.EndTime,
		Renewable: types.IsFlagSet(&part.Flags, flags.Renewable),
	}
	if s.Renewable {
		s.RenewTill = part.RenewTill
	}
	return kc, s, nil
}

// ServiceTicket asks for a ticket to sname with a session's TGT. The
// ticket's kvno (in the clear) is the KDC's current kvno of sname.
func (c *OnlineClient) ServiceTicket(ctx context.Context, s *Session, sname types.PrincipalName) (messages.Ticket, error) {
	req, err := messages.NewTGSReq(s.Client, s.Realm, c.Config.Config, s.TGT, s.Key, sname, false)
	if err != nil {
		return messages.Ticket{}, fmt.Errorf("build TGS-REQ: %w", err)
	}
	raw, err := req.Marshal()
	if err != nil {
		return messages.Ticket{}, fmt.Errorf("marshal TGS-REQ: %w", err)
	}
	reply, err := c.send(ctx, s.Realm, raw, "TGS-REQ", principalString(sname, s.Realm), "service ticket")
	if err != nil {
		return messages.Ticket{}, err
	}
	switch reply[0] {
	case tagTGSRep:
		var rep messages.TGSRep
		if err := rep.Unmarshal(reply); err != nil {
			return messages.Ticket{}, &BadReplyError{KDC: s.Realm, Msg: "cannot decode TGS-REP"}
		}
		return rep.Ticket, nil
	case tagKRBError:
		var kerr messages.KRBError
		if err := kerr.Unmarshal(reply); err != nil {
			return messages.Ticket{}, &BadReplyError{KDC: s.Realm, Msg: "cannot decode KRB-ERROR"}
		}
		return messages.Ticket{}, kdcError(kerr)
	}
	return messages.Ticket{}, &BadReplyError{KDC: s.Realm, Msg: fmt.Sprintf("unexpected reply to TGS-REQ (first byte 0x%02x)", reply[0])}
}

// KDCKVNOWith learns the KDC's current kvno of a principal with someone
// else's TGT (the operator's ccache): the only way when the principal's own
// keytab is stale.
func (c *OnlineClient) KDCKVNOWith(ctx context.Context, realm string, components []string) (uint32, string, error) {
	tgt, skey, client, ok := c.ccacheTGT(realm)
	if !ok {
		return 0, "", errNoCCacheTGT
	}
	sname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: components}
	kvno, err := c.serviceKVNO(ctx, realm, client, tgt, skey, sname)
	return kvno, c.CCache.Principal, err
}

var errNoCCacheTGT = errors.New("no valid TGT for the realm in the credential cache")

// IsNoCCacheTGT reports whether err says there was no TGT to ask with.
func IsNoCCacheTGT(err error) bool { return errors.Is(err, errNoCCacheTGT) }

// APResult is the server side of an AP exchange: which of the server
// keytab's keys decrypt a service ticket.
type APResult struct {
	TicketKVNO  uint32
	Enctype     int32
	ServerKVNOs []uint32 // every kvno the server keytab holds for the service
	Held        bool     // the ticket's kvno is among them
	Decrypted   bool     // a key of that kvno and enctype decrypted the ticket
	Client      string   // cname inside the decrypted ticket
	// StartTime and EndTime are the decrypted ticket's validity.
	StartTime, EndTime time.Time
}

// Lifetime is how long the decrypted ticket was issued for; zero when it
// was not decrypted.
func (r APResult) Lifetime() time.Duration {
	if !r.Decrypted || r.EndTime.IsZero() {
		return 0
	}
	return r.EndTime.Sub(r.StartTime)
}

// DecryptTicket decrypts a service ticket with a server keytab's entries
// for the service, as an application server would on an AP-REQ. It only
// uses the key of the ticket's own kvno and enctype: a server that
// "finds" the key another way would hide the exact mismatch an on-call
// needs to see.
func DecryptTicket(tkt messages.Ticket, server []KeytabEntry) APResult {
	res := APResult{TicketKVNO: uint32(tkt.EncPart.KVNO), Enctype: tkt.EncPart.EType, ServerKVNOs: KVNOs(server)}
	res.Held = len(AtKVNO(server, res.TicketKVNO)) > 0
	for _, e := range server {
		if e.KVNO != res.TicketKVNO || e.Enctype != res.Enctype || len(e.key) == 0 {
			continue
		}
		key := types.EncryptionKey{KeyType: e.Enctype, KeyValue: e.key}
		plain, err := crypto.DecryptEncPart(tkt.EncPart, key, keyusage.KDC_REP_TICKET)
		if err != nil {
			continue // gokrb5's error may quote key material: never kept
		}
		var part messages.EncTicketPart
		if err := part.Unmarshal(plain); err != nil {
			continue
		}
		res.Decrypted = true
		res.Client = unparsePrincipal(part.CName.NameString, part.CRealm)
		res.StartTime, res.EndTime = part.StartTime, part.EndTime
		if res.StartTime.IsZero() {
			res.StartTime = part.AuthTime
		}
		break
	}
	return res
}

// IsKDCCode reports whether err is a KRB-ERROR with code.
func IsKDCCode(err error, code int32) bool {
	var ke *KDCError
	return errors.As(err, &ke) && ke.Code == code
}

// KDC error codes verify's hints branch on.
const (
	ErrPrincipalUnknown  = errorcode.KDC_ERR_C_PRINCIPAL_UNKNOWN
	ErrServerUnknown     = errorcode.KDC_ERR_S_PRINCIPAL_UNKNOWN
	ErrSkew              = errorcode.KRB_AP_ERR_SKEW
	ErrPreauthFailed     = errorcode.KDC_ERR_PREAUTH_FAILED
	ErrClientRevoked     = errorcode.KDC_ERR_CLIENT_REVOKED
	ErrKeyExpired        = errorcode.KDC_ERR_KEY_EXPIRED
	ErrPolicy            = errorcode.KDC_ERR_POLICY
	ErrBadIntegrity      = errorcode.KRB_AP_ERR_BAD_INTEGRITY
	ErrEtypeNotSupported = errorcode.KDC_ERR_ETYPE_NOSUPP
)

// MarshalKeytab writes entries (read with KeepKeys) as a version 0x0502
// keytab, the format MIT and gokrb5 read. The 32-bit kvno is always
// written, so kvnos above 255 survive. The bytes hold keys: callers keep
// them in memory or write them 0600, never log them.
func MarshalKeytab(entries []KeytabEntry) ([]byte, error) {
	out := []byte{0x05, 0x02}
	for _, e := range entries {
		if len(e.key) == 0 {
			return nil, fmt.Errorf("entry %s kvno %d has no key in memory (read with KeepKeys)", e.Principal, e.KVNO)
		}
		var rec []byte
		rec = binary.BigEndian.AppendUint16(rec, uint16(len(e.Components)))
		rec = appendCounted(rec, e.Realm)
		for _, c := range e.Components {
			rec = appendCounted(rec, c)
		}
		nt := e.NameType
		if nt == 0 {
			nt = nametype.KRB_NT_PRINCIPAL
		}
		rec = binary.BigEndian.AppendUint32(rec, uint32(nt))
		rec = binary.BigEndian.AppendUint32(rec, uint32(e.Timestamp.Unix()))
		rec = append(rec, byte(e.KVNO))
		rec = binary.BigEndian.AppendUint16(rec, uint16(e.Enctype))
		rec = binary.BigEndian.AppendUint16(rec, uint16(len(e.key)))
		rec = append(rec, e.key...)
		rec = binary.BigEndian.AppendUint32(rec, e.KVNO)
		out = binary.BigEndian.AppendUint32(out, uint32(len(rec)))
		out = append(out, rec...)
	}
	return out, nil
}

func appendCounted(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}
