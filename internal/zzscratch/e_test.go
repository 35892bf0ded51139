package zzscratch

import (
	"context"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/iana/patype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/internal/lab"
	"github.com/krbops/krbops/kdcops"
)

func TestEtypeInfo(t *testing.T) {
	r := lab.ForTest(t, lab.Options{})
	ctx := context.Background()
	p := "svc/a.krbops.test"
	r.AddPrincipal(ctx, p, "")
	dir := t.TempDir()
	r.Keytab(ctx, p, dir+"/x.kt", "aes256-cts-hmac-sha1-96", "rc4-hmac", "aes128-cts-hmac-sha1-96:special")
	cfg, _ := config.Load(r.Krb5Conf)
	cname := types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, p)
	req, _ := messages.NewASReqForTGT(r.Name, cfg, cname)
	req.ReqBody.EType = []int32{18, 17, 20, 19, 16, 23, 1, 3}
	raw, _ := req.Marshal()
	k, _ := kdcops.ParseKDC(r.KDCs[0].Addr, kdcops.UDP)
	ex, err := kdcops.SendRecv(ctx, k, kdcops.UDP, raw, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ke messages.KRBError
	if err := ke.Unmarshal(ex.Reply); err != nil {
		t.Fatal(err)
	}
	t.Logf("code %d", ke.ErrorCode)
	var pas types.PADataSequence
	pas.Unmarshal(ke.EData)
	for _, pa := range pas {
		t.Logf("pa %d", pa.PADataType)
		if pa.PADataType == patype.PA_ETYPE_INFO2 {
			info, err := pa.GetETypeInfo2()
			t.Logf("%v %+v", err, info)
			for _, e := range info {
				t.Logf("etype %d salt %q params %x", e.EType, e.Salt, e.S2KParams)
			}
		}
	}
}
