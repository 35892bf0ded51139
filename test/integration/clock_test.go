// Package integration runs krbops' domain packages against real servers
// started by the lab harness: an MIT KDC, a second KDC whose clock is
// shifted with libfaketime, and addresses that refuse or never answer.
package integration

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/lab"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/runbook/clock"
)

type clockLab struct {
	realm  *lab.Realm
	cfg    *kdcops.Config
	normal kdcops.KDC
	skewed kdcops.KDC
	down   kdcops.KDC
}

func startClockLab(t *testing.T) *clockLab {
	t.Helper()
	r := lab.ForTest(t, lab.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	skewed, err := r.StartKDC(ctx, lab.KDCOptions{FakeTime: "+420s"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.AddPrincipal(ctx, "host/it.krbops.test", ""); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "krb5.conf")
	down := r.DownAddr()
	if err := r.WriteKrb5Conf(conf, down, r.KDCs[0].Addr, skewed.Addr); err != nil {
		t.Fatal(err)
	}
	cfg, err := kdcops.LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	kdcs, err := cfg.ResolveKDCs(ctx, r.Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(kdcs) != 3 {
		t.Fatalf("resolved %d KDCs from %s, want 3", len(kdcs), conf)
	}
	return &clockLab{realm: r, cfg: cfg, down: kdcs[0], normal: kdcs[1], skewed: kdcs[2]}
}

func (l *clockLab) probe(t *testing.T, k kdcops.KDC, refine int) (*kdcops.ClockSample, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return kdcops.ProbeClock(ctx, l.cfg, k, l.realm.Name, "host/it.krbops.test",
		kdcops.ProbeOptions{Timeout: 3 * time.Second, Refine: refine, Target: kdcops.DefaultTarget})
}

// The refined estimate must contain the truth: the lab's KDCs share this
// host's clock, so the true offset is 0 for the normal KDC and exactly the
// libfaketime shift for the other.
func TestProbeClockBoundsContainTruth(t *testing.T) {
	l := startClockLab(t)
	for i := range 5 {
		s, err := l.probe(t, l.normal, kdcops.DefaultRefine)
		if err != nil {
			t.Fatal(err)
		}
		slack := 5 * time.Millisecond // scheduling noise on a loaded 2-core machine
		if d := s.Offset; d < -s.Uncertainty-slack || d > s.Uncertainty+slack {
			t.Errorf("run %d: normal KDC offset %v ± %v excludes 0", i, s.Offset, s.Uncertainty)
		}
		if s.Uncertainty > 150*time.Millisecond {
			t.Errorf("run %d: uncertainty %v after %d probes; want ≤ 150ms", i, s.Uncertainty, s.Probes)
		}
		if s.ErrorName != "KDC_ERR_PREAUTH_REQUIRED" || s.Transport != kdcops.UDP {
			t.Errorf("run %d: reply %s over %s, want KDC_ERR_PREAUTH_REQUIRED over udp", i, s.ErrorName, s.Transport)
		}
	}
	s, err := l.probe(t, l.skewed, kdcops.DefaultRefine)
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Offset - 420*time.Second; d < -s.Uncertainty-50*time.Millisecond || d > s.Uncertainty+50*time.Millisecond {
		t.Errorf("skewed KDC offset %v ± %v, want 420s", s.Offset, s.Uncertainty)
	}
}

// Regression: MIT returns susec as a per-second counter, so a burst of
// single probes drifts up to a second behind; the refined probe taken right
// after such a burst must still contain the truth.
func TestProbeClockAfterBurst(t *testing.T) {
	l := startClockLab(t)
	var worst time.Duration
	for range 200 {
		s, err := l.probe(t, l.normal, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Even a single probe's interval must contain the truth.
		if s.Offset-s.Uncertainty > 5*time.Millisecond || s.Offset+s.Uncertainty < -5*time.Millisecond {
			t.Fatalf("single probe %v ± %v excludes 0", s.Offset, s.Uncertainty)
		}
		worst = max(worst, s.Uncertainty)
	}
	t.Logf("widest single-probe interval in the burst: ±%v", worst)
	s, err := l.probe(t, l.normal, kdcops.DefaultRefine)
	if err != nil {
		t.Fatal(err)
	}
	if s.Offset < -s.Uncertainty-5*time.Millisecond || s.Offset > s.Uncertainty+5*time.Millisecond || s.Uncertainty > 150*time.Millisecond {
		t.Errorf("refined after burst: %v ± %v", s.Offset, s.Uncertainty)
	}
}

func TestProbeClockDownAndTCP(t *testing.T) {
	l := startClockLab(t)
	_, err := l.probe(t, l.down, 0)
	var ue *kdcops.UnreachableError
	if !errors.As(err, &ue) || len(ue.Tried) != 2 {
		t.Fatalf("down KDC: got %v, want UnreachableError after udp and tcp", err)
	}
	tcp := l.normal
	tcp.Transport, tcp.Forced = kdcops.TCP, true
	s, err := l.probe(t, tcp, kdcops.DefaultRefine)
	if err != nil {
		t.Fatal(err)
	}
	if s.Transport != kdcops.TCP {
		t.Errorf("transport %s, want tcp", s.Transport)
	}
}

// The whole clock runbook against the three KDCs: the down KDC is an error
// on its own line, the skewed one fails, the verdict fails, exit 1.
func TestClockRunbook(t *testing.T) {
	l := startClockLab(t)
	check := clock.Check{
		Config: l.cfg, Realm: l.realm.Name, Principal: "host/it.krbops.test",
		KDCs: []kdcops.KDC{l.down, l.normal, l.skewed}, Timeout: 3 * time.Second,
		MaxSkew: l.cfg.ClockSkew(), WarnSkew: time.Minute,
	}
	rep := runbook.Run(context.Background(), runbook.Runbook{Command: "clock-check", Steps: check.Steps()}, runbook.Options{})
	want := map[string]runbook.Status{
		clock.KDCOffsetID(l.down):   runbook.Error,
		clock.KDCOffsetID(l.normal): runbook.Pass,
		clock.KDCOffsetID(l.skewed): runbook.Fail,
		clock.StepKDCSpread:         runbook.Fail,
		clock.StepVerdict:           runbook.Fail,
	}
	for _, sr := range rep.Steps {
		if w, ok := want[sr.ID]; ok && sr.Status != w {
			t.Errorf("%s: %s (%s), want %s", sr.ID, sr.Status, sr.Message, w)
		}
	}
	if rep.Class != fault.CheckFailed {
		t.Errorf("class %s, want check-failed", rep.Class)
	}
}
