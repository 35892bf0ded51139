package kdcops

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"github.com/jcmturner/gokrb5/v8/credentials"

	"github.com/krbops/krbops/internal/readcap"
)

// CCachePath resolves the credential cache the way MIT tools do for FILE:
// caches: the flag, then $KRB5CCNAME, then /tmp/krb5cc_<uid>. Other cache
// types (KEYRING:, KCM:, DIR:, API:, MEMORY:) are returned as an error
// because gokrb5 cannot read them.
func CCachePath(flagValue string, getenv func(string) string) (string, error) {
	name := flagValue
	if name == "" {
		name = getenv("KRB5CCNAME")
	}
	if name == "" {
		return fmt.Sprintf("/tmp/krb5cc_%d", os.Getuid()), nil
	}
	if rest, ok := strings.CutPrefix(name, "FILE:"); ok {
		return rest, nil
	}
	if typ, _, ok := strings.Cut(name, ":"); ok && !strings.Contains(typ, "/") {
		return "", fmt.Errorf("credential cache %s: %s: caches are not supported", name, typ)
	}
	return name, nil
}

// CCachePrincipal returns the default principal of a FILE: ccache.
//
// gokrb5's parser panics on truncated input (see DESIGN.md); the panic is
// turned into an error naming the file so a corrupt cache never crashes a
// run.
func CCachePrincipal(path string) (principal string, err error) {
	defer func() {
		if p := recover(); p != nil {
			principal, err = "", fmt.Errorf("credential cache %s: corrupt or truncated", path)
		}
	}()
	// The default cache path is a guess ($KRB5CCNAME, /tmp/krb5cc_<uid>):
	// whatever sits there is read with the cap and never waited on.
	data, err := readcap.ReadFile(path, maxKeytabFile)
	if err != nil {
		return "", fmt.Errorf("credential cache %s: %s", path, describeOpenError(err))
	}
	// gokrb5 also parses the credentials, sizing slices from counts in the
	// file: a corrupt count makes it allocate tens of GiB and the runtime
	// abort, which no recover catches. Only the header and the default
	// principal are needed, so only they are handed over.
	n, ok := ccacheHeadLen(data)
	if !ok {
		return "", fmt.Errorf("credential cache %s: corrupt or truncated", path)
	}
	var cc credentials.CCache
	if err := cc.Unmarshal(data[:n]); err != nil {
		return "", fmt.Errorf("credential cache %s: corrupt (%s)", path, lowerFirst(err.Error()))
	}
	name := cc.DefaultPrincipal.PrincipalName.PrincipalNameString()
	if name == "" {
		return "", fmt.Errorf("credential cache %s: no default principal", path)
	}
	return name + "@" + cc.DefaultPrincipal.Realm, nil
}

// ccacheHeadLen returns the length of a FILE ccache's header and default
// principal (MIT ccache_file_format), or false when the data ends inside
// them. Data without the 0x05 0x01..0x04 magic is returned whole: gokrb5
// rejects it before parsing anything.
func ccacheHeadLen(b []byte) (int, bool) {
	if len(b) < 2 || b[0] != 5 || b[1] < 1 || b[1] > 4 {
		return len(b), true
	}
	version := b[1]
	var order binary.ByteOrder = binary.BigEndian
	if version <= 2 {
		order = binary.NativeEndian // as gokrb5 reads versions 1 and 2
	}
	p := 2
	skip := func(n uint64) bool {
		if n > uint64(len(b)-p) {
			return false
		}
		p += int(n)
		return true
	}
	u32 := func() (uint32, bool) {
		if len(b)-p < 4 {
			return 0, false
		}
		v := order.Uint32(b[p:])
		p += 4
		return v, true
	}
	if version == 4 {
		if len(b)-p < 2 {
			return 0, false
		}
		hlen := binary.BigEndian.Uint16(b[p:])
		p += 2
		if !skip(uint64(hlen)) {
			return 0, false
		}
	}
	if version != 1 {
		if _, ok := u32(); !ok { // name type
			return 0, false
		}
	}
	count, ok := u32()
	if !ok {
		return 0, false
	}
	components := uint64(count)
	if version == 1 {
		components-- // the count includes the realm; wraps to huge for 0 and fails below
	}
	// The realm, then the components; each string costs at least four
	// bytes, so a bogus count fails after len(b)/4 rounds.
	for i := uint64(0); i <= components; i++ {
		l, ok := u32()
		if !ok || !skip(uint64(l)) {
			return 0, false
		}
	}
	return p, true
}

// HostPrincipal is host/<fqdn>, the principal a host's keytab usually holds.
// The host name is lower-cased as MIT's sname_to_principal does.
func HostPrincipal() (string, error) {
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("cannot read the host name: %w", err)
	}
	return "host/" + strings.ToLower(h), nil
}

// SplitPrincipal splits "name@REALM" into its name and realm (realm empty
// when absent).
func SplitPrincipal(p string) (name, realm string) {
	if i := strings.LastIndex(p, "@"); i >= 0 {
		return p[:i], p[i+1:]
	}
	return p, ""
}
