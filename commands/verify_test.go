package commands

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/krbops/krbops/internal/fault"
)

func parseVerify(t *testing.T, args ...string) (*VerifyOptions, error) {
	t.Helper()
	io, _, _ := lintStreams(nil)
	var got *VerifyOptions
	cmd := NewCmdVerify(&Globals{IO: io}, func(_ context.Context, o *VerifyOptions) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	return got, cmd.Execute()
}

// Flags that cannot all be honoured are usage errors naming them, never
// a run that silently drops one.
func TestVerifyContradictoryFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--targets", "t.csv", "--dir", "d"}, "--targets and --dir exclude each other"},
		{[]string{"--dir", "d", "--keytab", "k"}, "--principal, --keytab, --service and --server-keytab check one target"},
		{[]string{"--targets", "t.csv", "--server-keytab", "k"}, "--principal, --keytab, --service and --server-keytab check one target"},
		{[]string{"--dir", "d", "--spnego-url", "https://web1/"}, "--spnego-url checks one service"},
		{[]string{"--targets", "t.csv", "--secret-store", "file:///s", "--secret", "x"}, "--secret compares one target's keytab"},
		{[]string{"--secret", "x"}, "--secret-store and --secret go together"},
	} {
		_, err := parseVerify(t, tc.args...)
		var ee *fault.Error
		if !errors.As(err, &ee) || ee.Class != fault.Usage || !strings.Contains(err.Error(), tc.want) || ee.Hint == "" {
			t.Errorf("%v: err %v, want exit 2 with %q and a hint", tc.args, err, tc.want)
		}
	}
	if _, err := parseVerify(t, "--keytab", "k", "--spnego-url", "https://web1/"); err != nil {
		t.Errorf("--spnego-url for one target: %v", err)
	}
}
