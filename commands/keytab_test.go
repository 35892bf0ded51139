package commands

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/krbops/krbops/internal/fault"
)

func TestParseKeytabMode(t *testing.T) {
	for s, ok := range map[string]bool{"0600": true, "600": true, "0400": true, "0640": true, "0440": true,
		"0644": false, "0660": false, "0200": false, "1600": false, "rw": false, "0o600": false,
		// at most 0640, as --help says: no execute bit anywhere.
		"0700": false, "0500": false, "0740": false, "0650": false, "0610": false} {
		if _, err := parseKeytabMode(s); (err == nil) != ok {
			t.Errorf("parseKeytabMode(%q): %v, want ok %v", s, err, ok)
		}
	}
}

func TestParseOwner(t *testing.T) {
	for s, want := range map[string][2]int{"0:0": {0, 0}, "root": {0, -1}, ":0": {-1, 0}, "65534:65534": {65534, 65534}, "root:root": {0, 0}} {
		uid, gid, err := parseOwner(s)
		if err != nil || uid != want[0] || gid != want[1] {
			t.Errorf("parseOwner(%q) = %d, %d, %v; want %v", s, uid, gid, err, want)
		}
	}
	for _, s := range []string{"", ":", "no-such-user-krbops", ":no-such-group-krbops", "-1"} {
		if _, _, err := parseOwner(s); err == nil {
			t.Errorf("parseOwner(%q) accepted", s)
		}
	}
}

// The flags reach the run function as typed values; bad combinations are
// usage errors (exit 2) before anything runs.
func TestKeytabFlags(t *testing.T) {
	run := func(args ...string) (*KeytabPullOptions, *KeytabPruneOptions, error) {
		var pull *KeytabPullOptions
		var prune *KeytabPruneOptions
		g := &Globals{IO: &IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}, Getenv: func(string) string { return "" }}}
		cmd := NewCmdKeytab(g)
		cmd.ResetCommands()
		cmd.AddCommand(NewCmdKeytabPull(g, func(_ context.Context, o *KeytabPullOptions) error { pull = o; return nil }),
			NewCmdKeytabPrune(g, func(_ context.Context, o *KeytabPruneOptions) error { prune = o; return nil }))
		cmd.SetArgs(args)
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		err := cmd.Execute()
		return pull, prune, err
	}
	pull, _, err := run("pull", "--secret-store", "file:///s", "--secret", "svc@R", "--keytab", "/k", "--owner", "0:0", "--mode", "0640", "--pending")
	if err != nil || pull.uid != 0 || pull.gid != 0 || pull.mode != 0o640 || !pull.Pending {
		t.Errorf("pull flags: %+v %v", pull, err)
	}
	_, prune, err := run("prune", "--keytab", "/k", "--kvno", "0")
	if err != nil || prune.KVNO != 0 {
		t.Errorf("--kvno 0: %+v %v", prune, err)
	}
	// A name os/user cannot resolve (a directory account in a cgo-less
	// build) points at the numbers.
	_, _, err = run("pull", "--secret-store", "file:///s", "--secret", "svc@R", "--keytab", "/k", "--owner", "no-such-user-krbops:0")
	if h := fault.HintOf(err); !strings.Contains(h, "numeric uid:gid") || !strings.Contains(h, "SSSD/LDAP") {
		t.Errorf("--owner unknown name: hint %q", h)
	}
	for _, args := range [][]string{
		{"pull", "--secret", "svc@R", "--keytab", "/k"},
		{"pull", "--secret-store", "file:///s", "--secret", "svc@R", "--keytab", "/k", "--mode", "0740"},
		{"pull", "--secret-store", "file:///s", "--secret", "bad name!", "--keytab", "/k"},
		{"pull", "--secret-store", "file:///s", "--secret", "svc@R", "--keytab", "/k", "--mode", "0666"},
		{"prune", "--keytab", "/k"},
		{"prune", "--keytab", "/k", "--kvno", "3", "--keep", "1"},
		{"prune", "--keytab", "/k", "--keep", "-1"},
		{"prune", "--keytab", "/k", "--kvno", "4294967296"},
	} {
		if _, _, err := run(args...); fault.ClassOf(err) != fault.Usage || fault.HintOf(err) == "" {
			t.Errorf("%s: %v (class %s), want a usage error with a hint", strings.Join(args, " "), err, fault.ClassOf(err))
		}
	}
}
