package klistlint_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/klistlint"
)

// keytabFile writes a version 2 keytab with one entry per (kvno, enctype)
// for host/a@EXAMPLE.COM, written at ts. Real MIT files are tested in
// test/integration; this is the runbook's wiring.
func keytabFile(t *testing.T, perm os.FileMode, ts time.Time, keys ...[2]int) string {
	t.Helper()
	b := []byte{5, 2}
	for _, k := range keys {
		var e []byte
		e = binary.BigEndian.AppendUint16(e, 2)
		for _, s := range []string{"EXAMPLE.COM", "host", "a"} {
			e = binary.BigEndian.AppendUint16(e, uint16(len(s)))
			e = append(e, s...)
		}
		e = binary.BigEndian.AppendUint32(e, 1)
		e = binary.BigEndian.AppendUint32(e, uint32(ts.Unix()))
		e = append(e, byte(k[0]))
		e = binary.BigEndian.AppendUint16(e, uint16(k[1]))
		e = binary.BigEndian.AppendUint16(e, 16)
		e = append(e, "0123456789abcdef"...)
		e = binary.BigEndian.AppendUint32(e, uint32(k[0]))
		b = binary.BigEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	p := filepath.Join(t.TempDir(), "test.keytab")
	if err := os.WriteFile(p, b, perm); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, perm)
	return p
}

func runLint(l klistlint.Check) *runbook.Report {
	return runbook.Run(context.Background(), runbook.Runbook{Command: "klist-lint", Steps: l.Steps()}, runbook.Options{})
}

func TestKlistLintKeytabSteps(t *testing.T) {
	now := time.Now()
	kt := keytabFile(t, 0o640, now.Add(-time.Hour), [2]int{1, 18}, [2]int{1, 23}, [2]int{2, 18}, [2]int{2, 23}, [2]int{3, 18}, [2]int{3, 23})
	missing := filepath.Join(t.TempDir(), "missing.cc")
	rep := runLint(klistlint.Check{CCache: missing, Keytabs: []string{kt}, Lint: kdcops.LintOptions{MaxAge: 24 * time.Hour}})

	var steps []string
	for _, sr := range rep.Steps {
		steps = append(steps, sr.ID+"="+string(sr.Status))
	}
	want := "ccache.read=fail ccache.tgt=skip keytab.read=fail keytab.rules=warn lint.summary=fail"
	if strings.Join(steps, " ") != want {
		t.Errorf("steps %v\nwant %s", steps, want)
	}
	if rep.Steps[2].Group != kt || rep.Steps[0].Group != missing || rep.Steps[4].Group != "" {
		t.Errorf("groups: %q %q %q", rep.Steps[0].Group, rep.Steps[2].Group, rep.Steps[4].Group)
	}
	var rules []string
	for _, f := range rep.Findings {
		rules = append(rules, f.Rule)
	}
	if strings.Join(rules, ",") != "CC001,KT002,KT006,KT009" || rep.Class != fault.CheckFailed {
		t.Errorf("findings %v exit %d", rules, rep.Class)
	}
	if msg := rep.Steps[0].Message; !strings.Contains(msg, "CC001: credential cache no such file") {
		t.Errorf("ccache.read message %q", msg)
	}

	metrics := map[string]float64{}
	zero := 0
	for _, m := range rep.Metrics {
		switch m.Name {
		case "krbops_lint_findings":
			if m.Value == 0 {
				zero++
			}
			metrics[m.Name+"/"+m.Labels["rule"]] = m.Value
		default:
			metrics[m.Name] = m.Value
		}
	}
	if metrics["krb5_keytab_kvno"] != 3 || metrics["krb5_keytab_newest_age_seconds"] < 3599 || metrics["krbops_lint_findings/KT006"] != 1 {
		t.Errorf("metrics %v", metrics)
	}
	if zero != len(kdcops.Rules)-4 {
		t.Errorf("%d zero-valued rule series, want one per rule without findings (%d)", zero, len(kdcops.Rules)-4)
	}
}

func TestKlistLintOnlyShrinksSummary(t *testing.T) {
	rs, _ := kdcops.NewRuleSet([]string{"KT002"}, nil)
	kt := keytabFile(t, 0o600, time.Now(), [2]int{1, 18})
	rep := runLint(klistlint.Check{Keytabs: []string{kt}, Lint: kdcops.LintOptions{Rules: rs}})
	n := 0
	for _, m := range rep.Metrics {
		if m.Name == "krbops_lint_findings" {
			n++
		}
	}
	if n != 1 || rep.Class != fault.OK {
		t.Errorf("%d krbops_lint_findings series, exit %d", n, rep.Class)
	}
}

func TestKlistLintDirStep(t *testing.T) {
	dir := t.TempDir()
	good := keytabFile(t, 0o600, time.Now(), [2]int{1, 18})
	data, _ := os.ReadFile(good)
	for _, name := range []string{"b.keytab", "a.keytab"} {
		os.WriteFile(filepath.Join(dir, name), data[:20], 0o600)
	}
	os.WriteFile(filepath.Join(dir, "ok.keytab"), data, 0o600)
	rep := runLint(klistlint.Check{Dirs: []string{dir}, Workers: 2})
	sr := rep.Steps[0]
	if sr.ID != klistlint.StepKeytabDir || sr.Group != dir || sr.Status != runbook.Fail || sr.Evidence["keytabs"] != 3 {
		t.Errorf("step %+v", sr)
	}
	if len(rep.Findings) != 2 || !strings.HasSuffix(rep.Findings[0].File, "a.keytab") {
		t.Errorf("findings not sorted by file: %+v", rep.Findings)
	}
}

// The online steps with a KDC client that answers from a script.
func TestKlistLintOnline(t *testing.T) {
	kt := keytabFile(t, 0o600, time.Now(), [2]int{1, 18})
	client := func(reply []byte, err error) func(*kdcops.CCache) *kdcops.OnlineClient {
		return func(*kdcops.CCache) *kdcops.OnlineClient {
			return &kdcops.OnlineClient{Config: &kdcops.Config{Config: config.New()},
				Exchange: func(context.Context, string, []byte) ([]byte, error) { return reply, err }}
		}
	}
	ke := messages.NewKRBError(types.PrincipalName{}, "EXAMPLE.COM", 6, "") // C_PRINCIPAL_UNKNOWN
	unknown, err := ke.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	rep := runLint(klistlint.Check{Keytabs: []string{kt}, Online: true, NewOnlineClient: client(unknown, nil)})
	if len(rep.Findings) != 1 || rep.Findings[0].Rule != "ON006" || rep.Steps[2].ID != klistlint.StepOnlineKVNO || rep.Class != fault.CheckFailed {
		t.Errorf("unknown principal: findings %+v exit %d", rep.Findings, rep.Class)
	}

	down := &kdcops.UnreachableError{KDC: "kdc1:88", Transport: kdcops.UDP, Err: errors.New("connection refused")}
	rep = runLint(klistlint.Check{Keytabs: []string{kt}, Online: true, NewOnlineClient: client(nil, down)})
	if sr := rep.Steps[2]; sr.Status != runbook.Error || !strings.Contains(sr.Hint, "no KDC answered") || rep.Class != fault.Unreachable {
		t.Errorf("unreachable: step %+v exit %d", sr, rep.Class)
	}
	if sr := rep.Steps[3]; sr.Status != runbook.Skip {
		t.Errorf("online.keys after an error: %+v", sr)
	}
}
