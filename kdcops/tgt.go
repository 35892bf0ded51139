package kdcops

import (
	"context"
	"fmt"
	"strings"

	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// LoginTGT logs in with entries' keys (one kvno), strongest enctype
// first, for a TGT: krbops' own AS exchange, so ctx cancels it at once
// (gokrb5's ASExchange takes no ctx) and no gokrb5 error text, which can
// embed key material, reaches the caller. When the KDC refuses every key
// the error is a *KDCError named after the last refusal
// (KDC_ERR_PREAUTH_FAILED ...); after a refusal other than
// KDC_ERR_ETYPE_NOSUPP no further key is offered.
func (c *OnlineClient) LoginTGT(ctx context.Context, realm string, cname types.PrincipalName, entries []KeytabEntry) (messages.Ticket, messages.EncKDCRepPart, error) {
	var refused []string
	last := ""
	for _, e := range keysByStrength(entries) {
		kc, tkt, part, err := c.loginPart(ctx, realm, cname, e)
		if err != nil {
			return messages.Ticket{}, messages.EncKDCRepPart{}, err
		}
		if kc.OK {
			return tkt, part, nil
		}
		refused = append(refused, EnctypeName(e.Enctype)+": "+kc.Error)
		last = kc.Error
		// Only an enctype the KDC lacks is worth another key: a refused
		// key means the kvno is stale, its other enctypes come from the
		// same password, and a KDC with lockout counts every refusal.
		if kc.Error != ErrorName(errorcode.KDC_ERR_ETYPE_NOSUPP) {
			break
		}
	}
	if last == "" {
		return messages.Ticket{}, messages.EncKDCRepPart{}, fmt.Errorf("no key of %s to log in with", principalString(cname, realm))
	}
	return messages.Ticket{}, messages.EncKDCRepPart{}, &KDCError{Name: last, Text: "every key was refused: " + strings.Join(refused, "; ")}
}

// RenewTGT renews tgt (a TGS exchange with the RENEW option) with ctx
// cancelling it, and returns the renewed ticket and its decrypted part.
func (c *OnlineClient) RenewTGT(ctx context.Context, realm string, cname types.PrincipalName, tgt messages.Ticket, key types.EncryptionKey) (messages.Ticket, messages.EncKDCRepPart, error) {
	var none messages.EncKDCRepPart
	sname := types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "krbtgt/"+realm)
	req, err := messages.NewTGSReq(cname, realm, c.Config.Config, tgt, key, sname, true)
	if err != nil {
		return messages.Ticket{}, none, fmt.Errorf("build the renewal TGS-REQ: %w", err)
	}
	raw, err := req.Marshal()
	if err != nil {
		return messages.Ticket{}, none, fmt.Errorf("marshal the renewal TGS-REQ: %w", err)
	}
	reply, err := c.send(ctx, realm, raw, "TGS-REQ", principalString(cname, realm), "renewal")
	if err != nil {
		return messages.Ticket{}, none, err
	}
	switch reply[0] {
	case tagTGSRep:
		var rep messages.TGSRep
		if err := rep.Unmarshal(reply); err != nil {
			return messages.Ticket{}, none, &BadReplyError{KDC: realm, Msg: "cannot decode TGS-REP"}
		}
		if err := rep.DecryptEncPart(key); err != nil {
			return messages.Ticket{}, none, &BadReplyError{KDC: realm, Msg: "the TGS-REP does not decrypt with the session key"}
		}
		if rep.DecryptedEncPart.Nonce != req.ReqBody.Nonce {
			return messages.Ticket{}, none, &BadReplyError{KDC: realm, Msg: "TGS-REP nonce does not match the request"}
		}
		return rep.Ticket, rep.DecryptedEncPart, nil
	case tagKRBError:
		var kerr messages.KRBError
		if err := kerr.Unmarshal(reply); err != nil {
			return messages.Ticket{}, none, &BadReplyError{KDC: realm, Msg: "cannot decode KRB-ERROR"}
		}
		return messages.Ticket{}, none, kdcError(kerr)
	}
	return messages.Ticket{}, none, &BadReplyError{KDC: realm, Msg: fmt.Sprintf("unexpected reply to TGS-REQ (first byte 0x%02x)", reply[0])}
}
