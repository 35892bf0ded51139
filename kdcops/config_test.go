package kdcops_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
)

// writeFile writes content to name under dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func loadString(t *testing.T, content string) (*kdcops.Config, string, error) {
	t.Helper()
	p := writeFile(t, t.TempDir(), "krb5.conf", content)
	cfg, err := kdcops.LoadConfig(p)
	return cfg, p, err
}

func kdcEntries(t *testing.T, cfg *kdcops.Config, realm string) []string {
	t.Helper()
	kdcs, err := cfg.ResolveKDCs(context.Background(), realm, nil)
	if err != nil {
		t.Fatalf("ResolveKDCs(%s): %v", realm, err)
	}
	var out []string
	for _, k := range kdcs {
		out = append(out, k.Addr())
	}
	return out
}

func TestLoadConfigValid(t *testing.T) {
	for _, tc := range []struct {
		name      string
		conf      string
		realm     string
		kdcs      []string
		clockskew time.Duration
	}{
		{
			name: "minimal",
			conf: `[libdefaults]
	default_realm = EXAMPLE.COM

[realms]
	EXAMPLE.COM = {
		kdc = kdc1.example.com
		kdc = kdc2.example.com:750
	}
`,
			realm:     "EXAMPLE.COM",
			kdcs:      []string{"kdc1.example.com:88", "kdc2.example.com:750"},
			clockskew: 300 * time.Second,
		},
		{
			name: "clockskew, comments, blank lines, final marker",
			conf: `# site krb5.conf
; another comment style
[libdefaults]*
  default_realm = CORP.TEST
  clockskew = 120

[realms]
  CORP.TEST = {
    # primary
    kdc = 10.0.0.1
    kdc = [2001:db8::1]:88
    admin_server = 10.0.0.1
  }
  OTHER.TEST = {
    kdc = other.test
  }

[domain_realm]
  .corp.test = CORP.TEST
`,
			realm:     "CORP.TEST",
			kdcs:      []string{"10.0.0.1:88", "[2001:db8::1]:88"},
			clockskew: 2 * time.Minute,
		},
		{
			name: "clockskew with unit",
			conf: `[libdefaults]
 default_realm = U.TEST
 clockskew = 10m
[realms]
 U.TEST = {
  kdc = tcp/kdc.u.test:1088
 }
`,
			realm:     "U.TEST",
			kdcs:      []string{"kdc.u.test:1088"},
			clockskew: 10 * time.Minute,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, path, err := loadString(t, tc.conf)
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if cfg.Path != path {
				t.Errorf("Path %q, want %q", cfg.Path, path)
			}
			realm, err := cfg.DefaultRealm("")
			if err != nil || realm != tc.realm {
				t.Errorf("DefaultRealm = %q, %v; want %q", realm, err, tc.realm)
			}
			if got := kdcEntries(t, cfg, tc.realm); !reflect.DeepEqual(got, tc.kdcs) {
				t.Errorf("KDCs %v, want %v", got, tc.kdcs)
			}
			if got := cfg.ClockSkew(); got != tc.clockskew {
				t.Errorf("ClockSkew %v, want %v", got, tc.clockskew)
			}
			if len(cfg.Warnings) != 0 {
				t.Errorf("warnings %v", cfg.Warnings)
			}
		})
	}
}

func TestDefaultRealm(t *testing.T) {
	cfg, path, err := loadString(t, "[libdefaults]\n  dns_lookup_kdc = false\n")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := cfg.DefaultRealm("FLAG.TEST"); err != nil || r != "FLAG.TEST" {
		t.Errorf("flag realm: %q %v", r, err)
	}
	_, err = cfg.DefaultRealm("")
	var ce *kdcops.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("no default_realm: %v (%T), want *ConfigError", err, err)
	}
	if ce.Path != path || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "no default_realm") {
		t.Errorf("error %q", err)
	}

	cfg, _, err = loadString(t, "[libdefaults]\n  default_realm = CONF.TEST\n")
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := cfg.DefaultRealm("FLAG.TEST"); r != "FLAG.TEST" {
		t.Errorf("flag must win over default_realm, got %q", r)
	}
}

func TestLoadConfigSyntaxErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		conf    string
		line    int
		wantMsg string
	}{
		{
			name:    "unclosed section header",
			conf:    "# top\n[libdefaults\n  default_realm = X.TEST\n",
			line:    2,
			wantMsg: "malformed section header",
		},
		{
			name:    "empty section header",
			conf:    "[]\n",
			line:    1,
			wantMsg: "malformed section header",
		},
		{
			name:    "stray line before any section",
			conf:    "\n\ndefault_realm = X.TEST\n[libdefaults]\n",
			line:    3,
			wantMsg: "outside any [section]",
		},
		{
			name:    "line without =",
			conf:    "[libdefaults]\n  default_realm = X.TEST\n  foo\n",
			line:    3,
			wantMsg: `expected "name = value"`,
		},
		{
			name:    "line with empty name",
			conf:    "[libdefaults]\n  = X.TEST\n",
			line:    2,
			wantMsg: `expected "name = value"`,
		},
		{
			name:    "unbalanced close brace",
			conf:    "[realms]\n X.TEST = {\n  kdc = a\n }\n }\n",
			line:    5,
			wantMsg: "} without a matching {",
		},
		{
			name:    "unclosed brace at end of file",
			conf:    "[realms]\n X.TEST = {\n  kdc = a\n\n",
			line:    4,
			wantMsg: "1 unclosed { at end of file",
		},
		{
			name:    "section inside braces",
			conf:    "[realms]\n X.TEST = {\n  kdc = a\n[libdefaults]\n",
			line:    4,
			wantMsg: "before the previous { was closed",
		},
		{
			name:    "include inside braces",
			conf:    "[realms]\n X.TEST = {\n include /etc/other.conf\n }\n",
			line:    3,
			wantMsg: "include inside a { } block",
		},
		{
			name:    "relative include",
			conf:    "include other.conf\n",
			line:    1,
			wantMsg: "include path must be absolute: other.conf",
		},
		{
			name:    "include with two paths",
			conf:    "[libdefaults]\ninclude /a /b\n",
			line:    2,
			wantMsg: "include needs exactly one path",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, path, err := loadString(t, tc.conf)
			if err == nil {
				t.Fatalf("LoadConfig accepted it: %+v", cfg)
			}
			var ce *kdcops.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want *ConfigError", err, err)
			}
			if ce.Line != tc.line {
				t.Errorf("Line %d, want %d (%v)", ce.Line, tc.line, err)
			}
			if ce.Path != path || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name %s", err, path)
			}
			if !strings.Contains(ce.Msg, tc.wantMsg) {
				t.Errorf("Msg %q, want it to contain %q", ce.Msg, tc.wantMsg)
			}
			if m := ce.Msg; m != "" && m[0] >= 'A' && m[0] <= 'Z' {
				t.Errorf("Msg %q starts upper-case", m)
			}
			if want := "line " + strconv.Itoa(tc.line) + ": "; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		})
	}
}

func TestLoadConfigLongStrayLineIsTruncated(t *testing.T) {
	long := strings.Repeat("x", 200)
	_, _, err := loadString(t, long+"\n")
	if err == nil {
		t.Fatal("accepted")
	}
	if strings.Contains(err.Error(), long) || !strings.Contains(err.Error(), "…") {
		t.Errorf("error quotes the whole line: %q", err)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope", "krb5.conf")
	_, err := kdcops.LoadConfig(path)
	var ce *kdcops.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want *ConfigError", err, err)
	}
	if ce.Line != 0 || ce.Msg != "no such file" || ce.Path != path {
		t.Errorf("ConfigError %+v", ce)
	}
	if want := "krb5.conf " + path + ": no such file"; err.Error() != want {
		t.Errorf("Error() %q, want %q", err.Error(), want)
	}
}

func TestLoadConfigUnreadableIsDirectory(t *testing.T) {
	dir := t.TempDir()
	_, err := kdcops.LoadConfig(dir)
	var ce *kdcops.ConfigError
	if !errors.As(err, &ce) || ce.Path != dir || ce.Msg == "" {
		t.Fatalf("error %v (%T)", err, err)
	}
}

func TestLoadConfigGokrb5Errors(t *testing.T) {
	// Syntax is fine, but gokrb5 rejects the value: still a ConfigError
	// naming the file, with a lower-case message.
	_, path, err := loadString(t, "[libdefaults]\n  clockskew = soon\n")
	var ce *kdcops.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want *ConfigError", err, err)
	}
	if ce.Path != path || !strings.Contains(ce.Msg, "libdefaults") {
		t.Errorf("ConfigError %+v", ce)
	}
	if m := ce.Msg; m[0] >= 'A' && m[0] <= 'Z' {
		t.Errorf("Msg %q starts upper-case", m)
	}
}

