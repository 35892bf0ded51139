package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jcmturner/gokrb5/v8/keytab"
)

// ExportServiceKeytab writes the current keys of the AD account (a user or
// computer account, e.g. "svc-web" or "HOST1$") to the keytab at path
// (appending when it exists) under the account's own principal and under
// each of its SPNs, with the same kvno: the keytab adcli, msktutil and
// `net ads keytab create` give a service on an AD domain. A server with it
// accepts tickets for any of the names; tickets for an SPN are encrypted
// in the account's keys. (Samba's exportkeytab of an SPN writes only the
// rc4 key, and an export of the account only the account's name.)
func (r *Realm) ExportServiceKeytab(ctx context.Context, account, path string) error {
	if r.Kind != AD {
		return r.onlyOn("ExportServiceKeytab", AD)
	}
	acct, err := r.adAccount(account)
	if err != nil {
		return err
	}
	out, err := samdb(ctx, r.ad.conf, "", "spns", acct)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(r.Dir, "export-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	own := filepath.Join(tmp, "account.keytab")
	if err := r.adExportKeytab(ctx, acct, own); err != nil {
		return err
	}
	kt, err := keytab.Load(own)
	if err != nil {
		// gokrb5's keytab errors can hold key bytes: never show them.
		return fmt.Errorf("lab: the keytab samba exported for %s does not parse", account)
	}
	base := kt.Entries
	for _, spn := range strings.Fields(out) {
		for _, e := range base {
			e.Principal.Components = strings.Split(spn, "/")
			e.Principal.NumComponents = int16(len(e.Principal.Components))
			kt.Entries = append(kt.Entries, e)
		}
	}
	if _, err := os.Stat(path); err == nil {
		old, err := keytab.Load(path)
		if err != nil {
			return fmt.Errorf("lab: ExportServiceKeytab: %s is not a keytab it can append to", path)
		}
		kt.Entries = append(old.Entries, kt.Entries...)
	}
	b, err := kt.Marshal()
	if err != nil {
		return fmt.Errorf("lab: ExportServiceKeytab %s: encoding the keytab failed", account)
	}
	return os.WriteFile(path, b, 0o600)
}
