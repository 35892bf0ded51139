package kdcops_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
)

// Hints that show a command quote every value read from a file or the
// KDC, and show no command for a value a terminal would not display as it
// is (control characters): pasting the hint must never run anything else.
func TestLintHintsQuoteHostileValues(t *testing.T) {
	opts := kdcops.LintOptions{Now: t0.Add(time.Hour), MinRemaining: time.Hour, UID: -1}

	dir := t.TempDir()
	for _, tc := range []struct{ name, want string }{
		{"it's $(id).kt", `chmod 600 '` + filepath.Join(dir, `it'\''s $(id).kt`) + `'`},
		{"plain.kt", "chmod 600 " + filepath.Join(dir, "plain.kt") + " "},
		{"esc\x1b[2J.kt", "chmod 600 the file (and chown it"},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(p)
		f := findRule(kdcops.KeytabAccessFindings(p, fi, opts), "KT002")
		if !strings.Contains(f.Hint, tc.want) {
			t.Errorf("KT002 for %q: hint %q, want %q", tc.name, f.Hint, tc.want)
		}
	}

	evil := `svc/a$(touch pwned)b@EXAMPLE.COM`
	res := &kdcops.OnlineResult{Principal: evil, KeytabKVNO: 2, KDCKVNO: 3, KVNOKnown: true}
	f := findRule(kdcops.LintOnlineKVNO("/k/a b.kt", res, opts), "ON001")
	if want := `kadmin -q 'ktadd -norandkey -k "/k/a b.kt" "svc/a$(touch pwned)b@EXAMPLE.COM"'`; !strings.Contains(f.Hint, want) {
		t.Errorf("ON001 hint %q, want %q", f.Hint, want)
	}
	res.Principal = "svc/a\x1b]0;x\x07@EXAMPLE.COM"
	f = findRule(kdcops.LintOnlineKVNO("/k/a.kt", res, opts), "ON001")
	if strings.Contains(f.Hint, "kadmin -q") || !strings.Contains(f.Hint, "(kadmin ktadd -norandkey)") {
		t.Errorf("ON001 hint with a control character: %q", f.Hint)
	}

	cc, err := kdcops.ParseCCache(ccBytes(4, "EXAMPLE.COM", []string{"a;rm -rf ~"}), kdcops.CCacheOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f = findRule(kdcops.LintCCache("cc", cc, opts), "CC004")
	if want := `kinit 'a;rm -rf ~@EXAMPLE.COM' to get a TGT`; !strings.Contains(f.Hint, want) {
		t.Errorf("CC004 hint %q, want %q", f.Hint, want)
	}
	o := opts
	o.Principal = "x`id`@EXAMPLE.COM"
	f = findRule(kdcops.LintCCache("cc", cc, o), "CC011")
	if want := "kinit 'x`id`@EXAMPLE.COM' (or point"; !strings.Contains(f.Hint, want) {
		t.Errorf("CC011 hint %q, want %q", f.Hint, want)
	}
}

// A device or FIFO named as a keytab or cache gets no chmod or chown
// advice (chmod 600 /dev/null breaks a host); KT001/CC001 say what it is.
func TestSpecialFilesGetNoModeAdvice(t *testing.T) {
	if _, err := os.Stat("/dev/null"); err != nil {
		t.Skip("no /dev/null")
	}
	opts := kdcops.LintOptions{UID: 12345} // not root, not the owner of /dev/null
	fi, _ := os.Stat("/dev/null")
	if fs := kdcops.KeytabAccessFindings("/dev/null", fi, opts); len(fs) != 0 {
		t.Errorf("KT002/KT003 for /dev/null: %+v", fs)
	}
	if fs := kdcops.CCacheAccessFindings("/dev/null", fi, opts); len(fs) != 0 {
		t.Errorf("CC002/CC003 for /dev/null: %+v", fs)
	}
	_, err := kdcops.ReadKeytabFile("/dev/null", kdcops.KeytabOptions{})
	f := findRule(kdcops.ReadErrorFinding("keytab", "/dev/null", err, opts.Rules), "KT001")
	if f.Message != "keytab is a character device, not a regular file" || f.Evidence["file_type"] != "character device" ||
		!strings.Contains(f.Hint, "point --keytab at the file itself") || strings.Contains(f.Hint, "chmod") {
		t.Errorf("KT001 for /dev/null: %q, hint %q, evidence %v", f.Message, f.Hint, f.Evidence)
	}
	_, err = kdcops.ReadCCacheFile("/dev/null", kdcops.CCacheOptions{})
	f = findRule(kdcops.ReadErrorFinding("ccache", "/dev/null", err, opts.Rules), "CC001")
	if f.Message != "credential cache is a character device, not a regular file" || !strings.Contains(f.Hint, "--ccache") {
		t.Errorf("CC001 for /dev/null: %q, hint %q", f.Message, f.Hint)
	}
}