func TestLoadConfigUnsupportedDirectiveIsAWarning(t *testing.T) {
	cfg, _, err := loadString(t, `[libdefaults]
  default_realm = V4.TEST
[realms]
  V4.TEST = {
    kdc = kdc.v4.test
    v4_instance_convert = {
      kdc = kdc
    }
  }
`)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "v4") {
		t.Errorf("warnings %v", cfg.Warnings)
	}
	if r, _ := cfg.DefaultRealm(""); r != "V4.TEST" {
		t.Errorf("realm %q", r)
	}
}

func TestLoadConfigInclude(t *testing.T) {
	dir := t.TempDir()
	inc := writeFile(t, dir, "realms.conf", "[realms]\n  INC.TEST = {\n    kdc = inc-kdc.test:8888\n  }\n")
	main := writeFile(t, dir, "krb5.conf", "[libdefaults]\n  default_realm = INC.TEST\n  clockskew = 42\ninclude "+inc+"\n")
	cfg, err := kdcops.LoadConfig(main)
	if err != nil {
		t.Fatal(err)
	}
	if got := kdcEntries(t, cfg, "INC.TEST"); !reflect.DeepEqual(got, []string{"inc-kdc.test:8888"}) {
		t.Errorf("KDCs %v", got)
	}
	if cfg.ClockSkew() != 42*time.Second {
		t.Errorf("clockskew %v", cfg.ClockSkew())
	}
	if cfg.Path != main {
		t.Errorf("Path %q", cfg.Path)
	}
}

func TestLoadConfigIncludeSyntaxErrorNamesIncludedFile(t *testing.T) {
	dir := t.TempDir()
	inc := writeFile(t, dir, "bad.conf", "[realms]\n  X.TEST = {\n    kdc\n  }\n")
	main := writeFile(t, dir, "krb5.conf", "[libdefaults]\n  default_realm = X.TEST\ninclude "+inc+"\n")
	_, err := kdcops.LoadConfig(main)
	var ce *kdcops.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v", err)
	}
	if ce.Path != inc || ce.Line != 3 || !strings.Contains(err.Error(), inc) {
		t.Errorf("error %q (%+v), want line 3 of %s", err, ce, inc)
	}
}

func TestLoadConfigIncludeMissingFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.conf")
	main := writeFile(t, dir, "krb5.conf", "[libdefaults]\n  default_realm = X.TEST\ninclude "+missing+"\n")
	_, err := kdcops.LoadConfig(main)
	var ce *kdcops.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want *ConfigError", err, err)
	}
	// The problem is the include directive: line 3 of the main file, and
	// the message names the file that is missing.
	if ce.Path != main || ce.Line != 3 {
		t.Errorf("ConfigError %+v, want line 3 of %s", ce, main)
	}
	if !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("error %q", err)
	}
}

func TestLoadConfigIncludeLoop(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.conf")
	b := filepath.Join(dir, "b.conf")
	writeFile(t, dir, "a.conf", "[libdefaults]\n  default_realm = LOOP.TEST\ninclude "+b+"\n")
	writeFile(t, dir, "b.conf", "include "+a+"\n")
	_, err := kdcops.LoadConfig(a)
	var ce *kdcops.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want *ConfigError", err, err)
	}
	if !strings.Contains(ce.Msg, "deeper than 8") || !strings.Contains(ce.Msg, "loop") {
		t.Errorf("Msg %q", ce.Msg)
	}
	if ce.Path != a && ce.Path != b {
		t.Errorf("Path %q names neither file of the loop", ce.Path)
	}

	// A self-include is a loop too.
	self := writeFile(t, dir, "self.conf", "")
	writeFile(t, dir, "self.conf", "include "+self+"\n")
	if _, err := kdcops.LoadConfig(self); err == nil || !strings.Contains(err.Error(), "deeper than 8") {
		t.Errorf("self include: %v", err)
	}
}

