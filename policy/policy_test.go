package policy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/durable"
)

const good = `version: 1
clusters:
  eu1:
    allowlisted: true
  us1:
    allowlisted: false
  eu2:
    allowlisted: true
    tiers:
      control-plane:
        limit: 1
        min-gap: 3h
tiers:
  control-plane:
    principals: ["kdc/*", "svc-idp-*", "*@CORE.TEST"]
    limit: 2
    window: 6h
    min-gap: 1h
  gold:
    principals: ["svc-pay*"]
    limit: 5
    window: 2h
  standard:
    principals: ["*"]
deny:
  - "legacy-*"
last-login:
  kdc-logs: [/var/log/krb5kdc.log, /var/log/krb5kdc.log.1]
  no-login-record-ok: false
  min-tgt-remaining: 45m
phase2:
  ticket-lifetime: 10h
defaults:
  backend: kpasswd
  ledger: /var/lib/krbops/ledger.db
  secret-store: file:///var/lib/krbops/keytabs
`

func write(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t *testing.T, text string) *Policy {
	t.Helper()
	p, err := Load(write(t, text))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return p
}

func TestLoadGood(t *testing.T) {
	p := load(t, good)
	if len(p.Clusters) != 3 || !p.HasClusters() || len(p.Tiers) != 3 || len(p.Deny) != 1 {
		t.Fatalf("clusters %d tiers %d deny %d", len(p.Clusters), len(p.Tiers), len(p.Deny))
	}
	cp := p.Tiers[0]
	if cp.Name != "control-plane" || cp.Limit.V != 2 || cp.Window.V != 6*time.Hour || cp.MinGap.V != time.Hour || cp.Limit.Line != 16 {
		t.Errorf("control-plane: %+v", cp)
	}
	if got := p.Clusters[2].Tiers["control-plane"]; got.Limit.V != 1 || got.MinGap.V != 3*time.Hour || got.Window.Set {
		t.Errorf("eu2 override: %+v", got)
	}
	if p.TicketLifetime.V != 10*time.Hour || p.MinTGTRemaining.V != 45*time.Minute || len(p.KDCLogs.V) != 2 || p.SecretStore.V != "file:///var/lib/krbops/keytabs" {
		t.Errorf("settings: %+v", p)
	}
}

func TestEmptyPolicyIsBuiltIns(t *testing.T) {
	p := load(t, "# nothing yet\n")
	e, err := p.Resolve("svc@R.TEST", "c1", Flags{}, Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Tier.V != "standard" || e.Limit.V != 20 || e.Window.V != time.Hour || e.Tier.Source != BuiltIn || e.Allowlisted != nil {
		t.Errorf("%+v", e)
	}
}

// Every malformed case names file, line and key, and has a hint.
func TestMalformed(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		line       int
		key, msg   string
	}{
		{"unknown top key", "tiers: {}\nclusterz:\n  eu1: {allowlisted: true}\n", 2, "clusterz", "unknown key"},
		{"unknown tier key", "tiers:\n  control-plane:\n    limit: 2\n    windw: 6h\n", 4, "tiers.control-plane.windw", "unknown key"},
		{"unknown cluster key", "clusters:\n  eu1:\n    allowed: true\n", 3, "clusters.eu1.allowed", "unknown key"},
		{"limit not a number", "tiers:\n  standard:\n    limit: many\n", 3, "tiers.standard.limit", `must be a whole number, not "many"`},
		{"limit zero", "tiers:\n  standard:\n    limit: 0\n", 3, "tiers.standard.limit", "must be at least 1"},
		{"window without unit", "tiers:\n  standard:\n    window: 3600\n", 3, "tiers.standard.window", `must be a duration with a unit, not "3600"`},
		{"window garbage", "tiers:\n  standard:\n    window: soon\n", 3, "tiers.standard.window", `"soon" is not a duration`},
		{"bool as yes", "clusters:\n  eu1:\n    allowlisted: yes\n", 3, "clusters.eu1.allowlisted", `must be true or false, not "yes"`},
		{"allowlisted missing", "clusters:\n  eu1:\n    tiers: {}\n", 2, "clusters.eu1.allowlisted", "is required"},
		{"bad pattern", "deny:\n  - \"svc-[a\"\n", 2, "deny[0]", "is not a valid pattern"},
		{"patterns not a list", "tiers:\n  gold:\n    principals: svc-*\n    limit: 1\n    window: 1h\n", 3, "tiers.gold.principals", "must be a list"},
		{"unknown tier without limits", "tiers:\n  gold:\n    principals: [\"a\"]\n", 2, "tiers.gold", "needs limit and window"},
		{"override of no tier", "clusters:\n  eu1:\n    allowlisted: true\n    tiers:\n      golden:\n        limit: 1\n", 6, "clusters.eu1.tiers.golden", "no such tier"},
		{"duplicate key", "tiers:\n  standard:\n    limit: 2\n    limit: 3\n", 4, "tiers.standard.limit", "given twice (first on line 3)"},
		{"duplicate tier", "tiers:\n  standard: {limit: 2}\n  standard: {limit: 3}\n", 3, "tiers.standard", "given twice"},
		{"bad backend", "defaults:\n  backend: ssh\n", 2, "defaults.backend", `unknown backend "ssh"`},
		{"bad version", "version: 2\n", 1, "version", "unsupported version 2"},
		{"top not a mapping", "- a\n- b\n", 1, "(top level)", "must be a mapping"},
		{"bad name", "clusters:\n  \"eu 1\":\n    allowlisted: true\n", 2, "clusters.eu 1", "not a valid name"},
		{"two documents", "tiers: {}\n---\nclusters:\n  eu1: {allowlisted: true}\n", 2, "", "more than one YAML document"},
		{"syntax", "tiers:\n\tstandard: {}\n", 2, "", "not valid YAML"},
		{"unquoted star", "tiers:\n  standard:\n    principals: [*]\n", 3, "", "not valid YAML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, tc.text)
			_, err := Load(path)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want *Error", err)
			}
			want := "policy " + path + ":"
			if pe.Line != tc.line || pe.Key != tc.key || !strings.Contains(pe.Msg, tc.msg) || pe.Hint == "" || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("got %q (line %d key %q hint %q), want line %d key %q msg %q", err, pe.Line, pe.Key, pe.Hint, tc.line, tc.key, tc.msg)
			}
			if tc.key != "" && !strings.Contains(err.Error(), ": "+tc.key+": ") {
				t.Errorf("%q does not name key %s", err, tc.key)
			}
		})
	}
}

