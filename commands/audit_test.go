package commands

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/fault"
)

// parseAudit runs audit's flag parsing and returns the options the run
// function would get, or the error RunE returned.
func parseAudit(t *testing.T, args ...string) (*AuditOptions, error) {
	t.Helper()
	io, _, _ := lintStreams(nil)
	var got *AuditOptions
	cmd := NewCmdAudit(&Globals{IO: io}, func(_ context.Context, o *AuditOptions) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	return got, cmd.Execute()
}

func TestAuditFlags(t *testing.T) {
	dir := t.TempDir()
	o, err := parseAudit(t, "--kdc-log", "a.log", "--kdc-log", "b.log.1.gz", "--dir", dir, "--since", "30d", "--max-age", "36h",
		"--max-hosts", "3", "--principal", "host/*")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.KDCLogs, ",") != "a.log,b.log.1.gz" || time.Duration(o.Since) != 30*24*time.Hour ||
		time.Duration(o.MaxAge) != 36*time.Hour || o.MaxHosts != 3 || o.Principal != "host/*" {
		t.Errorf("options %+v", o)
	}
	if o, _ := parseAudit(t, "--kdc-log", "a"); time.Duration(o.Since) != 90*24*time.Hour || o.MaxHosts != 1 || o.Since.String() != "90d" {
		t.Errorf("defaults %+v", o)
	}
}

func TestAuditUsageErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--kdc-log is required"},
		{[]string{"--kdc-log", "a", "--since", "0d"}, "--since must be positive"},
		{[]string{"--kdc-log", "a", "--since", "ninety"}, "want whole days"},
		{[]string{"--kdc-log", "a", "--max-hosts", "-1"}, "--max-hosts must not be negative"},
		{[]string{"--kdc-log", "a", "--principal", "[x"}, "bad pattern"},
		{[]string{"--kdc-log", "a", "--dir", filepath.Join(t.TempDir(), "none")}, "no such"},
		{[]string{"--kdc-log", "a", "--dir", file}, "not a directory"},
	} {
		_, err := parseAudit(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
			continue
		}
		var fe *fault.Error
		if !strings.Contains(tc.want, "whole days") && (!errors.As(err, &fe) || fe.Class != fault.Usage) {
			t.Errorf("%v: %v is not a usage error", tc.args, err)
		}
	}
}
