package kdcops

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strings"
)

// KeysFingerprint identifies a set of keytab keys — principal, kvno,
// enctype and key — whatever their order, timestamps or file layout: two
// keytabs with equal fingerprints hold the same keys. It is a hash of the
// per-key fingerprints, so it can be logged and compared across hosts
// without revealing anything about the keys.
func KeysFingerprint(entries []KeytabEntry) string {
	lines := make([]string, len(entries))
	for i, e := range entries {
		var b strings.Builder
		b.WriteString(e.Principal)
		b.WriteByte(0)
		var n [8]byte
		binary.BigEndian.PutUint32(n[:4], e.KVNO)
		binary.BigEndian.PutUint32(n[4:], uint32(e.Enctype))
		b.Write(n[:])
		b.Write(e.fingerprint[:])
		lines[i] = b.String()
	}
	slices.Sort(lines)
	lines = slices.Compact(lines)
	h := sha256.New()
	for _, l := range lines {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(l)))
		h.Write(n[:])
		h.Write([]byte(l))
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// MatchPrincipal reports whether entry e belongs to principal p: name@REALM
// matches exactly; a name without a realm matches it in any realm.
func MatchPrincipal(e KeytabEntry, p string) bool {
	name, realm := SplitPrincipal(p)
	if realm == "" {
		return strings.Join(e.Components, "/") == name
	}
	return e.Principal == p
}