func TestTrust(t *testing.T) {
	path := write(t, good)
	if err := os.Chmod(path, 0o664); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); !errors.Is(err, durable.ErrUntrusted) || !strings.Contains(err.Error(), "mode 0664 lets other users write it") {
		t.Errorf("group-writable: %v", err)
	}
	os.Chmod(path, 0o644)
	link := filepath.Join(filepath.Dir(path), "link.yaml")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(link); !errors.Is(err, durable.ErrUntrusted) || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("link: %v", err)
	}
	if _, err := Load(filepath.Dir(path)); !errors.Is(err, durable.ErrUntrusted) || !strings.Contains(err.Error(), "directory") {
		t.Errorf("directory: %v", err)
	}
	big := write(t, "# "+strings.Repeat("x", MaxSize)+"\n")
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("too large: %v", err)
	}
}

// A policy owned by another user (not root) is refused: whoever owns it
// could loosen the rules. The check runs as a second, unprivileged user
// reading a file root owns (accepted) and one it does not (refused).
func TestTrustOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create files of another user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv: %v", err)
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // nobody must reach the files
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rootOwned := filepath.Join(dir, "root.yaml")
	os.WriteFile(rootOwned, []byte(good), 0o644)
	other := filepath.Join(dir, "other.yaml")
	os.WriteFile(other, []byte(good), 0o644)
	if err := os.Chown(other, 1, 1); err != nil { // daemon: neither root nor the reader
		t.Fatal(err)
	}
	// As root, a file of uid 1 is not trusted.
	if _, err := Load(other); !errors.Is(err, durable.ErrUntrusted) || !strings.Contains(err.Error(), "belongs to uid 1") {
		t.Errorf("root reading uid 1's policy: %v", err)
	}
	// As nobody, root's file is trusted and uid 1's is not.
	for _, tc := range []struct {
		path string
		want string
	}{{rootOwned, "ok"}, {other, "belongs to uid 1, neither root nor this user (uid 65534)"}} {
		cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", os.Args[0], "-test.run=^TestHelperLoad$", "-test.v")
		cmd.Env = append(os.Environ(), "KRBOPS_POLICY_HELPER="+tc.path)
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("as nobody, %s: %s, want %q", tc.path, out, tc.want)
		}
	}
}

// TestHelperLoad is TestTrustOwner's child process.
func TestHelperLoad(t *testing.T) {
	path := os.Getenv("KRBOPS_POLICY_HELPER")
	if path == "" {
		t.Skip("child process of TestTrustOwner")
	}
	if _, err := Load(path); err != nil {
		t.Log(err)
		return
	}
	t.Log("ok")
}

