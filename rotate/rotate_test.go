package rotate

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
)

const kdcLog = `Nov 23 12:36:09 vm krb5kdc[1](info): AS_REQ (1 etypes {aes256-cts-hmac-sha1-96(18)}) 127.0.0.1: NEEDED_PREAUTH: alice@R for krbtgt/R@R, Additional pre-authentication required
Nov 23 12:36:09 vm krb5kdc[1](info): AS_REQ (1 etypes {aes256-cts-hmac-sha1-96(18)}) 127.0.0.1: ISSUE: authtime 1000, etypes {rep=aes256-cts-hmac-sha1-96(18), tkt=aes256-cts-hmac-sha1-96(18), ses=aes256-cts-hmac-sha1-96(18)}, alice@R for krbtgt/R@R
Nov 23 12:36:09 vm krb5kdc[1](info): AS_REQ (1 etypes {aes256-cts-hmac-sha1-96(18)}) 127.0.0.1: ISSUE: authtime 3000, etypes {rep=aes256-cts-hmac-sha1-96(18), tkt=aes256-cts-hmac-sha1-96(18), ses=aes256-cts-hmac-sha1-96(18)}, alice@R for kadmin/changepw@R
Nov 23 12:36:09 vm krb5kdc[1](info): TGS_REQ (1 etypes {aes256-cts-hmac-sha1-96(18)}) 127.0.0.1: ISSUE: authtime 4000, etypes {rep=aes256-cts-hmac-sha1-96(18), tkt=aes256-cts-hmac-sha1-96(18), ses=aes256-cts-hmac-sha1-96(18)}, alice@R for krbtgt/R@R
Nov 23 12:36:09 vm krb5kdc[1](info): AS_REQ (1 etypes {aes256-cts-hmac-sha1-96(18)}) 127.0.0.1: ISSUE: authtime 2000, etypes {rep=aes256-cts-hmac-sha1-96(18), tkt=aes256-cts-hmac-sha1-96(18), ses=aes256-cts-hmac-sha1-96(18)}, alice@R for krbtgt/R@R
Nov 23 12:36:09 vm krb5kdc[1](info): AS_REQ (1 etypes {aes256-cts-hmac-sha1-96(18)}) 127.0.0.1: ISSUE: authtime 2500, etypes {rep=aes256-cts-hmac-sha1-96(18), tkt=aes256-cts-hmac-sha1-96(18), ses=aes256-cts-hmac-sha1-96(18)}, alice2@R for krbtgt/R@R
Nov 23 12:36:09 vm krb5kdc[1](info): AS_REQ (1 etypes {aes256-cts-hmac-sha1-96(18)}) 127.0.0.1: ISSUE: authtime 9000, etypes {rep=aes256-cts-hmac-sha1-96(18), tkt=aes256-cts-hmac-sha1-96(18), ses=aes256-cts-hmac-sha1-96(18)}, alice@R for krbtgt/R@R
`

// Only TGTs from AS exchanges count, for this exact principal, and not
// krbops' own logins of this run (authtime >= before).
func TestLastLogin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kdc.log")
	if err := os.WriteFile(path, []byte(kdcLog), 0o600); err != nil {
		t.Fatal(err)
	}
	at, found, err := LastLogin([]string{path}, "alice@R", time.Unix(9000, 0))
	if err != nil || !found || at.Unix() != 2000 {
		t.Fatalf("LastLogin = %v %v %v, want authtime 2000", at.Unix(), found, err)
	}
	if _, found, _ := LastLogin([]string{path}, "bob@R", time.Unix(9000, 0)); found {
		t.Error("found a login of a principal that never logged in")
	}
	if _, _, err := LastLogin([]string{filepath.Join(t.TempDir(), "missing")}, "alice@R", time.Now()); err == nil {
		t.Error("a missing log is not an error")
	}
}

// A batch's index answers as LastLogin does for every principal, from
// one read of the logs.
func TestIndexLoginsAgreesWithLastLogin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kdc.log")
	if err := os.WriteFile(path, []byte(kdcLog), 0o600); err != nil {
		t.Fatal(err)
	}
	idx, err := IndexLogins([]string{path}, time.Unix(9000, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"alice@R", "alice2@R", "bob@R"} {
		want, wantOK, _ := LastLogin([]string{path}, p, time.Unix(9000, 0))
		if got, ok := idx.Last(p); ok != wantOK || !got.Equal(want) {
			t.Errorf("%s: index %v %v, LastLogin %v %v", p, got.Unix(), ok, want.Unix(), wantOK)
		}
	}
	if _, err := IndexLogins([]string{filepath.Join(t.TempDir(), "missing")}, time.Now()); err == nil {
		t.Error("a missing log is not an error")
	}
}

