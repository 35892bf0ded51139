package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/lab"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/klistlint"
)

// The klist-lint tests parse files written by the real MIT tools (kadmin
// ktadd, ktutil, kinit) and run the online check against the lab's MIT
// KDC. With KRBOPS_WRITE_FUZZ_SEEDS=1 they also refresh the fuzz corpus
// seeds in kdcops/testdata/fuzz from these files.

type lintLab struct {
	r   *lab.Realm
	dir string
	cfg *kdcops.Config
}

func startLintLab(t *testing.T) *lintLab {
	t.Helper()
	r := lab.ForTest(t, lab.Options{})
	cfg, err := kdcops.LoadConfig(r.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	return &lintLab{r: r, dir: t.TempDir(), cfg: cfg}
}

func (l *lintLab) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// tool runs an MIT tool of the lab, with stdin, and returns its output.
func (l *lintLab) tool(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := l.r.Command(l.ctx(t), name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (l *lintLab) kadmin(t *testing.T, query string) string {
	t.Helper()
	out, err := l.r.Kadmin(l.ctx(t), query)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (l *lintLab) principal(t *testing.T, name string) string {
	t.Helper()
	if err := l.r.AddPrincipal(l.ctx(t), name, ""); err != nil {
		t.Fatal(err)
	}
	return name + "@" + l.r.Name
}

func (l *lintLab) ktadd(t *testing.T, principal, file string, enctypes ...string) string {
	t.Helper()
	p := filepath.Join(l.dir, file)
	if err := l.r.Keytab(l.ctx(t), principal, p, enctypes...); err != nil {
		t.Fatal(err)
	}
	return p
}

// klistKeytab is `klist -k -t -e` as "kvno principal enctype" lines.
var klistKTLine = regexp.MustCompile(`^\s*(\d+) \S+ \S+ (\S+) \((?:DEPRECATED:)?([^)]+)\)\s*$`)

func (l *lintLab) klistKeytab(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(l.tool(t, "", "klist", "-k", "-t", "-e", path), "\n") {
		if m := klistKTLine.FindStringSubmatch(line); m != nil {
			out = append(out, m[1]+" "+m[2]+" "+m[3])
		}
	}
	return out
}

func ours(t *testing.T, path string) (*kdcops.Keytab, []string) {
	t.Helper()
	kt, err := kdcops.ReadKeytabFile(path, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range kt.Entries {
		out = append(out, fmt.Sprintf("%d %s %s", e.KVNO, e.Principal, kdcops.EnctypeName(e.Enctype)))
	}
	return kt, out
}

func rules(fs []kdcops.Finding) string {
	var ids []string
	for _, f := range fs {
		ids = append(ids, f.Rule)
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

// TestKeytabsFromMITTools: every keytab MIT writes parses to exactly what
// klist -k -t -e shows.
func TestKeytabsFromMITTools(t *testing.T) {
	l := startLintLab(t)
	now := time.Now()
	opts := kdcops.LintOptions{Now: now, MinRemaining: time.Hour, MaxAge: 90 * 24 * time.Hour}

	// kadmin ktadd: the realm's AES keys.
	svc := l.principal(t, "svc/ktadd.krbops.test")
	ktadd := l.ktadd(t, svc, "ktadd.keytab")

	// ktutil: rc4, des3 and AES keys at three kvnos.
	mixed := l.principal(t, "svc/ktutil.krbops.test")
	ktutilPath := filepath.Join(l.dir, "ktutil.keytab")
	var script strings.Builder
	for kvno, et := range map[int]string{1: "rc4-hmac", 2: "des3-cbc-sha1", 3: "aes256-cts-hmac-sha1-96"} {
		fmt.Fprintf(&script, "addent -password -p %s -k %d -e %s\nlab-password\n", mixed, kvno, et)
	}
	fmt.Fprintf(&script, "addent -password -p %s -k 3 -e rc4-hmac\nlab-password\nwkt %s\nquit\n", mixed, ktutilPath)
	l.tool(t, script.String(), "ktutil")

	// Past kvno 255: 256 key changes in one kadmin.local session (a few
	// hundred ms, against a second per separate invocation).
	wrap := l.principal(t, "svc/wrap.krbops.test")
	cpw := make([]string, 256)
	for i := range cpw {
		cpw[i] = "cpw -randkey " + wrap
	}
	if err := l.r.KadminBatch(l.ctx(t), cpw); err != nil {
		t.Fatal(err)
	}
	wrapPath := l.ktadd(t, wrap, "wrap.keytab")

	for _, tc := range []struct {
		path  string
		rules string
	}{
		{ktadd, ""},
		{ktutilPath, "KT006,KT008,KT009"},
		{wrapPath, "KT013"},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			kt, got := ours(t, tc.path)
			want := l.klistKeytab(t, tc.path)
			if strings.Join(got, "\n") != strings.Join(want, "\n") || len(want) == 0 {
				t.Errorf("parsed:\n%s\nklist -k -t -e:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if r := rules(kdcops.LintKeytab(tc.path, kt.Entries, opts)); r != tc.rules {
				t.Errorf("rules = %q, want %q", r, tc.rules)
			}
			writeSeed(t, "FuzzParseKeytab", filepath.Base(tc.path), tc.path)
		})
	}
	kt, _ := ours(t, wrapPath)
	if e := kt.Entries[0]; e.KVNO != 258 || e.KVNO8 != 2 {
		t.Errorf("after 256 cpw and ktadd: kvno %d (8-bit %d), want 258 (2)", e.KVNO, e.KVNO8)
	}
}

// TestCCachesFromKinit: caches kinit writes in format 4 (the default) and
// 3 (ccache_type = 3) parse to what klist shows, and the TGT rules see
// the lifetimes kinit asked for.
func TestCCachesFromKinit(t *testing.T) {
	l := startLintLab(t)
	p := l.principal(t, "svc/kinit.krbops.test")
	kt := l.ktadd(t, p, "kinit.keytab")
	conf3 := filepath.Join(l.dir, "krb5-v3.conf")
	base, err := os.ReadFile(l.r.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf3, []byte(strings.Replace(string(base), "[libdefaults]\n", "[libdefaults]\n\tccache_type = 3\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	kinit := func(cc, conf string, args ...string) {
		t.Helper()
		cmd := l.r.Command(l.ctx(t), "kinit", append(append([]string{"-k", "-t", kt, "-c", "FILE:" + cc}, args...), p)...)
		if conf != "" {
			cmd.Env = append(cmd.Env, "KRB5_CONFIG="+conf)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kinit: %v\n%s", err, out)
		}
	}
	v4 := filepath.Join(l.dir, "cc4")
	v3 := filepath.Join(l.dir, "cc3")
	short := filepath.Join(l.dir, "cc-short")
	renew := filepath.Join(l.dir, "cc-renew")
	kinit(v4, "")
	kinit(v3, conf3)
	kinit(short, "", "-l", "10m")
	kinit(renew, "", "-l", "1h", "-r", "2h")

	opts := kdcops.LintOptions{MinRemaining: time.Hour}
	for _, tc := range []struct {
		path    string
		version int
		rules   string
		opts    kdcops.LintOptions
	}{
		{v4, 4, "", opts}, // MIT's kinit asks for a renewable TGT by default
		{v3, 3, "", opts},
		{short, 4, "CC006,CC007", opts},
		{renew, 4, "CC006,CC008", kdcops.LintOptions{MinRemaining: 3 * time.Hour}},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			cc, err := kdcops.ReadCCacheFile(tc.path, kdcops.CCacheOptions{KeepTGT: true})
			if err != nil {
				t.Fatal(err)
			}
			if cc.Version != tc.version || cc.Principal != p {
				t.Errorf("version %d principal %q", cc.Version, cc.Principal)
			}
			klist := l.tool(t, "", "klist", "-c", "FILE:"+tc.path)
			tgt, ok := cc.TGT()
			if !ok || !strings.Contains(klist, tgt.EndTime.Local().Format("01/02/06 15:04:05")) {
				t.Errorf("TGT %+v does not match klist:\n%s", tgt, klist)
			}
			if r := rules(kdcops.LintCCache(tc.path, cc, tc.opts)); r != tc.rules {
				t.Errorf("rules = %q, want %q", r, tc.rules)
			}
			writeSeed(t, "FuzzParseCCache", filepath.Base(tc.path), tc.path)
		})
	}
	// kinit -l 10m: CC006 names both durations.
	cc, _ := kdcops.ReadCCacheFile(short, kdcops.CCacheOptions{})
	for _, f := range kdcops.LintCCache(short, cc, opts) {
		if f.Rule == "CC006" && !regexp.MustCompile(`TGT expires in (10m|9m5\ds) .*less than --min-remaining 1h`).MatchString(f.Message) {
			t.Errorf("CC006 message %q", f.Message)
		}
	}
}

func (l *lintLab) online(t *testing.T, path string, cc *kdcops.CCache) *kdcops.OnlineResult {
	t.Helper()
	kt, err := kdcops.ReadKeytabFile(path, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	c := &kdcops.OnlineClient{Config: l.cfg, Timeout: 5 * time.Second, CCache: cc}
	res, err := c.Check(l.ctx(t), kt.Entries)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func onlineRules(path string, res *kdcops.OnlineResult) string {
	kt, _ := kdcops.ReadKeytabFile(path, kdcops.KeytabOptions{})
	fs := append(kdcops.LintOnlineKVNO(path, res, kdcops.LintOptions{}), kdcops.LintOnlineKeys(path, res, kt.Entries, kdcops.LintOptions{})...)
	return rules(fs)
}

// TestOnline runs the KDC checks against the lab's MIT KDC. The operator's
// TGT comes from kinit of a principal of their own, as on a real host.
func TestOnline(t *testing.T) {
	l := startLintLab(t)
	op := l.principal(t, "operator")
	opKT := l.ktadd(t, op, "operator.keytab")
	opCC := filepath.Join(l.dir, "operator.cc")
	l.tool(t, "", "kinit", "-k", "-t", opKT, "-c", "FILE:"+opCC, op)
	cc, err := kdcops.ReadCCacheFile(opCC, kdcops.CCacheOptions{KeepTGT: true})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("current", func(t *testing.T) {
		p := l.principal(t, "svc/current.krbops.test")
		path := l.ktadd(t, p, "current.keytab")
		for _, withCC := range []*kdcops.CCache{nil, cc} {
			res := l.online(t, path, withCC)
			if !res.KVNOKnown || res.KDCKVNO != 2 || res.KeytabKVNO != 2 || len(res.KDCKeys) != 2 {
				t.Errorf("result %+v", res)
			}
			for _, c := range res.Checks {
				if !c.OK {
					t.Errorf("key check %+v failed", c)
				}
			}
			if r := onlineRules(path, res); r != "" {
				t.Errorf("rules %q", r)
			}
		}
	})

	t.Run("stale after cpw", func(t *testing.T) {
		p := l.principal(t, "svc/stale.krbops.test")
		path := l.ktadd(t, p, "stale.keytab")
		l.kadmin(t, "cpw -randkey "+p)
		res := l.online(t, path, cc)
		if !res.KVNOKnown || res.KDCKVNO != 3 || res.KeytabKVNO != 2 || res.KVNOSource != "ccache "+op {
			t.Errorf("with the operator's TGT: %+v", res)
		}
		if r := onlineRules(path, res); r != "ON001" {
			t.Errorf("rules %q, want ON001", r)
		}
		// Without a TGT of its own the keytab cannot learn the kvno.
		res = l.online(t, path, nil)
		if res.KVNOKnown || len(res.Checks) != 1 || res.Checks[0].Error != "KDC_ERR_PREAUTH_FAILED" {
			t.Errorf("keytab only: %+v", res)
		}
		if r := onlineRules(path, res); r != "ON004" {
			t.Errorf("rules %q, want ON004", r)
		}
	})

	t.Run("keytab ahead", func(t *testing.T) {
		p := l.principal(t, "svc/ahead.krbops.test")
		path := l.ktadd(t, p, "ahead.keytab")
		// The KDC's kvno set back (a restored database looks like this):
		// the keys are unchanged, so the keytab still logs in.
		l.kadmin(t, "modprinc -kvno 1 "+p)
		res := l.online(t, path, nil)
		if !res.KVNOKnown || res.KDCKVNO != 1 || res.KeytabKVNO != 2 {
			t.Errorf("result %+v", res)
		}
		if r := onlineRules(path, res); r != "ON002" {
			t.Errorf("rules %q, want ON002", r)
		}
	})

	t.Run("unknown", func(t *testing.T) {
		p := l.principal(t, "svc/gone.krbops.test")
		path := l.ktadd(t, p, "gone.keytab")
		l.kadmin(t, "delprinc -force "+p)
		if r := onlineRules(path, l.online(t, path, cc)); r != "ON006" {
			t.Errorf("rules %q, want ON006", r)
		}
	})

	t.Run("refused", func(t *testing.T) {
		p := l.principal(t, "svc/disabled.krbops.test")
		path := l.ktadd(t, p, "disabled.keytab")
		l.kadmin(t, "modprinc -allow_tix "+p)
		res := l.online(t, path, cc)
		if r := onlineRules(path, res); r != "ON007" {
			t.Errorf("rules %q, want ON007 (%+v)", r, res)
		}
	})

	t.Run("salt", func(t *testing.T) {
		// The KDC salts this principal's key specially; a keytab made with
		// ktutil and the right password, but the default salt, is rejected.
		p := l.principal(t, "svc/salted.krbops.test")
		l.tool(t, "salted-password\nsalted-password\n", "kadmin.local", "-r", l.r.Name, "-q", "cpw -e aes256-cts-hmac-sha1-96:special "+p)
		path := filepath.Join(l.dir, "salted.keytab")
		l.tool(t, fmt.Sprintf("addent -password -p %s -k 2 -e aes256-cts-hmac-sha1-96\nsalted-password\nwkt %s\nquit\n", p, path), "ktutil")
		res := l.online(t, path, cc)
		k, ok := res.KDCHas(18)
		if !ok || k.DefaultSalt || len(res.KDCKeys) != 1 || !res.KVNOKnown || res.KDCKVNO != 2 {
			t.Fatalf("result %+v", res)
		}
		if r := onlineRules(path, res); r != "ON003" {
			t.Errorf("rules %q, want ON003", r)
		}
	})

	t.Run("enctypes differ", func(t *testing.T) {
		p := l.principal(t, "svc/partial.krbops.test")
		full := l.ktadd(t, p, "partial-full.keytab")
		// Keep only the aes256 key of the keytab (ktutil slot 1 is aes256,
		// slot 2 aes128, in the realm's supported_enctypes order).
		path := filepath.Join(l.dir, "partial.keytab")
		l.tool(t, fmt.Sprintf("rkt %s\ndelent 2\nwkt %s\nquit\n", full, path), "ktutil")
		res := l.online(t, path, cc)
		if r := onlineRules(path, res); r != "ON005" {
			t.Errorf("rules %q, want ON005 (%+v)", r, res)
		}
	})
}

// TestKlistLintRunbook runs the whole runbook against lab files: the
// must-show keytab (group-readable, rc4, three kvnos) and a stale one.
func TestKlistLintRunbook(t *testing.T) {
	l := startLintLab(t)
	p := l.principal(t, "svc/runbook.krbops.test")
	path := filepath.Join(l.dir, "runbook.keytab")
	var script strings.Builder
	for kvno := 1; kvno <= 3; kvno++ {
		for _, et := range []string{"aes256-cts-hmac-sha1-96", "rc4-hmac"} {
			fmt.Fprintf(&script, "addent -password -p %s -k %d -e %s\npw\n", p, kvno, et)
		}
	}
	fmt.Fprintf(&script, "wkt %s\nquit\n", path)
	l.tool(t, script.String(), "ktutil")
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	lint := klistlint.Check{Keytabs: []string{path}, Lint: kdcops.LintOptions{MaxAge: time.Hour, UID: 0}}
	rep := runbook.Run(context.Background(), runbook.Runbook{Command: "klist-lint", Steps: lint.Steps()}, runbook.Options{})
	var got []string
	for _, f := range rep.Findings {
		got = append(got, f.Rule+"/"+string(f.Severity))
	}
	if strings.Join(got, ",") != "KT002/fail,KT006/warn,KT009/warn" || rep.Class != fault.CheckFailed {
		t.Errorf("findings %v class %s", got, rep.Class)
	}
	var metrics []string
	for _, m := range rep.Metrics {
		if m.Name == "krb5_keytab_kvno" {
			metrics = append(metrics, m.Labels["principal"]+"="+strconv.Itoa(int(m.Value)))
		}
	}
	if strings.Join(metrics, ",") != p+"=3" {
		t.Errorf("krb5_keytab_kvno = %v", metrics)
	}
}

// writeSeed copies an MIT-made file into the fuzz corpus when asked to.
func writeSeed(t *testing.T, target, name, path string) {
	t.Helper()
	if os.Getenv("KRBOPS_WRITE_FUZZ_SEEDS") != "1" {
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("..", "..", "kdcops", "testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
	if err := os.WriteFile(filepath.Join(dir, "mit-"+name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
