package kdcops_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/kdcops"
)

// The KDC's answers the online check must classify without a lab: a
// principal the KDC does not know, one it refuses, a reply that is not
// Kerberos, and no KDC at all. Real exchanges are in test/integration.
func TestOnlineCheckClassifies(t *testing.T) {
	entries, err := kdcops.ParseKeytab(ktBytes(2, entry("host/a", 2, 18)), kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	krbErr := func(code int32) []byte {
		ke := messages.NewKRBError(types.PrincipalName{}, "EXAMPLE.COM", code, "")
		b, err := ke.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	unreachable := &kdcops.UnreachableError{KDC: "kdc1", Transport: kdcops.UDP, Err: errors.New("refused")}
	for _, tc := range []struct {
		name    string
		reply   []byte
		err     error
		unknown bool
		refused string
		wantErr bool
	}{
		{"unknown", krbErr(errorcode.KDC_ERR_C_PRINCIPAL_UNKNOWN), nil, true, "", false},
		{"revoked", krbErr(errorcode.KDC_ERR_CLIENT_REVOKED), nil, false, "KDC_ERR_CLIENT_REVOKED", false},
		{"not kerberos", []byte("HTTP/1.1 400"), nil, false, "", true},
		{"unreachable", nil, unreachable, false, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requests := 0
			c := &kdcops.OnlineClient{
				Config: &kdcops.Config{Config: config.New()},
				Exchange: func(ctx context.Context, realm string, req []byte) ([]byte, error) {
					requests++
					if realm != "EXAMPLE.COM" {
						t.Errorf("realm %q", realm)
					}
					return tc.reply, tc.err
				},
			}
			res, err := c.Check(context.Background(), entries.Entries)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if tc.wantErr {
				if tc.err != nil && !errors.As(err, new(*kdcops.UnreachableError)) {
					t.Errorf("err = %v, want the UnreachableError", err)
				}
				return
			}
			if res.Unknown != tc.unknown || res.Refused != tc.refused || requests != 1 {
				t.Errorf("result %+v after %d requests", res, requests)
			}
		})
	}
}
