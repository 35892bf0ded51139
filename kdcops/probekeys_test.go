package kdcops

import (
	"context"
	"slices"
	"testing"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/iana/patype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// fakeEtypeKDC answers an AS-REQ without pre-authentication as MIT 1.20
// and Heimdal do in the lab: PREAUTH_REQUIRED whose ETYPE-INFO2 names
// only the first requested enctype the principal holds, or every held
// one when all is set (older KDCs); weakRefused is a weak enctype the KDC
// refuses when asked for alone. It records each request's enctypes.
type fakeEtypeKDC struct {
	held        []int32
	all         bool
	weakRefused int32
	asked       [][]int32
}

func (f *fakeEtypeKDC) exchange(t *testing.T) func(context.Context, string, []byte) ([]byte, error) {
	return func(_ context.Context, realm string, raw []byte) ([]byte, error) {
		var req messages.ASReq
		if err := req.Unmarshal(raw); err != nil {
			t.Fatalf("not an AS-REQ: %v", err)
		}
		f.asked = append(f.asked, slices.Clone(req.ReqBody.EType))
		var info types.ETypeInfo2
		for _, et := range req.ReqBody.EType {
			if slices.Contains(f.held, et) || (et == f.weakRefused && len(req.ReqBody.EType) > 1) {
				info = append(info, types.ETypeInfo2Entry{EType: et, Salt: realm + "svc"})
				if !f.all {
					break
				}
			}
		}
		code := int32(errorcode.KDC_ERR_PREAUTH_REQUIRED)
		if len(req.ReqBody.EType) == 1 && req.ReqBody.EType[0] == f.weakRefused {
			code = errorcode.KDC_ERR_ETYPE_NOSUPP
		}
		ke := messages.NewKRBError(types.PrincipalName{}, realm, code, "")
		if code == errorcode.KDC_ERR_PREAUTH_REQUIRED {
			ib, err := asn1.Marshal(info)
			if err != nil {
				t.Fatal(err)
			}
			eb, err := asn1.Marshal(types.PADataSequence{{PADataType: patype.PA_ETYPE_INFO2, PADataValue: ib}})
			if err != nil {
				t.Fatal(err)
			}
			ke.EData = eb
		}
		return ke.Marshal()
	}
}

// The AES enctypes are settled with one request per held key plus one
// that names none; the weak ones are still asked one at a time, so a weak
// key the KDC names only in a list (and refuses alone) is not held. The
// answer is the one per-enctype probes give, in the order asked.
func TestProbeKeysFewerRequests(t *testing.T) {
	cname := types.PrincipalName{NameType: 1, NameString: []string{"svc"}}
	for _, tc := range []struct {
		name      string
		kdc       fakeEtypeKDC
		wantKeys  []int32
		wantAsked [][]int32
	}{
		{"first named only", fakeEtypeKDC{held: []int32{17, 18}, weakRefused: 23},
			[]int32{18, 17}, [][]int32{{18, 17, 20, 19}, {17, 20, 19}, {20, 19}, {16}, {23}}},
		{"all named", fakeEtypeKDC{held: []int32{18, 17, 23}, all: true},
			[]int32{18, 17, 23}, [][]int32{{18, 17, 20, 19}, {20, 19}, {16}, {23}}},
		{"no AES key", fakeEtypeKDC{held: []int32{23}},
			[]int32{23}, [][]int32{{18, 17, 20, 19}, {16}, {23}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &OnlineClient{Config: &Config{Config: config.New()}, Exchange: tc.kdc.exchange(t)}
			keys, missing, err := c.probeKeys(context.Background(), "R", cname, keyEnctypes)
			if err != nil {
				t.Fatal(err)
			}
			var got []int32
			for _, k := range keys {
				got = append(got, k.Enctype)
				if k.Salt != "Rsvc" || !k.DefaultSalt {
					t.Errorf("key %+v: want the default salt Rsvc", k)
				}
			}
			if !slices.Equal(got, tc.wantKeys) {
				t.Errorf("keys %v, want %v", got, tc.wantKeys)
			}
			if len(missing)+len(keys) != len(keyEnctypes) || slices.ContainsFunc(missing, func(et int32) bool { return slices.Contains(got, et) }) {
				t.Errorf("missing %v does not complete keys %v", missing, got)
			}
			if !slices.EqualFunc(tc.kdc.asked, tc.wantAsked, slices.Equal[[]int32]) {
				t.Errorf("requests %v, want %v", tc.kdc.asked, tc.wantAsked)
			}
		})
	}
}
