package commands

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/fault"
)

func lintStreams(env map[string]string) (*IOStreams, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	return &IOStreams{Out: &out, ErrOut: &errOut, Getenv: func(k string) string { return env[k] }}, &out, &errOut
}

// parseLint runs the klist-lint flag parsing and returns the options the
// run function would get, or the error RunE returned.
func parseLint(t *testing.T, args ...string) (*KlistLintOptions, error) {
	t.Helper()
	io, _, _ := lintStreams(nil)
	g := &Globals{IO: io}
	var got *KlistLintOptions
	cmd := NewCmdKlistLint(g, func(_ context.Context, o *KlistLintOptions) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	err := cmd.Execute()
	return got, err
}

func TestKlistLintFlags(t *testing.T) {
	o, err := parseLint(t, "--keytab", "a.kt", "--keytab", "FILE:b.kt", "--dir", "d", "--disable", "KT009,cc007", "--disable", "KT001",
		"--principal", "host/x", "--min-remaining", "4h", "--ccache", "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.Keytabs, ",") != "a.kt,FILE:b.kt" || strings.Join(o.Dirs, ",") != "d" || o.Principal != "host/x" ||
		o.MinRemaining != 4*time.Hour || o.MaxAge != 90*24*time.Hour || !o.CCacheSet || o.CCache != "" {
		t.Errorf("options %+v", o)
	}
	for _, id := range []string{"KT009", "CC007", "KT001"} {
		if o.rules.Enabled(id) {
			t.Errorf("%s still enabled", id)
		}
	}
	if !o.rules.Enabled("KT002") {
		t.Error("KT002 disabled")
	}
	if o, _ := parseLint(t); o.CCacheSet || o.MinRemaining != time.Hour || len(o.Keytabs) != 0 {
		t.Errorf("defaults %+v", o)
	}
}

func TestKlistLintUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
		hint string
	}{
		{[]string{"--only", "KT099"}, `unknown rule id "KT099"`, "valid rule ids: CC001, CC002"},
		{[]string{"--min-remaining", "-1h"}, "--min-remaining must not be negative", ""},
		{[]string{"--max-age", "-1s"}, "--max-age must not be negative", ""},
		{[]string{"--dir", ".", "--online"}, "--online checks --keytab files", "flood"},
		{[]string{"--only", "KT002", "--disable", "KT002"}, "--only KT002 and --disable KT002 contradict", "drop KT002 from --only or from --disable"},
		{[]string{"--only", "kt002,KT006", "--disable", "CC001", "--disable", "kt006,KT002"}, "--only KT002,KT006 and --disable KT002,KT006 contradict", ""},
		{[]string{"--keytab", "a.kt", "--online", "--disable", "ON001,ON002,ON003,ON004,ON005,ON006,ON007"}, "--online asks the KDC only for the ON rules", "drop --online"},
		{[]string{"--keytab", "a.kt", "--online", "--only", "KT002"}, "--online asks the KDC only for the ON rules", ""},
		{[]string{"--keytab", "a.kt", "--only", "ON001"}, "--only ON001 runs only ON rules, which need --online", "add --online"},
		{[]string{"--ccache", ""}, `nothing to lint: --ccache "" turns the credential cache off`, "pass --keytab or --dir"},
		{[]string{"extra"}, "unknown command", ""},
	} {
		_, err := parseLint(t, tc.args...)
		var ee *fault.Error
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.msg)
			continue
		}
		if errors.As(err, &ee) && (ee.Class != fault.Usage || !strings.Contains(ee.Hint, tc.hint)) {
			t.Errorf("%v: code %d hint %q", tc.args, ee.Class, ee.Hint)
		}
	}
}

// klistLintRun turns inputs that cannot be linted into usage errors
// before any step runs.
func TestKlistLintRunInputs(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		env  map[string]string
		opts KlistLintOptions
		msg  string
	}{
		{"nothing", map[string]string{"KRB5CCNAME": "FILE:" + dir + "/none", "KRB5_KTNAME": dir + "/none.kt"}, KlistLintOptions{},
			"nothing to lint: no credential cache at " + dir + "/none and no keytab at " + dir + "/none.kt"},
		{"keyring default", map[string]string{"KRB5CCNAME": "KEYRING:persistent:1000"}, KlistLintOptions{}, "KEYRING: caches are not supported"},
		{"keyring flag", nil, KlistLintOptions{CCache: "DIR:/run/user/1000/krb5cc", CCacheSet: true}, "DIR: caches are not supported"},
		{"memory keytab", nil, KlistLintOptions{Keytabs: []string{"MEMORY:x"}}, "MEMORY keytabs are not supported"},
		{"missing dir", nil, KlistLintOptions{Dirs: []string{filepath.Join(dir, "nope")}}, "no such file"},
		{"dir is a file", nil, KlistLintOptions{Dirs: []string{"klistlint.go"}}, "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			io, out, _ := lintStreams(tc.env)
			g := &Globals{IO: io}
			g.setup()
			o := tc.opts
			o.Globals = g
			err := klistLintRun(context.Background(), &o)
			var ee *fault.Error
			if !errors.As(err, &ee) || ee.Class != fault.Usage || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want usage error containing %q", err, tc.msg)
			}
			if out.Len() > 0 {
				t.Errorf("stdout = %q, want nothing", out)
			}
		})
	}
}

func TestKeytabPath(t *testing.T) {
	for in, want := range map[string]string{"FILE:/etc/krb5.keytab": "/etc/krb5.keytab", "WRFILE:/k": "/k", "/plain": "/plain", "rel/k:x": "rel/k:x", "C:\\k": "C:\\k"} {
		if got, err := keytabPath(in); err != nil || got != want {
			t.Errorf("keytabPath(%q) = %q, %v", in, got, err)
		}
	}
}

// A forensic log that cannot be written makes the run fail at close, even
// when the run itself passed (issue 10: a run without its forensic record
// must not pass).
func TestLogWriteFailureFailsClose(t *testing.T) {
	io, _, _ := lintStreams(nil)
	g := &Globals{IO: io, Timeout: time.Second, LogFile: filepath.Join(t.TempDir(), "forensic.jsonl")}
	if err := g.setup(); err != nil {
		t.Fatal(err)
	}
	g.logFile.f.Close() // the disk went away under the run
	g.Log.Info("kdc request")
	err := g.close(nil, 0)
	if err == nil || !strings.Contains(err.Error(), "--log-file "+g.LogFile) {
		t.Fatalf("close = %v, want an error naming --log-file", err)
	}
}
