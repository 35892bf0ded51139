package rotate

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
)

// A batch's targets share one clock sample per KDC: targets that start
// together wait for the one probe in flight, a failed probe is not kept,
// and a sample ClockSampleMaxAge old is taken again.
func TestClockCacheOneProbePerKDC(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := newClockCache(clock)
	probes := map[string]int{}
	fail := false
	fetch := func(_ context.Context, k kdcops.KDC) (*kdcops.ClockSample, error) {
		mu.Lock()
		defer mu.Unlock()
		probes[k.Entry]++
		if fail {
			return nil, errors.New("unreachable")
		}
		return &kdcops.ClockSample{KDC: k.Entry, Offset: time.Duration(probes[k.Entry]) * time.Second}, nil
	}
	kdc1, kdc2 := kdcops.KDC{Entry: "kdc1:88"}, kdcops.KDC{Entry: "kdc2:88"}
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := kdc1
			if i%2 == 1 {
				k = kdc2
			}
			s, err := c.probe("R", fetch)(ctx, k)
			if err != nil || s.KDC != k.Entry || s.Offset != time.Second {
				t.Errorf("target %d: %+v, %v", i, s, err)
			}
		}()
	}
	wg.Wait()
	if probes["kdc1:88"] != 1 || probes["kdc2:88"] != 1 {
		t.Fatalf("16 targets probed %v, want each KDC once", probes)
	}
	// Another realm's KDC of the same address is another clock.
	if _, err := c.probe("OTHER", fetch)(ctx, kdc1); err != nil || probes["kdc1:88"] != 2 {
		t.Fatalf("other realm: %v, probes %v", err, probes)
	}

	mu.Lock()
	now = now.Add(ClockSampleMaxAge - time.Second)
	mu.Unlock()
	if s, _ := c.probe("R", fetch)(ctx, kdc2); s.Offset != time.Second || probes["kdc2:88"] != 1 {
		t.Fatalf("a fresh sample was probed again: %+v, probes %v", s, probes)
	}

	mu.Lock()
	now, fail = now.Add(time.Second), true
	mu.Unlock()
	if _, err := c.probe("R", fetch)(ctx, kdc2); err == nil {
		t.Fatal("an expired sample was used instead of a new probe")
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	if s, err := c.probe("R", fetch)(ctx, kdc2); err != nil || s.Offset != 3*time.Second || probes["kdc2:88"] != 3 {
		t.Fatalf("after a failed probe: %+v, %v, probes %v", s, err, probes)
	}
}
