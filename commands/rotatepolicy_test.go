package commands

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/fault"
)

const testPolicy = `clusters:
  c:
    allowlisted: true
tiers:
  control-plane:
    principals: ["kdc*"]
    limit: 3
    window: 4h
    min-gap: 30m
last-login:
  kdc-logs: [/var/log/krb5kdc.log]
phase2:
  ticket-lifetime: 9h
defaults:
  secret-store: file:///policy/store
  ledger: /policy/ledger.db
`

func writePolicy(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// noDefaultPolicy keeps a policy file of the machine out of the test.
func noDefaultPolicy(t *testing.T, paths ...string) {
	old := defaultPolicyPaths
	defaultPolicyPaths = append([]string{filepath.Join(t.TempDir(), "absent.yaml")}, paths...)
	t.Cleanup(func() { defaultPolicyPaths = old })
}

func TestRotatePolicyDecides(t *testing.T) {
	noDefaultPolicy(t)
	pol := writePolicy(t, "policy.yaml", testPolicy)
	// No --allowlist, --kdc-log or --secret-store: the policy gives them.
	o, _, err := parseRotate(t, "--policy", pol, "--principal", "kdc1@R.TEST", "--role", "client", "--keytab", "k", "--cluster", "c", "--yes")
	if err != nil {
		t.Fatal(err)
	}
	if o.Tier != "control-plane" || o.MaxPerWindow != 3 || o.Window != 4*time.Hour || o.MinGap != 30*time.Minute ||
		o.TicketLifetime != 9*time.Hour || o.SecretStore != "file:///policy/store" || len(o.KDCLogs) != 1 {
		t.Errorf("effective: %+v", o)
	}
	if a := o.effective.Allowlisted; a == nil || !a.V || !strings.HasSuffix(a.Source, ":3 (clusters.c.allowlisted)") {
		t.Errorf("allowlisted: %+v", a)
	}
	// A lower limit is a flag's to give.
	if o, _, err := parseRotate(t, "--policy", pol, "--principal", "kdc1@R.TEST", "--role", "server", "--keytab", "k", "--cluster", "c", "--yes", "--max-per-window", "1"); err != nil || o.MaxPerWindow != 1 {
		t.Errorf("--max-per-window 1: %v", err)
	}
}

func TestRotatePolicyRefusals(t *testing.T) {
	noDefaultPolicy(t)
	pol := writePolicy(t, "policy.yaml", testPolicy)
	bad := writePolicy(t, "bad.yaml", "tiers:\n  control-plane:\n    limt: 3\n")
	loose := writePolicy(t, "loose.yaml", testPolicy)
	os.Chmod(loose, 0o666)
	base := []string{"--principal", "kdc1@R.TEST", "--role", "server", "--keytab", "k", "--cluster", "c", "--yes"}
	for _, tc := range []struct {
		args       []string
		want, hint string
	}{
		{append([]string{"--policy", pol, "--tier", "standard"}, base...), "--tier standard contradicts the policy: kdc1@R.TEST is in tier control-plane, policy " + pol + `:6 (tiers.control-plane.principals[0] "kdc*")`, "drop --tier"},
		{append([]string{"--policy", pol, "--max-per-window", "10"}, base...), "--max-per-window 10 contradicts the policy: 3 for tier control-plane", "may only tighten"},
		{append([]string{"--policy", pol, "--allowlist", "a"}, base...), "--allowlist a contradicts the policy", "drop --allowlist"},
		{append([]string{"--policy", bad}, base...), "policy " + bad + ":3: tiers.control-plane.limt: unknown key", "valid keys here: limit, window, min-gap, principals"},
		{append([]string{"--policy", loose}, base...), "policy " + loose + ": not trusted: its mode 0666 lets other users write it", "chmod go-w"},
		{append([]string{"--policy", pol, "--no-policy"}, base...), "--policy and --no-policy exclude each other", ""},
		{append([]string{"--no-policy", "--secret-store", "file:///s"}, base...), "--allowlist is required when no policy file lists the clusters", "docs/policy.md"},
	} {
		_, _, err := parseRotate(t, tc.args...)
		if fault.ExitCode(fault.ClassOf(err)) != fault.ExitUsage || err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(fault.HintOf(err), tc.hint) {
			t.Errorf("%v: %v (hint %q), want exit 2 with %q and hint %q", tc.args, err, fault.HintOf(err), tc.want, tc.hint)
		}
	}
}

func TestRotateDefaultPolicy(t *testing.T) {
	yaml := writePolicy(t, "policy.yaml", testPolicy)
	noDefaultPolicy(t, yaml)
	base := []string{"--principal", "kdc1@R.TEST", "--role", "server", "--keytab", "k", "--cluster", "c", "--yes"}
	o, _, err := parseRotate(t, base...)
	if err != nil || o.Tier != "control-plane" || o.effective.Limit.Source != "policy "+yaml+":7 (tiers.control-plane.limit)" {
		t.Fatalf("default policy: %v %+v", err, o)
	}
	// --no-policy: the flags and built-ins alone, as before policies.
	o, _, err = parseRotate(t, append(base, "--no-policy", "--secret-store", "file:///s", "--allowlist", "a")...)
	if err != nil || o.Tier != "standard" || o.MaxPerWindow != 20 {
		t.Fatalf("--no-policy: %v %+v", err, o)
	}
	// Both default names present: ambiguous, refused.
	yml := strings.TrimSuffix(yaml, ".yaml") + ".yml"
	if err := os.WriteFile(yml, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	noDefaultPolicy(t, yaml, yml)
	if _, _, err := parseRotate(t, base...); fault.ClassOf(err) != fault.Usage || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("two defaults: %v", err)
	}
}

// rotate finish, status, abort and unlock read the same policy: phase 2
// waits the policy's ticket lifetime, in its secret store.
func TestRotateSubcommandsReadPolicy(t *testing.T) {
	noDefaultPolicy(t)
	pol := writePolicy(t, "policy.yaml", testPolicy)
	o, which, err := parseRotate(t, "finish", "--policy", pol, "--principal", "p", "--keytab", "k", "--yes")
	if err != nil || which != "finish" || o.TicketLifetime != 9*time.Hour || o.SecretStore != "file:///policy/store" {
		t.Errorf("finish: %v %s %+v", err, which, o)
	}
	// A resumed rotation uses the ledger and store it started with.
	o, _, err = parseRotate(t, "--resume", "--policy", pol, "--principal", "p", "--yes")
	if err != nil || o.LedgerPath != "/policy/ledger.db" || o.SecretStore != "file:///policy/store" || o.TicketLifetime != 9*time.Hour {
		t.Errorf("--resume: %v %+v", err, o)
	}
	o, _, err = parseRotate(t, "finish", "--policy", pol, "--principal", "p", "--keytab", "k", "--yes", "--ticket-lifetime", "1h")
	if err != nil || o.TicketLifetime != time.Hour {
		t.Errorf("finish --ticket-lifetime: %v %+v", err, o)
	}
}
