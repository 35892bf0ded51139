package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// Kadmin runs one kadmin.local query (getprinc, modprinc, cpw -randkey,
// delprinc -force, ...) directly on the database and returns its output.
// kadmin.local exits 0 even when a query fails, so any unexpected line on
// its stderr is an error too. Do not put passwords in query: it becomes
// argv; AddPrincipal feeds them on stdin instead.
func (r *Realm) Kadmin(ctx context.Context, query string) (string, error) {
	if r.Kind != MIT {
		return "", r.onlyOn("Kadmin (kadmin.local)", MIT)
	}
	return r.kadminLocal(ctx, query, "")
}

// KadminBatch runs many kadmin.local queries in one process, fed on stdin:
// a thousand principals, or 256 key changes to pass kvno 255, take well
// under a second this way and minutes one process at a time. Errors as
// for Kadmin; queries must hold no passwords.
func (r *Realm) KadminBatch(ctx context.Context, queries []string) error {
	if r.Kind != MIT {
		return r.onlyOn("KadminBatch (kadmin.local)", MIT)
	}
	stdout, stderr, err := runTool(ctx, r.env(r.KDCProfile), r.Dir, strings.Join(queries, "\n")+"\nquit\n", "kadmin.local", "-r", r.Name)
	return kadminResult(fmt.Sprintf("batch of %d queries", len(queries)), stdout, stderr, err)
}

func (r *Realm) kadminLocal(ctx context.Context, query, stdin string) (string, error) {
	stdout, stderr, err := runTool(ctx, r.env(r.KDCProfile), r.Dir, stdin, "kadmin.local", "-r", r.Name, "-q", query)
	return cleanKadminOut(stdout), kadminResult(fmt.Sprintf("%q", query), stdout, stderr, err)
}

// kadminResult is kadmin.local's verdict: it exits 0 even when a query
// fails, so any unexpected stderr line is an error too.
func kadminResult(what, stdout, stderr string, err error) error {
	if err != nil {
		return err
	}
	var bad []string
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || benignKadminLine(line) {
			continue
		}
		bad = append(bad, line)
	}
	if len(bad) > 0 {
		return fmt.Errorf("lab: kadmin.local %s: %s", what, strings.Join(bad, "; "))
	}
	return nil
}

func benignKadminLine(l string) bool {
	for _, p := range []string{
		"No policy specified for ",
		"WARNING: no policy specified for ",
		"Authenticating as principal ",
		"Enter password for principal ",
		"Re-enter password for principal ",
	} {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}

func cleanKadminOut(s string) string {
	var keep []string
	for _, line := range strings.Split(s, "\n") {
		if benignKadminLine(strings.TrimSpace(line)) {
			continue
		}
		keep = append(keep, line)
	}
	return strings.TrimLeft(strings.Join(keep, "\n"), "\n")
}

func checkWord(what, s string) error {
	if s == "" || strings.ContainsAny(s, " \t\r\n\"'\\") {
		return fmt.Errorf("lab: bad %s %q (empty, or contains space, quote or backslash)", what, s)
	}
	return nil
}

// mitAddPrincipal creates principal name (the realm is appended when missing).
// An empty password gives it random keys (-randkey); otherwise the password
// is typed into kadmin.local's prompts on stdin, never put in argv.
// New principals require pre-authentication (default_principal_flags =
// +preauth), as in a production realm.
func (r *Realm) mitAddPrincipal(ctx context.Context, name, password string) error {
	if err := checkWord("principal", name); err != nil {
		return err
	}
	if password == "" {
		_, err := r.kadminLocal(ctx, "addprinc -randkey "+name, "")
		return err
	}
	if strings.ContainsAny(password, "\r\n") {
		return fmt.Errorf("lab: AddPrincipal %s: password contains a newline", name)
	}
	_, err := r.kadminLocal(ctx, "addprinc "+name, password+"\n"+password+"\n")
	return err
}

// KeytabOptions refine KeytabWith.
type KeytabOptions struct {
	// Enctypes restricts and sets the new keys, e.g. "rc4-hmac",
	// "aes256-cts-hmac-sha1-96:normal" (":normal" is added when no salt is
	// given). Empty: the realm's SupportedEnctypes.
	Enctypes []string
	// NoRandKey exports the current keys instead of randomizing them (kvno
	// unchanged). It cannot be combined with Enctypes.
	NoRandKey bool
}

// Keytab exports principal's keys to the keytab file at path (appending if
// it exists) with kadmin.local ktadd, which randomizes the keys and bumps
// the kvno; enctypes, when given, choose the new keys (e.g. "rc4-hmac").
func (r *Realm) Keytab(ctx context.Context, principal, path string, enctypes ...string) error {
	return r.KeytabWith(ctx, principal, path, KeytabOptions{Enctypes: enctypes})
}

// KeytabWith is Keytab with all of ktadd's options.
func (r *Realm) KeytabWith(ctx context.Context, principal, path string, o KeytabOptions) error {
	if r.Kind != MIT {
		return r.onlyOn("Keytab (kadmin.local ktadd; use ExportKeytab)", MIT)
	}
	if err := checkWord("principal", principal); err != nil {
		return err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if err := checkWord("keytab path", abs); err != nil {
		return err
	}
	if o.NoRandKey && len(o.Enctypes) > 0 {
		return fmt.Errorf("lab: Keytab %s: NoRandKey cannot be combined with Enctypes (ktadd refuses)", principal)
	}
	q := "ktadd -k " + abs
	if o.NoRandKey {
		q += " -norandkey"
	}
	want := map[string]bool{}
	if len(o.Enctypes) > 0 {
		var ks []string
		for _, e := range o.Enctypes {
			if err := checkWord("enctype", e); err != nil {
				return err
			}
			if !strings.Contains(e, ":") {
				e += ":normal"
			}
			ks = append(ks, e)
			enc, _, _ := strings.Cut(e, ":")
			want[enc] = true
		}
		q += " -e " + strings.Join(ks, ",")
	}
	out, err := r.kadminLocal(ctx, q+" "+principal, "")
	if err != nil {
		return err
	}
	added := strings.Count(out, "added to keytab")
	switch {
	case added == 0:
		return fmt.Errorf("lab: ktadd %s wrote no key: %s", principal, strings.TrimSpace(out))
	case len(want) > 0 && added != len(want):
		// kadmin silently drops keysalts it does not know.
		return fmt.Errorf("lab: ktadd %s -e %s: kadmin wrote %d key(s), want %d (unknown enctype?): %s",
			principal, strings.Join(o.Enctypes, ","), added, len(want), strings.TrimSpace(out))
	}
	return nil
}