func TestLoadConfigIncludedir(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "krb5.conf.d")
	writeFile(t, d, "a.conf", "[realms]\n  A.TEST = {\n    kdc = kdc-a.test\n  }\n")
	writeFile(t, d, "b", "[realms]\n  B.TEST = {\n    kdc = kdc-b.test\n  }\n")
	// Editor backups and hidden files are skipped: both are broken, so
	// reading either would fail the load.
	writeFile(t, d, "c.conf~", "[realms\n")
	writeFile(t, d, ".hidden", "stray line\n")
	writeFile(t, d, "d.rpmsave", "stray line\n")
	if err := os.Mkdir(filepath.Join(d, "sub.conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	main := writeFile(t, dir, "krb5.conf", "[libdefaults]\n  default_realm = A.TEST\nincludedir "+d+"\n")
	cfg, err := kdcops.LoadConfig(main)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if got := kdcEntries(t, cfg, "A.TEST"); !reflect.DeepEqual(got, []string{"kdc-a.test:88"}) {
		t.Errorf("A.TEST KDCs %v", got)
	}
	if got := kdcEntries(t, cfg, "B.TEST"); !reflect.DeepEqual(got, []string{"kdc-b.test:88"}) {
		t.Errorf("B.TEST KDCs %v", got)
	}
	var realms []string
	for _, r := range cfg.Realms {
		realms = append(realms, r.Realm)
	}
	if !reflect.DeepEqual(realms, []string{"A.TEST", "B.TEST"}) {
		t.Errorf("realms %v, want a.conf then b", realms)
	}
}

func TestLoadConfigIncludedirMissing(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nodir")
	main := writeFile(t, dir, "krb5.conf", "[libdefaults]\n  default_realm = X.TEST\n\nincludedir "+missing+"\n")
	_, err := kdcops.LoadConfig(main)
	var ce *kdcops.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T)", err, err)
	}
	if ce.Path != main || ce.Line != 4 || !strings.Contains(ce.Msg, "no such file") {
		t.Errorf("ConfigError %+v", ce)
	}
	if !strings.Contains(err.Error(), missing) {
		t.Errorf("error %q does not name the directory", err)
	}
}

func TestConfigErrorFormat(t *testing.T) {
	if got := (&kdcops.ConfigError{Path: "/etc/krb5.conf", Line: 7, Msg: "bad"}).Error(); got != "krb5.conf /etc/krb5.conf: line 7: bad" {
		t.Errorf("with line: %q", got)
	}
	if got := (&kdcops.ConfigError{Path: "/etc/krb5.conf", Msg: "bad"}).Error(); got != "krb5.conf /etc/krb5.conf: bad" {
		t.Errorf("without line: %q", got)
	}
}

func TestConfigPath(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "KRB5_CONFIG" {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		flag, env, want string
	}{
		{"/flag/krb5.conf", "/env/krb5.conf", "/flag/krb5.conf"},
		{"", "/env/krb5.conf", "/env/krb5.conf"},
		{"", "/env/first.conf:/env/second.conf", "/env/first.conf"},
		{"", "", "/etc/krb5.conf"},
	} {
		if got := kdcops.ConfigPath(tc.flag, env(tc.env)); got != tc.want {
			t.Errorf("ConfigPath(%q, KRB5_CONFIG=%q) = %q, want %q", tc.flag, tc.env, got, tc.want)
		}
	}
	if kdcops.DefaultConfigPath != "/etc/krb5.conf" {
		t.Errorf("DefaultConfigPath %q", kdcops.DefaultConfigPath)
	}
}

func TestLoadConfigRepeatedSectionsAreMerged(t *testing.T) {
	// The usual split layout: krb5.conf has [realms], and a drop-in file
	// adds another realm under its own [realms] header. MIT merges the
	// two; both realms must keep their KDCs.
	dir := t.TempDir()
	d := filepath.Join(dir, "krb5.conf.d")
	writeFile(t, d, "extra.conf", "[libdefaults]\n  udp_preference_limit = 1\n[realms]\n  EXTRA.TEST = {\n    kdc = kdc.extra.test\n  }\n[domain_realm]\n  .extra.test = EXTRA.TEST\n")
	main := writeFile(t, dir, "krb5.conf", `[libdefaults]
  default_realm = MAIN.TEST
[realms]
  MAIN.TEST = {
    kdc = kdc1.main.test
  }
[domain_realm]
  .main.test = MAIN.TEST
includedir `+d+`
[realms]
  LATE.TEST = {
    kdc = kdc.late.test:750
  }
`)
	cfg, err := kdcops.LoadConfig(main)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	for realm, want := range map[string][]string{
		"MAIN.TEST":  {"kdc1.main.test:88"},
		"EXTRA.TEST": {"kdc.extra.test:88"},
		"LATE.TEST":  {"kdc.late.test:750"},
	} {
		if got := kdcEntries(t, cfg, realm); !reflect.DeepEqual(got, want) {
			t.Errorf("%s KDCs %v, want %v", realm, got, want)
		}
	}
	if r, _ := cfg.DefaultRealm(""); r != "MAIN.TEST" {
		t.Errorf("default realm %q", r)
	}
	if cfg.PreferredTransport() != kdcops.TCP {
		t.Error("[libdefaults] of the drop-in file was lost")
	}
	if cfg.DomainRealm[".main.test"] != "MAIN.TEST" || cfg.DomainRealm[".extra.test"] != "EXTRA.TEST" {
		t.Errorf("domain_realm %v", cfg.DomainRealm)
	}
}
