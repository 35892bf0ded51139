package kdcops

// Kerberos primitives of a key rotation (the rotate package drives them):
// deriving a new keytab from a password with the salts the KDC reports.
// Changing a key over the kpasswd protocol (RFC 3244) is kpasswd.go.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
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

// keyEnctypes are the enctypes a key change can give a principal that
// krbops can derive keys for: the AES families, des3 and rc4.
var keyEnctypes = []int32{18, 17, 20, 19, 16, 23}

// KDCKeys asks the KDC which enctypes and salts it holds for the
// principal now, with AS-REQs without pre-authentication (the KDC's
// ETYPE-INFO2 answers for the current kvno; see probeKeys). A rotation asks again
// after the key change: MIT gives a changed password the realm's
// supported_enctypes with the normal salt, whatever the old keys were.
func (c *OnlineClient) KDCKeys(ctx context.Context, realm string, components []string) ([]KDCKey, error) {
	cname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: components}
	out, _, err := c.probeKeys(ctx, realm, cname, keyEnctypes)
	if err != nil {
		return nil, err
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
