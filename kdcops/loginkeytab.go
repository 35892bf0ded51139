package kdcops

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/jcmturner/gokrb5/v8/keytab"
)

// GokrbKeytab hands entries (read with KeepKeys, one kvno only) to gokrb5
// as its own keytab type, for the gokrb5 clients krbops drives (SPNEGO,
// kpasswd, Kerberos-backed AWS credentials). One kvno because gokrb5 picks
// a login key by timestamp and fails on old and new kvno written in the
// same second (DESIGN.md). gokrb5's parse errors quote the buffer, which
// holds keys, so its error never passes through.
func GokrbKeytab(entries []KeytabEntry) (*keytab.Keytab, error) {
	if len(entries) == 0 {
		return nil, errors.New("no keys to log in with")
	}
	if len(KVNOs(entries)) != 1 {
		return nil, errors.New("a login keytab must hold exactly one kvno")
	}
	raw, err := MarshalKeytab(entries)
	if err != nil {
		return nil, err
	}
	kt := keytab.New()
	if err := kt.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("gokrb5 could not load the keys of %s", entries[0].Principal)
	}
	return kt, nil
}

// LoadLoginKeytab reads the keytab at path and returns, as a gokrb5 keytab,
// principal's entries of its newest kvno, with that kvno. principal is
// name@REALM; without a realm any realm matches.
func LoadLoginKeytab(path, principal string) (*keytab.Keytab, uint32, error) {
	keys, kvno, err := LoadLoginKeys(path, principal)
	if err != nil {
		return nil, 0, err
	}
	gk, err := GokrbKeytab(keys)
	return gk, kvno, err
}

// LoadLoginKeys is LoadLoginKeytab's entries (with their keys), for
// [OnlineClient.LoginTGT].
func LoadLoginKeys(path, principal string) ([]KeytabEntry, uint32, error) {
	kt, err := ReadKeytabFile(path, KeytabOptions{KeepKeys: true})
	if err != nil {
		var fe *FormatError
		var pe *os.PathError
		switch {
		case errors.As(err, &fe):
			return nil, 0, fmt.Errorf("keytab %s: not a readable keytab (truncated or another format)", path)
		case errors.As(err, &pe):
			return nil, 0, fmt.Errorf("keytab %s: %s", path, pe.Err)
		}
		return nil, 0, err
	}
	name, realm := SplitPrincipal(principal)
	var mine []KeytabEntry
	for _, e := range kt.Entries {
		if strings.Join(e.Components, "/") == name && (realm == "" || strings.EqualFold(e.Realm, realm)) {
			mine = append(mine, e)
		}
	}
	kvnos := KVNOs(mine)
	if len(kvnos) == 0 {
		return nil, 0, fmt.Errorf("keytab %s has no key for %s", path, principal)
	}
	newest := kvnos[len(kvnos)-1]
	return AtKVNO(mine, newest), newest, nil
}
