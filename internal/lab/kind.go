package lab

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Kind is a KDC implementation the lab can run. Tests that must hold on
// every implementation operators run loop over Kinds().
type Kind string

const (
	// MIT is MIT krb5 (krb5kdc, kadmind, kpasswd inside kadmind).
	MIT Kind = "mit"
	// Heimdal is Heimdal's kdc and kpasswdd, unpacked privately from
	// Debian's packages (they conflict with MIT's).
	Heimdal Kind = "heimdal"
	// AD is Active Directory as a Samba AD DC (Samba's bundled Heimdal
	// KDC and kpasswd service) with a provisioned domain.
	AD Kind = "ad"
)

// Kinds lists every kind, MIT first.
func Kinds() []Kind { return []Kind{MIT, Heimdal, AD} }

// ParseKind reads a kind name: "mit", "heimdal" or "ad" ("samba" is AD).
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "mit":
		return MIT, nil
	case "heimdal":
		return Heimdal, nil
	case "ad", "samba":
		return AD, nil
	}
	return "", fmt.Errorf("lab: unknown KDC kind %q (want %s)", s, kindList())
}

func kindList() string {
	var s []string
	for _, k := range Kinds() {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

// onlyOn is the error of an operation one kind of realm does not have.
func (r *Realm) onlyOn(op string, kinds ...Kind) error {
	var s []string
	for _, k := range kinds {
		s = append(s, string(k))
	}
	return fmt.Errorf("lab: %s is only for %s realms, this one is %s", op, strings.Join(s, "/"), r.Kind)
}

// AddPrincipal creates principal name (the realm is appended when
// missing) with password, or random keys when password is empty. The
// password is never put in argv. MIT and Heimdal principals require
// pre-authentication, as in a production realm; on AD name is a user
// account (sAMAccountName, e.g. "svc-web" for svc-web@REALM).
func (r *Realm) AddPrincipal(ctx context.Context, name, password string) error {
	switch r.Kind {
	case Heimdal:
		return r.heimdalAddPrincipal(ctx, name, password)
	case AD:
		return r.adAddPrincipal(ctx, name, password)
	}
	return r.mitAddPrincipal(ctx, name, password)
}

// ExportKeytab writes principal's current keys to the keytab file at path
// (appending when it exists) without changing them: the kvno stays.
func (r *Realm) ExportKeytab(ctx context.Context, principal, path string) error {
	switch r.Kind {
	case Heimdal:
		return r.heimdalExportKeytab(ctx, principal, path)
	case AD:
		return r.adExportKeytab(ctx, principal, path)
	}
	return r.KeytabWith(ctx, principal, path, KeytabOptions{NoRandKey: true})
}

// KVNO returns the key version number the realm's database holds for
// principal now (MIT/Heimdal: the principal's newest key; AD:
// msDS-KeyVersionNumber).
func (r *Realm) KVNO(ctx context.Context, principal string) (uint32, error) {
	switch r.Kind {
	case Heimdal:
		return r.heimdalKVNO(ctx, principal)
	case AD:
		return r.adKVNO(ctx, principal)
	}
	out, err := r.Kadmin(ctx, "getprinc "+principal)
	if err != nil {
		return 0, err
	}
	return kvnoIn(out, mitKeyVno, principal)
}

// SetPassword sets principal's password as the realm's administrator
// would (the kvno rises by one); an empty password sets random keys.
func (r *Realm) SetPassword(ctx context.Context, principal, password string) error {
	switch r.Kind {
	case Heimdal:
		return r.heimdalSetPassword(ctx, principal, password)
	case AD:
		return r.adSetPassword(ctx, principal, password)
	}
	if err := checkWord("principal", principal); err != nil {
		return err
	}
	if password == "" {
		_, err := r.Kadmin(ctx, "cpw -randkey "+principal)
		return err
	}
	if strings.ContainsAny(password, "\r\n") {
		return fmt.Errorf("lab: SetPassword %s: password contains a newline", principal)
	}
	_, err := r.kadminLocal(ctx, "cpw "+principal, password+"\n"+password+"\n")
	return err
}

// mitKeyVno matches getprinc's key lines: "Key: vno 3, aes256-cts-hmac-sha1-96".
var mitKeyVno = regexp.MustCompile(`(?m)^Key: vno (\d+),`)

// kvnoIn returns the highest kvno re's first group finds in out.
func kvnoIn(out string, re *regexp.Regexp, principal string) (uint32, error) {
	var best uint64
	found := false
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		v, err := strconv.ParseUint(m[1], 10, 32)
		if err != nil {
			continue
		}
		if !found || v > best {
			best, found = v, true
		}
	}
	if !found {
		return 0, fmt.Errorf("lab: no kvno for %s in: %s", principal, strings.TrimSpace(out))
	}
	return uint32(best), nil
}

// DefaultADRealm is the AD realm (and DNS domain, upper-cased) when
// Options.Realm is empty.
const DefaultADRealm = "AD.TEST"

// AddComputer creates an AD computer account name (e.g. "HOST1") with a
// random password, as a domain join does, and returns its principal
// ("HOST1$@REALM"). AD only.
func (r *Realm) AddComputer(ctx context.Context, name string) (string, error) {
	if r.Kind != AD {
		return "", r.onlyOn("AddComputer", AD)
	}
	return r.adAddComputer(ctx, name)
}

// AddSPN registers spn (e.g. "HTTP/web.ad.test") on the AD account
// (sAMAccountName): tickets for spn are then encrypted with the
// account's keys. AD only.
func (r *Realm) AddSPN(ctx context.Context, account, spn string) error {
	if r.Kind != AD {
		return r.onlyOn("AddSPN", AD)
	}
	return r.adAddSPN(ctx, account, spn)
}
