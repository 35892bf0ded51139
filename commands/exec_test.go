package commands

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/fault"
)

func parseExec(t *testing.T, args ...string) (*ExecOptions, error) {
	t.Helper()
	io, _, _ := lintStreams(nil)
	var got *ExecOptions
	cmd := NewCmdExec(&Globals{IO: io}, func(_ context.Context, o *ExecOptions) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	return got, cmd.Execute()
}

func TestExecFlags(t *testing.T) {
	o, err := parseExec(t, "--keytab", "k", "--principal", "p@R", "--margin", "30m", "--on-expiry", "none",
		"--fallback-keytab", "f", "--fallback-principal", "q@R", "--ccache-dir", "/run/x", "--", "job", "--flag", "a b")
	if err != nil {
		t.Fatal(err)
	}
	if o.Keytab != "k" || o.Principal != "p@R" || o.Margin != 30*time.Minute || o.OnExpiry != "none" || o.FallbackKeytab != "f" ||
		o.FallbackPrincipal != "q@R" || o.CCacheDir != "/run/x" || strings.Join(o.Command, "|") != "job|--flag|a b" {
		t.Errorf("%+v", o)
	}
	if o, _ := parseExec(t, "--keytab", "k", "--principal", "p", "--", "true"); o.Margin != 10*time.Minute || o.OnExpiry != "signal" {
		t.Errorf("defaults: %+v", o)
	}
}

func TestExecUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--keytab", "k", "--principal", "p"}, "exec needs a command to run after --"},
		{[]string{"--keytab", "k", "--principal", "p", "job"}, `the command must follow -- (got "job" before it)`},
		{[]string{"--principal", "p", "--", "job"}, "exec needs --keytab and --principal"},
		{[]string{"--keytab", "k", "--principal", "p", "--margin", "0s", "--", "job"}, "--margin 0s must be positive"},
		{[]string{"--keytab", "k", "--principal", "p", "--on-expiry", "kill", "--", "job"}, `--on-expiry "kill": want signal or none`},
		{[]string{"--keytab", "k", "--principal", "p", "--fallback-principal", "q", "--", "job"}, "--fallback-keytab and --fallback-principal go together"},
	} {
		_, err := parseExec(t, c.args...)
		if err == nil || err.Error() != c.want || fault.ClassOf(err) != fault.Usage || fault.HintOf(err) == "" {
			t.Errorf("%v: %v (%s)", c.args, err, fault.ClassOf(err))
		}
	}
}

func TestExitStatusAndEnv(t *testing.T) {
	if got := envWithout([]string{"A=1", "KRB5CCNAME=FILE:/x", "KRB5CCNAME_X=2"}, "KRB5CCNAME"); strings.Join(got, " ") != "A=1 KRB5CCNAME_X=2" {
		t.Errorf("envWithout: %v", got)
	}
	p, err := os.StartProcess("/bin/sh", []string{"sh", "-c", "exit 3"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if exitStatus(ps, nil) != 3 {
		t.Errorf("exit 3 -> %d", exitStatus(ps, nil))
	}
	p, _ = os.StartProcess("/bin/sh", []string{"sh", "-c", "kill -TERM $$"}, &os.ProcAttr{})
	ps, _ = p.Wait()
	if exitStatus(ps, nil) != 128+15 {
		t.Errorf("SIGTERM -> %d, want 143", exitStatus(ps, nil))
	}
	if code, ok := fault.StatusOf(&fault.Status{Code: 143}); !ok || code != 143 || !fault.Silent(&fault.Status{Code: 143}) {
		t.Error("fault.Status")
	}
}