func TestResolvePrecedence(t *testing.T) {
	p := load(t, good)
	file := p.File
	d := Defaults{MinTGTRemaining: Value[time.Duration]{30 * time.Minute, BuiltIn}, Backend: Value[string]{"kpasswd", BuiltIn}}

	// First matching tier in file order: kdc/* is control-plane even
	// though standard's "*" matches it too.
	e, err := p.Resolve("kdc/core@R.TEST", "eu1", Flags{}, d)
	if err != nil {
		t.Fatal(err)
	}
	if e.Tier.V != "control-plane" || e.Tier.Source != "policy "+file+`:15 (tiers.control-plane.principals[0] "kdc/*")` {
		t.Errorf("tier: %+v", e.Tier)
	}
	if e.Limit.V != 2 || e.Limit.Source != "policy "+file+":16 (tiers.control-plane.limit)" || e.MinGap.V != time.Hour {
		t.Errorf("limit: %+v gap %+v", e.Limit, e.MinGap)
	}
	if e.Allowlisted == nil || !e.Allowlisted.V || e.Allowlisted.Source != "policy "+file+":4 (clusters.eu1.allowlisted)" {
		t.Errorf("allowlisted: %+v", e.Allowlisted)
	}
	if e.MinTGTRemaining.V != 45*time.Minute || e.TicketLifetime.V != 10*time.Hour || e.Backend.Source != "policy "+file+":34 (defaults.backend)" {
		t.Errorf("settings: %+v %+v %+v", e.MinTGTRemaining, e.TicketLifetime, e.Backend)
	}

	// A realm pattern matches the whole principal, case-insensitively.
	if e, _ := p.Resolve("anything@core.test", "eu1", Flags{}, d); e.Tier.V != "control-plane" {
		t.Errorf("realm pattern: %s", e.Tier.V)
	}
	// svc-pay* is gold; svc-idp-x is control-plane; the rest standard
	// with the built-in standard limits (the standard tier sets none).
	for principal, want := range map[string]string{"svc-payroll@R.TEST": "gold", "SVC-IDP-1@R.TEST": "control-plane", "web@R.TEST": "standard"} {
		if e, _ := p.Resolve(principal, "eu1", Flags{}, d); e.Tier.V != want {
			t.Errorf("%s: tier %s, want %s", principal, e.Tier.V, want)
		}
	}
	if e, _ := p.Resolve("web@R.TEST", "eu1", Flags{}, d); e.Limit.V != 20 || e.Limit.Source != BuiltIn {
		t.Errorf("standard limit: %+v", e.Limit)
	}

	// The cluster override beats the tier; the tier's window stays.
	e, _ = p.Resolve("kdc/core@R.TEST", "eu2", Flags{}, d)
	if e.Limit.V != 1 || !strings.Contains(e.Limit.Source, "(clusters.eu2.tiers.control-plane.limit)") || e.Window.V != 6*time.Hour || e.MinGap.V != 3*time.Hour {
		t.Errorf("eu2: %+v %+v %+v", e.Limit, e.Window, e.MinGap)
	}

	// A cluster not listed, or listed as false, is not allowlisted.
	e, _ = p.Resolve("web@R.TEST", "ap9", Flags{}, d)
	if e.Allowlisted.V || e.Allowlisted.Source != "policy "+file+" (cluster ap9 is not listed)" {
		t.Errorf("ap9: %+v", e.Allowlisted)
	}
	if e, _ := p.Resolve("web@R.TEST", "us1", Flags{}, d); e.Allowlisted.V {
		t.Errorf("us1 allowlisted")
	}

	// Flags override the rest, and say so.
	two, gap, life := 1, 2*time.Hour, time.Hour
	e, err = p.Resolve("kdc/core@R.TEST", "eu1", Flags{MaxPerWindow: &two, MinGap: &gap, TicketLifetime: &life, Deny: []string{"x*"}}, d)
	if err != nil || e.Limit.V != 1 || e.Limit.Source != "flag --max-per-window" || e.MinGap.Source != "flag --min-gap" || e.TicketLifetime.Source != "flag --ticket-lifetime" {
		t.Errorf("flags: %v %+v %+v", err, e.Limit, e.MinGap)
	}
	if strings.Join(e.Deny.V, ",") != "legacy-*,x*" || e.Deny.Source != "policy "+file+":26 (deny) + flag --deny" {
		t.Errorf("deny: %+v", e.Deny)
	}
}

