package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SupportedEnctypes are the keys a new principal gets. Weaker types (rc4-hmac,
// des3-cbc-sha1) are permitted but only created on request, e.g.
// Keytab(ctx, p, path, "rc4-hmac").
const SupportedEnctypes = "aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal"

// kdcConf renders a kdc.conf (KRB5_KDC_PROFILE) for one KDC listening on
// kdcPort (UDP and TCP) and logging to logPath. Every KDC of the realm reads
// the same database and stash.
func (r *Realm) kdcConf(kdcPort int, logPath string) string {
	d := r.Dir
	return fmt.Sprintf(`# written by krbops internal/lab; throwaway test realm
[kdcdefaults]
	kdc_listen = %[2]s
	kdc_tcp_listen = %[2]s

[realms]
	%[1]s = {
		database_name = %[3]s
		key_stash_file = %[4]s
		acl_file = %[5]s
		kadmind_listen = %[6]s
		kpasswd_listen = %[7]s
		max_life = 10h 0m 0s
		max_renewable_life = 7d 0h 0m 0s
		default_principal_flags = +preauth
		supported_enctypes = %[8]s
	}

[logging]
	kdc = FILE:%[9]s
	admin_server = FILE:%[10]s
	default = FILE:%[11]s
`, r.Name, loopback(kdcPort),
		filepath.Join(d, "principal"), filepath.Join(d, "stash"), filepath.Join(d, "kadm5.acl"),
		r.KadminAddr, r.KpasswdAddr, SupportedEnctypes,
		logPath, filepath.Join(d, "kadmind.log"), filepath.Join(d, "krb5lib.log"))
}

// krb5Conf renders a krb5.conf naming kdcAddrs, in order, as the realm's
// KDCs, and the realm's own kadmind and kpasswd.
func (r *Realm) krb5Conf(kdcAddrs []string) string {
	return r.krb5ConfWith(Krb5ConfOptions{KDCs: kdcAddrs})
}

func (r *Realm) krb5ConfWith(o Krb5ConfOptions) string {
	kdcAddrs := o.KDCs
	admin, kpasswd := r.KadminAddr, r.KpasswdAddr
	if o.AdminServer != "" {
		admin = o.AdminServer
	}
	if o.KpasswdServer != "" {
		kpasswd = o.KpasswdServer
	}
	var kdcs strings.Builder
	for _, a := range kdcAddrs {
		fmt.Fprintf(&kdcs, "\t\tkdc = %s\n", a)
	}
	// A Heimdal or AD realm runs no admin server MIT's kadmin could talk to.
	if admin != "" {
		fmt.Fprintf(&kdcs, "\t\tadmin_server = %s\n", admin)
	}
	domain := strings.ToLower(r.Name)
	return fmt.Sprintf(`# written by krbops internal/lab; throwaway test realm
[libdefaults]
	default_realm = %[1]s
	dns_lookup_kdc = false
	dns_lookup_realm = false
	dns_canonicalize_hostname = false
	rdns = false
	allow_weak_crypto = true
	allow_des3 = true
	allow_rc4 = true
	permitted_enctypes = DEFAULT des3-cbc-sha1 arcfour-hmac
	default_ccache_name = %[2]s
	default_keytab_name = FILE:%[3]s
	default_client_keytab_name = FILE:%[4]s

[realms]
	%[1]s = {
%[5]s		kpasswd_server = %[6]s
	}

[domain_realm]
	.%[7]s = %[1]s
	%[7]s = %[1]s
`, r.Name, r.CCache, filepath.Join(r.Dir, "default.keytab"), filepath.Join(r.Dir, "client.keytab"),
		kdcs.String(), kpasswd, domain)
}

// WriteKrb5Conf writes to path a krb5.conf for this realm that lists exactly
// kdcAddrs as KDCs, in that order (put DownAddr first to exercise
// fail-over). admin_server and kpasswd_server stay the realm's kadmind.
func (r *Realm) WriteKrb5Conf(path string, kdcAddrs ...string) error {
	return r.WriteKrb5ConfWith(path, Krb5ConfOptions{KDCs: kdcAddrs})
}

// Krb5ConfOptions choose the servers WriteKrb5ConfWith names.
type Krb5ConfOptions struct {
	// KDCs are the kdc lines, in order; at least one.
	KDCs []string
	// AdminServer and KpasswdServer replace the realm's kadmind and
	// kpasswd addresses, e.g. with a fault-injecting proxy in front of
	// them (internal/faultproxy). Empty: the realm's own.
	AdminServer   string
	KpasswdServer string
}

// WriteKrb5ConfWith is WriteKrb5Conf that can also name another
// admin_server and kpasswd_server.
func (r *Realm) WriteKrb5ConfWith(path string, o Krb5ConfOptions) error {
	if len(o.KDCs) == 0 {
		return fmt.Errorf("lab: WriteKrb5Conf %s: no KDC address given", path)
	}
	for _, a := range o.KDCs {
		if a == "" || strings.ContainsAny(a, " \t\n{}") {
			return fmt.Errorf("lab: WriteKrb5Conf: bad KDC address %q", a)
		}
	}
	for _, a := range []string{o.AdminServer, o.KpasswdServer} {
		if strings.ContainsAny(a, " \t\n{}") {
			return fmt.Errorf("lab: WriteKrb5Conf: bad server address %q", a)
		}
	}
	return os.WriteFile(path, []byte(r.krb5ConfWith(o)), 0o644)
}
