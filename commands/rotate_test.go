package commands

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/fault"
)

func parseRotate(t *testing.T, args ...string) (*RotateOptions, string, error) {
	t.Helper()
	io, _, _ := lintStreams(nil)
	io.In = strings.NewReader("yes\n") // not a terminal: never read
	g := &Globals{IO: io}
	var got *RotateOptions
	var which string
	cmd := NewCmdRotate(g, func(_ context.Context, o *RotateOptions, w string) error { got, which = o, w; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	err := cmd.Execute()
	return got, which, err
}

var rotateBase = []string{"--principal", "p", "--secret-store", "file:///s", "--role", "client", "--keytab", "k",
	"--cluster", "c", "--allowlist", "a", "--kdc-log", "l"}

func TestRotateFlagsTierDefaults(t *testing.T) {
	o, which, err := parseRotate(t, append(rotateBase, "--yes")...)
	if err != nil || which != "rotate" || o.MaxPerWindow != 20 || o.Window != time.Hour || o.Backend != "kpasswd" {
		t.Fatalf("standard: %+v %s %v", o, which, err)
	}
	o, _, err = parseRotate(t, append(rotateBase, "--yes", "--tier", "control-plane")...)
	if err != nil || o.MaxPerWindow != 2 || o.Window != 6*time.Hour {
		t.Fatalf("control-plane: max %d window %s %v, want 2 per 6h", o.MaxPerWindow, o.Window, err)
	}
	o, _, err = parseRotate(t, append(rotateBase, "--yes", "--tier", "control-plane", "--max-per-window", "5")...)
	if err != nil || o.MaxPerWindow != 5 || o.Window != 6*time.Hour {
		t.Fatalf("explicit max: %d %s %v", o.MaxPerWindow, o.Window, err)
	}
}

func TestRotateFlagsRefusals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{rotateBase, "stdin is not a terminal"},
		{append(rotateBase, "--yes", "--tier", "gold"), "--tier must be"},
		{append(rotateBase, "--yes", "--backend", "kadmin"), "needs --admin-principal and --admin-keytab"},
		{append(rotateBase, "--yes", "--role", "neither"), "--role must be client, server or both"},
		{append(rotateBase, "--yes", "--principal", "krbtgt/EXAMPLE.COM"), "refusing to rotate krbtgt/EXAMPLE.COM: it matches the deny pattern krbtgt/*"},
		{append(rotateBase, "--yes", "--deny", "svc-[a"), "--deny \"svc-[a\""},
		{append(rotateBase, "--yes", "--deny", "p*"), "matches the deny pattern p*"},
		{append(rotateBase, "--yes", "--role", "server", "--no-login-record-ok"), "--no-login-record-ok applies to --role client or both"},
		{[]string{"--role", "client", "--yes"}, "--principal is required"},
		{[]string{"finish", "--principal", "p", "--yes"}, "needs --principal, --keytab and --secret-store"},
		{[]string{"unlock", "--principal", "p"}, "rotate unlock needs --force"},
		{[]string{"unlock", "--principal", "p", "--force"}, "rotate unlock needs --reason"},
		{[]string{"abort", "--principal", "p", "--secret-store", "file:///s", "--yes"}, "rotate abort needs --reason"},
		{[]string{"abort", "--principal", "p", "--reason", "x"}, "rotate abort needs --principal and --secret-store"},
	} {
		_, _, err := parseRotate(t, tc.args...)
		if fault.ExitCode(fault.ClassOf(err)) != fault.ExitUsage || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v (exit %d), want exit 2 with %q", tc.args, err, fault.ExitCode(fault.ClassOf(err)), tc.want)
		}
	}
	// --dry-run needs no confirmation: it changes nothing.
	if o, _, err := parseRotate(t, append(rotateBase, "--dry-run")...); err != nil || !o.DryRun {
		t.Errorf("--dry-run without --yes: %v", err)
	}
	if _, which, err := parseRotate(t, "status"); err != nil || which != "status" {
		t.Errorf("status: %s %v", which, err)
	}
}