func TestResolveFlagsMayOnlyTighten(t *testing.T) {
	p := load(t, good)
	d := Defaults{}
	std, cp, gold := "standard", "control-plane", "gold"
	// --tier standard on a control-plane principal would loosen: refused,
	// naming both.
	_, err := p.Resolve("kdc/core@R.TEST", "eu1", Flags{Tier: &std}, d)
	var ce *ConflictError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "--tier standard contradicts the policy: kdc/core@R.TEST is in tier control-plane, policy ") {
		t.Errorf("loosening --tier: %v", err)
	}
	// --tier gold on a control-plane principal: gold allows 5 per 2h
	// without a gap, control-plane 2 per 6h with 1h between: refused.
	if _, err := p.Resolve("kdc/core@R.TEST", "eu1", Flags{Tier: &gold}, d); !errors.As(err, &ce) {
		t.Errorf("--tier gold: %v", err)
	}
	// On a standard principal (20 per 1h) gold is stricter everywhere.
	if e, err := p.Resolve("web@R.TEST", "eu1", Flags{Tier: &gold}, d); err != nil || e.Limit.V != 5 {
		t.Errorf("--tier gold on standard: %v", err)
	}
	// --tier control-plane on a standard principal tightens: accepted.
	e, err := p.Resolve("web@R.TEST", "eu1", Flags{Tier: &cp}, d)
	if err != nil || e.Tier.V != "control-plane" || e.Limit.V != 2 || !strings.HasPrefix(e.Tier.Source, "flag --tier (tighter than standard") {
		t.Errorf("tightening --tier: %v %+v", err, e)
	}
	// The same --tier on the tier the policy gives is no conflict.
	if e, err := p.Resolve("kdc/core@R.TEST", "eu1", Flags{Tier: &cp}, d); err != nil || e.Tier.Source == "flag --tier" {
		t.Errorf("agreeing --tier: %v %+v", err, e.Tier)
	}
	many, short := 3, time.Hour
	if _, err := p.Resolve("kdc/core@R.TEST", "eu1", Flags{MaxPerWindow: &many}, d); !errors.As(err, &ce) || !strings.Contains(err.Error(), "--max-per-window 3 contradicts the policy: 2 for tier control-plane") {
		t.Errorf("looser --max-per-window: %v", err)
	}
	if _, err := p.Resolve("kdc/core@R.TEST", "eu1", Flags{Window: &short}, d); !errors.As(err, &ce) {
		t.Errorf("shorter --window: %v", err)
	}
	zero := time.Duration(0)
	if _, err := p.Resolve("kdc/core@R.TEST", "eu1", Flags{MinGap: &zero}, d); !errors.As(err, &ce) {
		t.Errorf("shorter --min-gap: %v", err)
	}
	al := "allow.txt"
	if _, err := p.Resolve("web@R.TEST", "eu1", Flags{Allowlist: &al}, d); !errors.As(err, &ce) {
		t.Errorf("--allowlist with policy clusters: %v", err)
	}
	// Without a policy, flags decide as before, even loosening.
	var none *Policy
	e, err = none.Resolve("kdc/core@R.TEST", "eu1", Flags{Tier: &std, MaxPerWindow: &many, Allowlist: &al}, d)
	if err != nil || e.Tier.Source != "flag --tier" || e.Limit.V != 3 || e.AllowlistFile.V != "allow.txt" || e.Allowlisted != nil {
		t.Errorf("no policy: %v %+v", err, e)
	}
}

func TestRows(t *testing.T) {
	p := load(t, good)
	e, err := p.Resolve("kdc/core@R.TEST", "eu1", Flags{}, Defaults{Ledger: Value[string]{"/l.db", BuiltIn}})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range e.Rows() {
		if r.Source == "" {
			t.Errorf("row %s has no source", r.Key)
		}
		keys = append(keys, r.Key)
	}
	want := "tier limit window min-gap allowlisted deny kdc-logs no-login-record-ok min-tgt-remaining ticket-lifetime backend ledger secret-store"
	if strings.Join(keys, " ") != want {
		t.Errorf("rows %v", keys)
	}
}

// The example in docs/policy.md loads, and the sources the page quotes
// are the ones krbops gives for it.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "## Example")
	_, rest, ok2 := strings.Cut(rest, "```yaml\n")
	example, _, ok3 := strings.Cut(rest, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("no yaml example in docs/policy.md")
	}
	p, err := Parse("/etc/krbops/policy.yaml", []byte(example))
	if err != nil {
		t.Fatalf("the documented example: %v", err)
	}
	e, err := p.Resolve("kdc/core1@EXAMPLE.COM", "eu1", Flags{}, Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	for _, quoted := range []string{e.Tier.Source, e.Limit.Source} {
		if !strings.Contains(string(doc), quoted) {
			t.Errorf("docs/policy.md does not quote %q", quoted)
		}
	}
	typo := strings.Replace(example, "    limit: 2\n", "    limt: 2\n", 1)
	if _, err := Parse("/etc/krbops/policy.yaml", []byte(typo)); err == nil || !strings.Contains(string(doc), "krbops: "+err.Error()+"\n") {
		t.Errorf("docs/policy.md does not show the error %v", err)
	}
}