// Issue 10: the newest login over live, rotated and gzipped logs of
// several KDCs counts; a FIFO is refused, not waited on.
func TestLastLoginRotatedAndGzipped(t *testing.T) {
	dir := t.TempDir()
	line := func(authtime int) string {
		return fmt.Sprintf("Nov 23 12:36:09 vm krb5kdc[1](info): AS_REQ (1 etypes {aes256-cts-hmac-sha1-96(18)}) 127.0.0.1: ISSUE: authtime %d, etypes {rep=aes256-cts-hmac-sha1-96(18), tkt=aes256-cts-hmac-sha1-96(18), ses=aes256-cts-hmac-sha1-96(18)}, alice@R for krbtgt/R@R\n", authtime)
	}
	live := filepath.Join(dir, "kdc.log")
	os.WriteFile(live, []byte(line(1000)), 0o600)
	rotated := filepath.Join(dir, "kdc.log.1")
	os.WriteFile(rotated, []byte(line(2000)), 0o600)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(line(3000) + line(500)))
	zw.Close()
	old := filepath.Join(dir, "kdc2.log.2.gz")
	os.WriteFile(old, gz.Bytes(), 0o600)

	at, found, err := LastLogin([]string{live, rotated, old}, "alice@R", time.Unix(9000, 0))
	if err != nil || !found || at.Unix() != 3000 {
		t.Fatalf("LastLogin = %v %v %v, want authtime 3000 from the gzipped log", at.Unix(), found, err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LastLogin([]string{fifo}, "alice@R", time.Now()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("fifo: %v", err)
	}
}

// The journal holds a password and keys: 0600 in a 0700 directory, no
// temp file left, and never in its String.
func TestJournalSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "journal")
	j := &Journal{ID: "abc", Principal: "HTTP/web1@R", Role: Server, Password: "s3cret-pw", Pending: []byte{5, 2}, State: StateCreated,
		KDCKeys: []kdcops.KDCKey{{Enctype: 18, Salt: "RHTTPweb1"}}}
	if err := j.save(dir, time.Unix(5, 0)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(JournalPath(dir, "HTTP/web1@R"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("journal mode %v %v, want 0600", fi, err)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("journal dir mode %v, want 0700", di.Mode().Perm())
	}
	got, err := LoadJournal(dir, "HTTP/web1@R")
	if err != nil || got.Password != "s3cret-pw" || got.State != StateCreated || got.KDCKeys[0].Salt != "RHTTPweb1" {
		t.Fatalf("LoadJournal = %+v %v", got, err)
	}
	if strings.Contains(got.String(), "s3cret") {
		t.Errorf("String leaks the password: %s", got)
	}
	all, err := ListJournals(dir)
	if err != nil || len(all) != 1 || all[0].Principal != "HTTP/web1@R" {
		t.Errorf("ListJournals = %v %v", all, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d files, want the journal only", len(ents))
	}
	if err := removeJournal(dir, "HTTP/web1@R"); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadJournal(dir, "HTTP/web1@R"); err != ErrNoJournal {
		t.Errorf("after remove: %v, want ErrNoJournal", err)
	}
}

func TestNewPasswordIsStrongAndPromptSafe(t *testing.T) {
	a, b := NewPassword(), NewPassword()
	if a == b || len(a) < 50 || strings.ContainsAny(a, "\r\n \t") {
		t.Errorf("passwords %q %q: want distinct, >= 50 characters, no whitespace", a, b)
	}
	// AD's complexity rule (upper, lower, digit, symbol; length >= 24)
	// and its account-name rule (no run of three letters can spell one),
	// on many draws; and only characters every KDC's path keeps as typed.
	seen := map[byte]bool{}
	for range 2000 {
		pw := NewPassword()
		if len(pw) < 24 {
			t.Fatalf("password of %d characters", len(pw))
		}
		var upper, lower, digit, symbol bool
		for i := 0; i < len(pw); i++ {
			c := pw[i]
			seen[c] = true
			switch {
			case c >= 'A' && c <= 'Z':
				upper = true
			case c >= 'a' && c <= 'z':
				lower = true
			case c >= '0' && c <= '9':
				digit = true
			case strings.IndexByte("-_.+=:,", c) >= 0:
				symbol = true
			default:
				t.Fatalf("password holds %q, outside the safe alphabet", c)
			}
			if i >= 2 && isLetter(pw[i-2]) && isLetter(pw[i-1]) && isLetter(c) {
				t.Fatalf("three letters in a row at %d", i-2)
			}
		}
		if !upper || !lower || !digit || !symbol {
			t.Fatalf("a password lacks a character class: upper %v lower %v digit %v symbol %v", upper, lower, digit, symbol)
		}
	}
	// Every character of the alphabet turns up: the draw is not stuck on
	// part of it.
	if len(seen) != len(passwordLetters)+len(passwordOthers) {
		t.Errorf("%d distinct characters in 2000 passwords, want %d", len(seen), len(passwordLetters)+len(passwordOthers))
	}
}

func isLetter(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }

func writeConf(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "krb5.conf")
	if err := os.WriteFile(p, []byte("[libdefaults]\n default_realm = R\n[realms]\n R = {\n  kdc = 127.0.0.1:1\n }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Issue 10: the realm's own principals can never be rotated.
func TestDenied(t *testing.T) {
	for _, tc := range []struct {
		principal string
		extra     []string
		want      string
	}{
		{"krbtgt/EXAMPLE.COM@EXAMPLE.COM", nil, "krbtgt/*"},
		{"KRBTGT/EXAMPLE.COM@EXAMPLE.COM", nil, "krbtgt/*"},
		{"kadmin/admin@EXAMPLE.COM", nil, "kadmin/*"},
		{"kadmin/changepw@EXAMPLE.COM", nil, "kadmin/*"},
		{"K/M@EXAMPLE.COM", nil, "K/M"},
		{"kiprop/kdc2.example.com@EXAMPLE.COM", nil, "kiprop/*"},
		{"changepw/kerberos@EXAMPLE.COM", nil, "changepw/*"},
		{"HTTP/web1.example.com@EXAMPLE.COM", nil, ""},
		{"krbtgtx@EXAMPLE.COM", nil, ""},
		{"svc-payments@EXAMPLE.COM", []string{"svc-pay*"}, "svc-pay*"},
		{"svc-payments@EXAMPLE.COM", []string{"*@OTHER.COM"}, ""},
		{"svc-payments@OTHER.COM", []string{"*@OTHER.COM"}, "*@OTHER.COM"},
	} {
		got, denied := Denied(tc.principal, tc.extra)
		if got != tc.want || denied != (tc.want != "") {
			t.Errorf("Denied(%q, %q) = %q %v, want %q", tc.principal, tc.extra, got, denied, tc.want)
		}
	}
	if err := ValidDenyPattern("svc-[a"); err == nil {
		t.Error("a malformed pattern was accepted")
	}
}

// Issue 14: the pre-check reads Heimdal's KDC log too (a recorded one):
// the last TGT, not kpasswd's later kadmin/changepw ticket.
func TestLastLoginHeimdal(t *testing.T) {
	path := filepath.Join("..", "kdcops", "kdclog", "testdata", "heimdal-kdc.log")
	at, found, err := LastLogin([]string{path}, "alice@H.TEST", time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	want := time.Date(2026, 12, 2, 6, 43, 52, 0, time.Local)
	if err != nil || !found || !at.Equal(want) {
		t.Fatalf("LastLogin = %v %v %v, want %v", at, found, err, want)
	}
	if _, found, _ := LastLogin([]string{path}, "nobody@H.TEST", time.Now()); found {
		t.Error("a refused login (UNKNOWN) counted as a login")
	}
}

// A kpasswd refusal's own hint reaches the operator in set.kdc, ahead of
// the resume advice.
func TestSetKDCCarriesTheKpasswdHint(t *testing.T) {
	g := newRig(t, Client, BackendKpasswd)
	refusal := &kdcops.KpasswdError{Server: "kdc1:464", Code: 4, Name: "KRB5_KPASSWD_SOFTERROR", Self: true,
		Result: "Password is too young to change"}
	g.kdc.FailNextChange(refusal)
	rep := g.run(false, "").rep
	wantSteps(t, rep, StepSet, runbook.Error)
	for _, s := range rep.Steps {
		if s.ID != StepSet {
			continue
		}
		if !strings.Contains(s.Message, "Password is too young to change") || !strings.HasPrefix(s.Hint, refusal.Hint()) ||
			!strings.Contains(s.Hint, "rotate --resume") {
			t.Errorf("set.kdc message %q, hint %q: want the refusal and its hint, then the resume advice", s.Message, s.Hint)
		}
	}
}
