package kdcops

import (
	"fmt"
	"os"
	"strings"

	"github.com/jcmturner/gokrb5/v8/credentials"
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
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("credential cache %s: %s", path, describeOpenError(err))
	}
	var cc credentials.CCache
	if err := cc.Unmarshal(data); err != nil {
		return "", fmt.Errorf("credential cache %s: corrupt (%s)", path, lowerFirst(err.Error()))
	}
	name := cc.DefaultPrincipal.PrincipalName.PrincipalNameString()
	if name == "" {
		return "", fmt.Errorf("credential cache %s: no default principal", path)
	}
	return name + "@" + cc.DefaultPrincipal.Realm, nil
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
