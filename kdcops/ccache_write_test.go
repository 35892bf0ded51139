package kdcops_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/credentials"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/kdcops"
)

// A written cache reads back with krbops' parser and gokrb5's, with the
// principal, server, times, flags and session key as written. (MIT klist
// and kvno reading it is shown in test/integration/exec_test.go.)
func TestMarshalCCacheReadsBack(t *testing.T) {
	client := types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, "svc/etl")
	server := types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "krbtgt/KRBOPS.TEST")
	tkt := messages.Ticket{TktVNO: 5, Realm: "KRBOPS.TEST", SName: server,
		EncPart: types.EncryptedData{EType: 18, KVNO: 1, Cipher: bytes.Repeat([]byte{7}, 64)}}
	der, err := tkt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	auth := time.Unix(1_800_000_000, 0)
	key := types.EncryptionKey{KeyType: 18, KeyValue: bytes.Repeat([]byte{0xab}, 32)}
	b, err := kdcops.MarshalCCache(client, "KRBOPS.TEST", []kdcops.CCacheCred{{
		Client: client, ClientRealm: "KRBOPS.TEST", Server: server, ServerRealm: "KRBOPS.TEST", Key: key,
		AuthTime: auth, StartTime: auth, EndTime: auth.Add(time.Hour), RenewTill: auth.Add(24 * time.Hour),
		Flags: kdcops.FlagRenewable | kdcops.FlagInitial | kdcops.FlagPreAuth, Ticket: der,
	}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := kdcops.ParseCCache(b, kdcops.CCacheOptions{KeepTGT: true})
	if err != nil {
		t.Fatalf("krbops' parser: %v", err)
	}
	tgt, ok := cc.TGT()
	if cc.Version != 4 || cc.Principal != "svc/etl@KRBOPS.TEST" || !ok || tgt.Server != "krbtgt/KRBOPS.TEST@KRBOPS.TEST" ||
		!tgt.EndTime.Equal(auth.Add(time.Hour)) || tgt.Flags != kdcops.FlagRenewable|kdcops.FlagInitial|kdcops.FlagPreAuth {
		t.Errorf("krbops reads %+v / %+v", cc, tgt)
	}
	var g credentials.CCache
	if err := g.Unmarshal(b); err != nil {
		t.Fatalf("gokrb5: %v", err)
	}
	e := g.GetEntries()
	if len(e) != 1 || g.DefaultPrincipal.PrincipalName.PrincipalNameString() != "svc/etl" || !bytes.Equal(e[0].Key.KeyValue, key.KeyValue) ||
		!e[0].EndTime.Equal(auth.Add(time.Hour)) || !bytes.Equal(e[0].Ticket, der) {
		t.Errorf("gokrb5 reads %+v", e)
	}
}

func TestTicketFlagsWord(t *testing.T) {
	// forwardable (bit 1), renewable (8), initial (9), pre-authent (10).
	if got := kdcops.TicketFlagsWord([]byte{0x40, 0xe0, 0, 0}); got != kdcops.FlagForwardable|kdcops.FlagRenewable|kdcops.FlagInitial|kdcops.FlagPreAuth {
		t.Errorf("%#x", got)
	}
	if got := kdcops.TicketFlagsWord([]byte{0x40}); got != kdcops.FlagForwardable {
		t.Errorf("short bit string: %#x", got)
	}
}
